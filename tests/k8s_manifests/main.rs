//! The Kubernetes manifests, checked where no cluster runs: the invariants a schema cannot see
//! (autoscaling, selectors and ports, probes, images, network reachability, configuration the
//! binaries really accept), and each binary started exactly as its Deployment starts it.
//!
//! `make check-k8s` renders every kustomization to JSON (`BOOKMESH_K8S_RENDERED`), lists the
//! images `make images` builds (`BOOKMESH_IMAGES`), then runs these with `--ignored`; the
//! entrypoint test needs the local PostgreSQL, MariaDB, NATS and Redis (and, for the
//! notification service, the Python environment `make notification` prepares).
//!
//! `helpers.rs` reads the rendered manifests and models workloads and their environment; each
//! other file checks one concern.

mod autoscaling;
mod configuration;
mod databases;
mod entrypoints;
mod helpers;
mod identities;
mod images;
mod nats_broker;
mod nats_permissions;
mod network_policies;
mod pod_security;
mod probes_and_draining;
mod services_and_ports;

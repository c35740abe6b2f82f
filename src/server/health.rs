//! gRPC health and reflection, served beside every service's API.

use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::readiness::Readiness;

/// The health-service name that reports whether the process is alive (for liveness and
/// startup probes), as opposed to "" and the service's own name, which report readiness.
pub const LIVENESS_NAME: &str = "liveness";

/// Sets the initial statuses: NOT_SERVING for "" and `service` (nothing is ready yet),
/// SERVING for [`LIVENESS_NAME`].
pub(crate) async fn initial_statuses(reporter: &HealthReporter, service: &'static str) {
    // The reporter starts the overall status ("") as SERVING; nothing is ready yet.
    reporter
        .set_service_status("", ServingStatus::NotServing)
        .await;
    reporter
        .set_service_status(service, ServingStatus::NotServing)
        .await;
    // `liveness` answers SERVING for as long as the process serves at all: a liveness probe
    // must not restart a pod that is merely waiting for its database (restarting cannot help).
    reporter
        .set_service_status(LIVENESS_NAME, ServingStatus::Serving)
        .await;
}

/// Keeps the health status of "" and `service` in step with readiness, which turns false for
/// good once shutdown starts, so balancers and probes route new calls elsewhere while the
/// server drains.
pub(crate) async fn follow_readiness(
    reporter: HealthReporter,
    service: &'static str,
    readiness: Readiness,
) {
    let mut ready = readiness.serving_signal();
    loop {
        let status = if *ready.borrow_and_update() {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        reporter.set_service_status("", status).await;
        reporter.set_service_status(service, status).await;
        if ready.changed().await.is_err() {
            break;
        }
    }
}

/// Reflection that advertises only what this server serves, though every contract is
/// registered so that shared message types resolve.
pub(crate) fn reflection(services: &[&str]) -> tonic_reflection::server::Builder<'static> {
    services
        .iter()
        .fold(
            tonic_reflection::server::Builder::configure(),
            |builder, name| builder.with_service_name(*name),
        )
        .register_encoded_file_descriptor_set(crate::proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
        .with_service_name("grpc.health.v1.Health")
        .with_service_name("grpc.reflection.v1.ServerReflection")
        .with_service_name("grpc.reflection.v1alpha.ServerReflection")
}

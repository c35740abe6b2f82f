//! The replicas of one upstream, as discovery last found them: each with its connections,
//! its load (calls in flight) and whether it is ejected for a while after failing.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tonic::transport::{Channel, Endpoint};

use super::config::UpstreamConfig;
use crate::identity::transport::TlsConnector;

/// One replica: its connections and its current load.
pub(crate) struct Replica {
    pub(crate) address: SocketAddr,
    channels: Vec<Channel>,
    next_channel: AtomicUsize,
    in_flight: AtomicUsize,
    calls: AtomicU64,
    ejected_until: Mutex<Option<Instant>>,
}

impl Replica {
    /// A replica at `address`, dialled in plaintext or, with `tls`, over mTLS.
    pub(crate) fn new(
        address: SocketAddr,
        config: &UpstreamConfig,
        tls: Option<&TlsConnector>,
    ) -> Self {
        // `http` even over TLS: the connector does the TLS, and tonic (built with TLS support
        // of its own) refuses an `https` URI without its own TLS configuration.
        let scheme = "http";
        let channels = (0..config.connections_per_endpoint.max(1))
            .map(|_| {
                let endpoint = Endpoint::from(
                    http::Uri::builder()
                        .scheme(scheme)
                        .authority(address.to_string())
                        .path_and_query("/")
                        .build()
                        .unwrap_or_else(|_| http::Uri::from_static("http://127.0.0.1:0/")),
                )
                .connect_timeout(config.connect_timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .keep_alive_while_idle(true);
                match tls {
                    Some(connector) => endpoint.connect_with_connector_lazy(connector.clone()),
                    None => endpoint.connect_lazy(),
                }
            })
            .collect();
        Self {
            address,
            channels,
            next_channel: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            calls: AtomicU64::new(0),
            ejected_until: Mutex::new(None),
        }
    }

    /// One of the replica's connections, in turn.
    pub(crate) fn channel(&self) -> Channel {
        let index = self.next_channel.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        self.channels[index].clone()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub(crate) fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|until| now < until)
    }

    pub(crate) fn eject(&self, until: Instant) {
        *self
            .ejected_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(until);
    }

    #[cfg(test)]
    pub(crate) fn set_in_flight(&self, calls: usize) {
        self.in_flight.store(calls, Ordering::Relaxed);
    }
}

/// Counts a call as in flight on a replica for as long as it lives.
pub(crate) struct InFlight(Arc<Replica>);

impl InFlight {
    pub(crate) fn start(replica: Arc<Replica>) -> Self {
        replica.in_flight.fetch_add(1, Ordering::Relaxed);
        replica.calls.fetch_add(1, Ordering::Relaxed);
        Self(replica)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The current replicas of one upstream: written by discovery, read by the balancer.
pub(crate) struct ReplicaSet {
    config: UpstreamConfig,
    /// Dials replicas over mTLS (None: plaintext, the development mode).
    tls: Option<TlsConnector>,
    replicas: RwLock<Arc<Vec<Arc<Replica>>>>,
    /// Bumped after every resolution, so callers waiting for replicas can wake up.
    resolutions: watch::Sender<u64>,
    /// Asks discovery to resolve again now (after a failure), instead of at its next tick.
    refresh: Arc<Notify>,
}

impl ReplicaSet {
    pub(crate) fn new(config: UpstreamConfig, tls: Option<TlsConnector>) -> Self {
        Self {
            config,
            tls,
            replicas: RwLock::new(Arc::new(Vec::new())),
            resolutions: watch::Sender::new(0),
            refresh: Arc::new(Notify::new()),
        }
    }

    pub(crate) fn config(&self) -> &UpstreamConfig {
        &self.config
    }

    /// The replicas right now.
    pub(crate) fn snapshot(&self) -> Arc<Vec<Arc<Replica>>> {
        self.replicas
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn resolutions(&self) -> watch::Receiver<u64> {
        self.resolutions.subscribe()
    }

    pub(crate) fn request_refresh(&self) {
        self.refresh.notify_one();
    }

    pub(crate) fn refresh_signal(&self) -> Arc<Notify> {
        self.refresh.clone()
    }

    /// Replaces the set with `addresses`, keeping the replicas (and their connections) that
    /// stay; then wakes whoever waits for a resolution.
    pub(crate) fn update(&self, addresses: &BTreeSet<SocketAddr>) {
        {
            let mut replicas = self
                .replicas
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let current: BTreeSet<SocketAddr> = replicas.iter().map(|r| r.address).collect();
            if &current != addresses {
                let kept = replicas
                    .iter()
                    .filter(|r| addresses.contains(&r.address))
                    .cloned();
                let added = addresses.difference(&current).map(|address| {
                    Arc::new(Replica::new(*address, &self.config, self.tls.as_ref()))
                });
                let next: Vec<Arc<Replica>> = kept.chain(added).collect();
                tracing::info!(
                    upstream = %self.config.name,
                    replicas = ?addresses,
                    added = addresses.difference(&current).count(),
                    removed = current.difference(addresses).count(),
                    "replica set changed"
                );
                *replicas = Arc::new(next);
            }
        }
        self.resolved();
    }

    /// A resolution finished, whatever it found.
    pub(crate) fn resolved(&self) {
        self.resolutions.send_modify(|n| *n += 1);
    }

    /// Calls sent to each replica so far.
    pub(crate) fn calls_per_replica(&self) -> Vec<(SocketAddr, u64)> {
        self.snapshot()
            .iter()
            .map(|r| (r.address, r.calls.load(Ordering::Relaxed)))
            .collect()
    }
}

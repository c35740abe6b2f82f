//! Where an upstream's replicas are. A target is `host:port`; a host that is a name (such as a
//! headless Kubernetes Service, which resolves to one address per ready pod) is resolved again
//! periodically and after connection failures, so replicas that appear get traffic and
//! replicas that disappear stop getting it.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures::future::BoxFuture;

use super::replica::ReplicaSet;

/// One configured target: a name or address and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// A DNS name (resolved again and again) or an IP address.
    pub host: String,
    /// The port every address the host resolves to serves on.
    pub port: u16,
}

impl Target {
    /// Parses `http://host:port`, `host:port` or `[v6]:port`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url
            .strip_prefix("http://")
            .or_else(|| url.strip_prefix("dns:///"))
            .unwrap_or(url)
            .trim_end_matches('/');
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| format!("`{url}` has no port"))?;
        let port = port
            .parse()
            .map_err(|_| format!("`{url}` has an invalid port"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() {
            return Err(format!("`{url}` has no host"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

/// Turns targets into the addresses of the replicas behind them.
pub trait Resolve: Send + Sync + 'static {
    /// Every address behind `targets`; an error only when nothing could be resolved.
    fn resolve<'a>(
        &'a self,
        targets: &'a [Target],
    ) -> BoxFuture<'a, io::Result<BTreeSet<SocketAddr>>>;
}

/// The system resolver (`getaddrinfo`), with an optional hosts file read on every resolution
/// (`BOOKMESH_HOSTS_FILE`, `/etc/hosts` format, one name may map to several addresses), so
/// tests and demos can move names between loopback addresses without touching `/etc/hosts`.
#[derive(Debug, Clone, Default)]
pub struct SystemResolver {
    /// A file in `/etc/hosts` format consulted before the system resolver.
    pub hosts_file: Option<PathBuf>,
}

impl SystemResolver {
    /// The system resolver, with `BOOKMESH_HOSTS_FILE` if it is set.
    pub fn from_env() -> Self {
        Self {
            hosts_file: std::env::var_os("BOOKMESH_HOSTS_FILE").map(PathBuf::from),
        }
    }

    fn lookup_hosts_file(&self, name: &str) -> io::Result<Option<Vec<IpAddr>>> {
        let Some(path) = &self.hosts_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)?;
        let addresses: Vec<IpAddr> = text
            .lines()
            .map(|line| line.split('#').next().unwrap_or_default())
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                let address: IpAddr = words.next()?.parse().ok()?;
                words.any(|word| word == name).then_some(address)
            })
            .collect();
        Ok((!addresses.is_empty()).then_some(addresses))
    }
}

impl Resolve for SystemResolver {
    fn resolve<'a>(
        &'a self,
        targets: &'a [Target],
    ) -> BoxFuture<'a, io::Result<BTreeSet<SocketAddr>>> {
        Box::pin(async move {
            let mut found = BTreeSet::new();
            let mut last_error = None;
            for target in targets {
                if let Ok(ip) = target.host.parse::<IpAddr>() {
                    found.insert(SocketAddr::new(ip, target.port));
                    continue;
                }
                if let Some(ips) = self.lookup_hosts_file(&target.host)? {
                    found.extend(ips.into_iter().map(|ip| SocketAddr::new(ip, target.port)));
                    continue;
                }
                match tokio::net::lookup_host((target.host.as_str(), target.port)).await {
                    Ok(addresses) => found.extend(addresses),
                    Err(error) => last_error = Some(error),
                }
            }
            match (found.is_empty(), last_error) {
                (true, Some(error)) => Err(error),
                _ => Ok(found),
            }
        })
    }
}

/// A resolver whose answer the program sets: for tests of discovery.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    addresses: Arc<Mutex<BTreeSet<SocketAddr>>>,
}

impl StaticResolver {
    /// A resolver that answers `addresses` until [`StaticResolver::set`] changes them.
    pub fn new(addresses: impl IntoIterator<Item = SocketAddr>) -> Self {
        let resolver = Self::default();
        resolver.set(addresses);
        resolver
    }

    /// What every later resolution answers.
    pub fn set(&self, addresses: impl IntoIterator<Item = SocketAddr>) {
        *self
            .addresses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = addresses.into_iter().collect();
    }
}

impl Resolve for StaticResolver {
    fn resolve<'a>(
        &'a self,
        _targets: &'a [Target],
    ) -> BoxFuture<'a, io::Result<BTreeSet<SocketAddr>>> {
        let addresses = self
            .addresses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        Box::pin(async move { Ok(addresses) })
    }
}

/// Keeps `set` current until the upstream that owns it is dropped: resolves `targets` every
/// `resolve_interval`, and soon after a failure asks for it.
pub(crate) async fn discover(
    set: Weak<ReplicaSet>,
    targets: Vec<Target>,
    resolver: Arc<dyn Resolve>,
) {
    loop {
        let Some(strong) = set.upgrade() else {
            return;
        };
        match resolver.resolve(&targets).await {
            Ok(addresses) => strong.update(&addresses),
            Err(error) => {
                tracing::warn!(upstream = %strong.config().name, %error, "resolution failed; keeping the last known replicas");
                strong.resolved();
            }
        }
        let interval = strong.config().resolve_interval;
        let refresh = strong.refresh_signal();
        // Hold no strong reference while waiting, so dropping the upstream ends this task.
        drop(strong);
        tokio::select! {
            () = tokio::time::sleep(interval) => {},
            () = refresh.notified() => {
                // Coalesce bursts of failures into one resolution.
                tokio::time::sleep(Duration::from_millis(50)).await;
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert_eq!(
            Target::parse("http://member:50052"),
            Ok(Target {
                host: "member".into(),
                port: 50052
            })
        );
        assert_eq!(
            Target::parse("dns:///member.bookmesh.svc.cluster.local:50052").map(|t| t.host),
            Ok("member.bookmesh.svc.cluster.local".into())
        );
        assert_eq!(Target::parse("[::1]:9").map(|t| t.host), Ok("::1".into()));
        assert!(Target::parse("http://member").is_err());
        assert!(Target::parse(":50052").is_err());
    }

    #[tokio::test]
    async fn the_hosts_file_maps_one_name_to_many_addresses_and_is_reread() {
        let dir = tempfile_dir();
        let path = dir.join("hosts");
        std::fs::write(
            &path,
            "127.0.0.2 member # replica 1\n127.0.0.3 member other\n",
        )
        .expect("write");
        let resolver = SystemResolver {
            hosts_file: Some(path.clone()),
        };
        let targets = [Target::parse("member:50052").expect("target")];
        let found = resolver.resolve(&targets).await.expect("resolve");
        assert_eq!(found.len(), 2);
        std::fs::write(&path, "127.0.0.4 member\n").expect("rewrite");
        let found = resolver.resolve(&targets).await.expect("resolve");
        assert_eq!(
            found.into_iter().collect::<Vec<_>>(),
            vec!["127.0.0.4:50052".parse::<SocketAddr>().expect("addr")]
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("bookmesh-hosts-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        dir
    }
}

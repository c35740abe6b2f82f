//! SPIFFE IDs: the names workloads prove with their certificates.

use std::fmt;

/// A workload's identity, `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`, the
/// shape Istio and Linkerd use and cert-manager's SPIFFE CSI driver issues.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

impl SpiffeId {
    /// The identity of `service_account` in `namespace` of `trust_domain`.
    pub fn new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> Self {
        Self {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        }
    }

    /// Parses `spiffe://td/ns/<namespace>/sa/<service account>`; anything else is `None`.
    pub fn parse(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix("spiffe://")?;
        let mut parts = rest.split('/');
        let trust_domain = parts.next()?;
        let (ns, namespace, sa, service_account) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || ns != "ns" || sa != "sa" {
            return None;
        }
        let valid = |part: &str| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        (valid(trust_domain) && valid(namespace) && valid(service_account))
            .then(|| Self::new(trust_domain, namespace, service_account))
    }

    /// The trust domain (`bookmesh.local`).
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The namespace (`bookmesh`).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The service account: the workload's name in policies (`rental`).
    pub fn service_account(&self) -> &str {
        &self.service_account
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_the_kubernetes_shape_only() {
        let id = SpiffeId::parse("spiffe://bookmesh.local/ns/bookmesh/sa/rental").expect("valid");
        assert_eq!(id.service_account(), "rental");
        assert_eq!(
            id.to_string(),
            "spiffe://bookmesh.local/ns/bookmesh/sa/rental"
        );
        for bad in [
            "https://bookmesh.local/ns/bookmesh/sa/rental",
            "spiffe://bookmesh.local/ns/bookmesh/rental",
            "spiffe://bookmesh.local/ns/bookmesh/sa/rental/x",
            "spiffe://bookmesh.local/ns//sa/rental",
            "spiffe://bookmesh.local/ns/bookmesh/sa/ren tal",
        ] {
            assert_eq!(SpiffeId::parse(bad), None, "{bad}");
        }
    }
}

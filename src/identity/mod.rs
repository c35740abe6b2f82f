//! Workload identity: who this process is (a SPIFFE ID, proven by an X.509 certificate), the
//! mTLS every hop runs on, and the local certificate authority `make run` creates.
//!
//! - [`spiffe`]: the IDs.
//! - [`pki`]: issuing certificates (the local CA, and tests' expired or foreign ones).
//! - [`credentials`]: a workload's certificate, key and trusted authorities, reloaded when
//!   their files change.
//! - [`tls`]: the rustls configurations, and the SPIFFE ID read off a peer's certificate.
//! - [`transport`]: TLS on the wire for servers and clients.

pub mod credentials;
pub mod pki;
pub mod spiffe;
pub mod tls;
pub mod transport;

use std::path::PathBuf;
use std::sync::Arc;

pub use credentials::{CredentialFiles, Credentials, CredentialsError};
pub use spiffe::SpiffeId;

use crate::config::IdentityArgs;

/// This process's identity, and how it talks: mTLS with its credentials, or (development
/// only) plaintext with none. Cheap to clone.
#[derive(Clone)]
pub struct Identity {
    id: SpiffeId,
    credentials: Option<Arc<Credentials>>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = if self.is_plaintext() {
            "plaintext"
        } else {
            "mTLS"
        };
        write!(f, "{} ({mode})", self.id)
    }
}

impl Identity {
    /// The identity of `workload` from `args`: its credentials from the configured files (by
    /// default `<pki-dir>/<workload>.crt`, `.key` and `ca.crt`), watched for rotation; or, with
    /// `--insecure-plaintext`, none (logged as a warning). Call inside a Tokio runtime.
    pub fn from_args(args: &IdentityArgs, workload: &str) -> Result<Self, CredentialsError> {
        let id = SpiffeId::new(&args.trust_domain, &args.namespace, workload);
        if args.insecure_plaintext {
            tracing::warn!(
                %id,
                "INSECURE: plaintext without identities (--insecure-plaintext); anyone who reaches the port can call anything. Development only."
            );
            return Ok(Self {
                id,
                credentials: None,
            });
        }
        let files = args.credential_files(workload);
        let credentials = Credentials::load(id.clone(), files)?;
        credentials.watch(args.tls_reload_interval);
        Ok(Self {
            id,
            credentials: Some(credentials),
        })
    }

    /// An identity with these credentials (tests).
    pub fn with_credentials(credentials: Arc<Credentials>) -> Self {
        Self {
            id: credentials.identity().clone(),
            credentials: Some(credentials),
        }
    }

    /// A plaintext identity without credentials (tests of the insecure mode).
    pub fn insecure(id: SpiffeId) -> Self {
        Self {
            id,
            credentials: None,
        }
    }

    /// Who this process is.
    pub fn id(&self) -> &SpiffeId {
        &self.id
    }

    /// Whether it talks plaintext, without identities.
    pub fn is_plaintext(&self) -> bool {
        self.credentials.is_none()
    }

    /// The identity `workload` has in this process's trust domain and namespace.
    pub fn peer(&self, workload: &str) -> SpiffeId {
        SpiffeId::new(self.id.trust_domain(), self.id.namespace(), workload)
    }

    /// The credentials, unless plaintext.
    pub fn credentials(&self) -> Option<&Arc<Credentials>> {
        self.credentials.as_ref()
    }

    /// One connection to `url` (`http://host:port`) as this identity: over mTLS checking the
    /// server is `peer`, or plaintext. For tools and probes that make a few calls; services
    /// call each other through `client::Upstream`.
    pub async fn channel(
        &self,
        url: &str,
        peer: &str,
    ) -> Result<tonic::transport::Channel, tower::BoxError> {
        let endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())?;
        Ok(match &self.credentials {
            Some(credentials) => {
                let config = tls::client_config(credentials, self.peer(peer))?;
                endpoint
                    .connect_with_connector(transport::TlsConnector::new(config))
                    .await?
            }
            None => endpoint.connect().await?,
        })
    }
}

impl IdentityArgs {
    /// Where `workload`'s credentials are: the files named by flags, or the PKI folder's.
    pub fn credential_files(&self, workload: &str) -> CredentialFiles {
        let in_pki = |name: String| -> PathBuf { self.pki_dir.join(name) };
        CredentialFiles {
            certificate: self
                .tls_cert
                .clone()
                .unwrap_or_else(|| in_pki(format!("{workload}.crt"))),
            key: self
                .tls_key
                .clone()
                .unwrap_or_else(|| in_pki(format!("{workload}.key"))),
            authorities: self
                .tls_ca
                .clone()
                .unwrap_or_else(|| in_pki("ca.crt".into())),
        }
    }
}

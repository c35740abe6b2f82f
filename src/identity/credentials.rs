//! A workload's credentials as rustls uses them: its certificate and key, and the authorities
//! it trusts, read from PEM files and read again when the files change (cert-manager rotates
//! them in place), without a restart and without dropping connections.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls::sign::CertifiedKey;

use super::spiffe::SpiffeId;

/// Why credentials could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: std::io::Error,
    },
    /// A file does not hold what it should.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// Where a workload's credentials are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialFiles {
    /// The workload's certificate chain (PEM), leaf first.
    pub certificate: PathBuf,
    /// Its private key (PEM, PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// The authorities whose certificates peers must carry (PEM, one or more).
    pub authorities: PathBuf,
}

/// What is loaded from the files at one moment.
struct Loaded {
    key: Arc<CertifiedKey>,
    roots: Arc<RootCertStore>,
    /// Verifies clients' certificates: optional (users come with tokens), but a certificate
    /// that is presented must chain to one of `roots` and be valid now.
    client_verifier: Arc<dyn ClientCertVerifier>,
    modified: [Option<SystemTime>; 3],
}

/// A workload's credentials, current as of the last change of their files.
pub struct Credentials {
    identity: SpiffeId,
    files: CredentialFiles,
    loaded: RwLock<Arc<Loaded>>,
}

impl Credentials {
    /// Loads `files`, the credentials of `identity`.
    pub fn load(identity: SpiffeId, files: CredentialFiles) -> Result<Arc<Self>, CredentialsError> {
        let loaded = load(&files)?;
        Ok(Arc::new(Self {
            identity,
            files,
            loaded: RwLock::new(Arc::new(loaded)),
        }))
    }

    /// Whom these credentials prove.
    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }

    /// The certificate and key to present now.
    pub(crate) fn certified_key(&self) -> Arc<CertifiedKey> {
        self.current().key.clone()
    }

    /// The authorities trusted now.
    pub(crate) fn roots(&self) -> Arc<RootCertStore> {
        self.current().roots.clone()
    }

    /// The verifier of client certificates now.
    pub(crate) fn client_verifier(&self) -> Arc<dyn ClientCertVerifier> {
        self.current().client_verifier.clone()
    }

    fn current(&self) -> Arc<Loaded> {
        self.loaded
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads the files again if one of them changed since the last load. A change that does
    /// not load (a half-written rotation, a key that does not match) keeps the old credentials
    /// and is logged; the next check tries again.
    pub fn reload_if_changed(&self) -> bool {
        let stamps = modified(&self.files);
        if stamps == self.current().modified {
            return false;
        }
        match load(&self.files) {
            Ok(loaded) => {
                *self
                    .loaded
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(loaded);
                tracing::info!(identity = %self.identity, "credentials reloaded");
                true
            }
            Err(error) => {
                tracing::warn!(identity = %self.identity, %error, "changed credentials do not load; keeping the current ones");
                false
            }
        }
    }

    /// Checks the files every `interval` for as long as the credentials are in use.
    pub fn watch(self: &Arc<Self>, interval: Duration) {
        let weak: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(interval).await;
                let Some(credentials) = weak.upgrade() else {
                    return;
                };
                credentials.reload_if_changed();
            }
        });
    }
}

fn modified(files: &CredentialFiles) -> [Option<SystemTime>; 3] {
    let stamp = |path: &Path| std::fs::metadata(path).and_then(|m| m.modified()).ok();
    [
        stamp(&files.certificate),
        stamp(&files.key),
        stamp(&files.authorities),
    ]
}

fn load(files: &CredentialFiles) -> Result<Loaded, CredentialsError> {
    // Stamps first: a change during the load is seen at the next check.
    let modified = modified(files);
    let invalid = |path: &Path, reason: String| CredentialsError::Invalid {
        path: path.to_owned(),
        reason,
    };
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| CredentialsError::Io {
            path: path.to_owned(),
            source,
        })
    };
    let chain = CertificateDer::pem_slice_iter(&read(&files.certificate)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&files.certificate, e.to_string()))?;
    if chain.is_empty() {
        return Err(invalid(&files.certificate, "no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?)
        .map_err(|e| invalid(&files.key, e.to_string()))?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| invalid(&files.key, e.to_string()))?;
    let key = CertifiedKey::new(chain, signing_key);
    key.keys_match()
        .map_err(|e| invalid(&files.key, format!("does not match the certificate: {e}")))?;
    let mut roots = RootCertStore::empty();
    for authority in CertificateDer::pem_slice_iter(&read(&files.authorities)?) {
        let authority = authority.map_err(|e| invalid(&files.authorities, e.to_string()))?;
        roots
            .add(authority)
            .map_err(|e| invalid(&files.authorities, e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(invalid(&files.authorities, "no certificate".into()));
    }
    let roots = Arc::new(roots);
    let client_verifier = WebPkiClientVerifier::builder_with_provider(
        roots.clone(),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| invalid(&files.authorities, e.to_string()))?;
    Ok(Loaded {
        key: Arc::new(key),
        roots,
        client_verifier,
        modified,
    })
}

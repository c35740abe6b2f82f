//! A certificate authority for workloads: the local one `make run` creates under `data/pki/`
//! (cert-manager plays this part in Kubernetes), and the certificates tests need (expired, from
//! another authority).
//!
//! Files in a PKI folder: `ca.crt` and `ca.key`; per workload `<name>.crt` and `<name>.key`;
//! the development token keys `jwt.key` and `jwt.pub`. Keys are written readable by the owner
//! only.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use super::spiffe::SpiffeId;

/// Why a PKI operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
    /// Making or parsing a key or certificate failed.
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
}

/// How long the local authority's own certificate is valid.
const CA_VALIDITY: Duration = Duration::days(3650);
/// How long a workload certificate is valid; `ensure_local` renews it within the last tenth.
pub const WORKLOAD_VALIDITY: Duration = Duration::days(90);

/// A certificate authority: its certificate and signing key.
pub struct Authority {
    params: CertificateParams,
    key: KeyPair,
    certificate_pem: String,
}

/// A certificate and its private key, PEM-encoded.
pub struct Issued {
    /// The certificate (`-----BEGIN CERTIFICATE-----`).
    pub certificate_pem: String,
    /// Its PKCS#8 private key.
    pub key_pem: String,
}

impl Authority {
    /// A new authority for `trust_domain`, valid from now.
    pub fn generate(trust_domain: &str) -> Result<Self, PkiError> {
        let key = KeyPair::generate()?;
        let params = ca_params(trust_domain, OffsetDateTime::now_utc());
        let certificate_pem = params.self_signed(&key)?.pem();
        Ok(Self {
            params,
            key,
            certificate_pem,
        })
    }

    /// The authority saved in `dir` (`ca.crt`, `ca.key`).
    pub fn load(dir: &Path, trust_domain: &str) -> Result<Self, PkiError> {
        let key = KeyPair::from_pem(&read(&dir.join("ca.key"))?)?;
        let certificate_pem = read(&dir.join("ca.crt"))?;
        // Signing needs the authority's name and key, which the saved certificate was made
        // from; its dates do not matter to what it signs.
        let params = ca_params(trust_domain, OffsetDateTime::now_utc());
        Ok(Self {
            params,
            key,
            certificate_pem,
        })
    }

    /// Writes `ca.crt` and `ca.key` to `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), PkiError> {
        write(&dir.join("ca.crt"), &self.certificate_pem, false)?;
        write(&dir.join("ca.key"), &self.key.serialize_pem(), true)
    }

    /// The authority's certificate, what peers trust.
    pub fn certificate_pem(&self) -> &str {
        &self.certificate_pem
    }

    /// A certificate for `id`, valid from `not_before` for `validity`: its URI SAN is the
    /// SPIFFE ID, and `localhost`, the workload's name, its Kubernetes Service names and the
    /// loopback addresses are its DNS and IP SANs (so grpcurl and browsers can check the
    /// server by the name they dialled).
    pub fn issue(
        &self,
        id: &SpiffeId,
        not_before: OffsetDateTime,
        validity: Duration,
    ) -> Result<Issued, PkiError> {
        let workload = id.service_account();
        let dns = [
            "localhost".to_owned(),
            workload.to_owned(),
            format!("{workload}.{}", id.namespace()),
            format!("{workload}.{}.svc", id.namespace()),
            format!("{workload}.{}.svc.cluster.local", id.namespace()),
        ];
        let mut params = CertificateParams::new(dns.to_vec())?;
        params
            .distinguished_name
            .push(DnType::CommonName, workload.to_owned());
        params
            .subject_alt_names
            .push(SanType::URI(id.to_string().try_into()?));
        params.subject_alt_names.extend([
            SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ]);
        // Every workload both serves and calls.
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.not_before = not_before;
        params.not_after = not_before + validity;
        let key = KeyPair::generate()?;
        let issuer = Issuer::from_params(&self.params, &self.key);
        let certificate = params.signed_by(&key, &issuer)?;
        Ok(Issued {
            certificate_pem: certificate.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

fn ca_params(trust_domain: &str, now: OffsetDateTime) -> CertificateParams {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, format!("bookmesh CA {trust_domain}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = now - Duration::minutes(5);
    params.not_after = now + CA_VALIDITY;
    params
}

/// Makes `dir` a working local PKI for `workloads`: creates the authority on first use, issues
/// each workload a certificate it lacks or whose last tenth of validity began, and creates the
/// development token keys. Files that are still good are kept, so running it at every start
/// is cheap and peers keep trusting the same authority.
pub fn ensure_local(
    dir: &Path,
    trust_domain: &str,
    namespace: &str,
    workloads: &[&str],
) -> Result<(), PkiError> {
    std::fs::create_dir_all(dir).map_err(|source| PkiError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let authority = if dir.join("ca.crt").exists() && dir.join("ca.key").exists() {
        Authority::load(dir, trust_domain)?
    } else {
        let authority = Authority::generate(trust_domain)?;
        authority.save(dir)?;
        tracing::info!(dir = %dir.display(), "created a local certificate authority");
        authority
    };
    let now = OffsetDateTime::now_utc();
    for workload in workloads {
        let certificate = dir.join(format!("{workload}.crt"));
        if expires_after(&certificate, now + WORKLOAD_VALIDITY / 10) {
            continue;
        }
        let id = SpiffeId::new(trust_domain, namespace, *workload);
        let issued = authority.issue(&id, now - Duration::minutes(5), WORKLOAD_VALIDITY)?;
        write(&dir.join(format!("{workload}.key")), &issued.key_pem, true)?;
        write(&certificate, &issued.certificate_pem, false)?;
        tracing::info!(%id, "issued a workload certificate");
    }
    ensure_token_keys(dir)
}

/// Creates the development token signing key (`jwt.key`, Ed25519) and its public half
/// (`jwt.pub`) unless both exist.
pub fn ensure_token_keys(dir: &Path) -> Result<(), PkiError> {
    let (private, public) = (dir.join("jwt.key"), dir.join("jwt.pub"));
    if private.exists() && public.exists() {
        return Ok(());
    }
    let key = KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    write(&private, &key.serialize_pem(), true)?;
    write(&public, &key.public_key_pem(), false)
}

/// Whether the certificate file exists and is valid past `when`.
fn expires_after(path: &Path, when: OffsetDateTime) -> bool {
    let Ok(pem) = std::fs::read(path) else {
        return false;
    };
    let Ok((_, pem)) = x509_parser::pem::parse_x509_pem(&pem) else {
        return false;
    };
    let Ok(certificate) = pem.parse_x509() else {
        return false;
    };
    certificate.validity().not_after.timestamp() > when.unix_timestamp()
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Writes `text` to `path` through a temporary file and a rename, so a service reloading the
/// file never reads half of it; `private` files are readable by the owner only.
fn write(path: &Path, text: &str, private: bool) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_owned(),
        source,
    };
    let temporary = path.with_extension("tmp");
    {
        use std::io::Write as _;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(&temporary).map_err(io)?;
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    std::fs::rename(&temporary, path).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_pki_is_created_once_and_kept() {
        let dir = std::env::temp_dir().join(format!("bookmesh-pki-{}", uuid::Uuid::now_v7()));
        ensure_local(&dir, "bookmesh.local", "bookmesh", &["book", "rental"]).expect("pki");
        let ca = std::fs::read(dir.join("ca.crt")).expect("ca");
        let book = std::fs::read(dir.join("book.crt")).expect("book");
        ensure_local(
            &dir,
            "bookmesh.local",
            "bookmesh",
            &["book", "rental", "member"],
        )
        .expect("again");
        assert_eq!(
            std::fs::read(dir.join("ca.crt")).expect("ca"),
            ca,
            "same authority"
        );
        assert_eq!(
            std::fs::read(dir.join("book.crt")).expect("book"),
            book,
            "kept"
        );
        assert!(dir.join("member.key").exists(), "a new workload is issued");
        assert!(dir.join("jwt.pub").exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.join("book.key"))
                .expect("key")
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "private keys are the owner's only");
        }
        let (_, pem) = x509_parser::pem::parse_x509_pem(&book).expect("pem");
        let certificate = pem.parse_x509().expect("x509");
        let uris: Vec<String> = certificate
            .subject_alternative_name()
            .expect("extension")
            .expect("present")
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::URI(uri) => Some((*uri).to_owned()),
                _ => None,
            })
            .collect();
        assert_eq!(uris, ["spiffe://bookmesh.local/ns/bookmesh/sa/book"]);
        let _ = std::fs::remove_dir_all(dir);
    }
}

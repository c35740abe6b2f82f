//! mTLS with workload identities: the rustls configurations a server and a client use, and
//! the SPIFFE ID read off a peer's certificate.
//!
//! Names in certificates are not what a caller checks: it dials an IP address discovery
//! found, and asks instead that the server's certificate chain to a trusted authority and
//! carry the expected SPIFFE ID (as Istio and Linkerd do). Servers ask for client
//! certificates but do not require them: workloads present one, users come with a token, and
//! the authorization layer decides.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ParsedCertificate, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{
    ClientConfig, DigitallySignedStruct, DistinguishedName, ServerConfig, SignatureScheme,
};

use super::credentials::Credentials;
use super::spiffe::SpiffeId;

/// HTTP/2 only: gRPC.
const ALPN_H2: &[u8] = b"h2";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server side of mTLS for `credentials`: its certificate (as of each handshake), and
/// client certificates checked against its authorities when presented.
pub fn server_config(credentials: &Arc<Credentials>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(CurrentClientVerifier(credentials.clone())))
        .with_cert_resolver(Arc::new(CurrentCertificate(credentials.clone())));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// The client side of mTLS for `credentials`, calling a server that must prove `expected`.
pub fn client_config(
    credentials: &Arc<Credentials>,
    expected: SpiffeId,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let config = client_checking(credentials, expected)?
        .with_client_cert_resolver(Arc::new(CurrentCertificate(credentials.clone())));
    Ok(with_h2(config))
}

/// A client that presents no certificate (a user's tool, which brings a token instead) but
/// still checks that the server is `expected`, against the authorities of `trust`.
pub fn anonymous_client_config(
    trust: &Arc<Credentials>,
    expected: SpiffeId,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    Ok(with_h2(
        client_checking(trust, expected)?.with_no_client_auth(),
    ))
}

/// A client configuration that accepts only the server `expected`, vouched for by the
/// authorities of `trust`; what it presents itself is the caller's to add.
fn client_checking(
    trust: &Arc<Credentials>,
    expected: SpiffeId,
) -> Result<rustls::ConfigBuilder<ClientConfig, rustls::client::WantsClientCert>, rustls::Error> {
    let provider = provider();
    Ok(ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ExpectedServer {
            credentials: trust.clone(),
            expected,
            provider,
        })))
}

fn with_h2(mut config: ClientConfig) -> Arc<ClientConfig> {
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Arc::new(config)
}

/// The SPIFFE ID in a certificate's URI SANs, if it has exactly one.
pub fn spiffe_id_of(certificate: &CertificateDer<'_>) -> Option<SpiffeId> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate).ok()?;
    let names = parsed.subject_alternative_name().ok()??;
    let mut ids = names
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) if uri.starts_with("spiffe://") => {
                Some(SpiffeId::parse(uri))
            }
            _ => None,
        });
    let id = ids.next()??;
    // SPIFFE allows one ID per certificate; two would make "who is this" ambiguous.
    ids.next().is_none().then_some(id)
}

/// Presents the certificate the credentials hold at the time of each handshake.
struct CurrentCertificate(Arc<Credentials>);

impl fmt::Debug for CurrentCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CurrentCertificate({})", self.0.identity())
    }
}

impl ResolvesServerCert for CurrentCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.certified_key())
    }
}

impl ResolvesClientCert for CurrentCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.certified_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Checks client certificates against the authorities trusted at the time of the handshake.
struct CurrentClientVerifier(Arc<Credentials>);

impl fmt::Debug for CurrentClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CurrentClientVerifier({})", self.0.identity())
    }
}

impl ClientCertVerifier for CurrentClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints are optional; workloads present their one certificate anyway.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .client_verifier()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .client_verifier()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0
            .client_verifier()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.client_verifier().supported_verify_schemes()
    }
}

/// Accepts a server whose certificate chains to a trusted authority and names the expected
/// workload, whatever address was dialled.
struct ExpectedServer {
    credentials: Arc<Credentials>,
    expected: SpiffeId,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for ExpectedServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExpectedServer({})", self.expected)
    }
}

impl ServerCertVerifier for ExpectedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.credentials.roots(),
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        match spiffe_id_of(end_entity) {
            Some(id) if id == self.expected => Ok(ServerCertVerified::assertion()),
            found => Err(rustls::Error::General(format!(
                "the server is {}, not {}",
                found.map_or_else(|| "not a SPIFFE workload".to_owned(), |id| id.to_string()),
                self.expected
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

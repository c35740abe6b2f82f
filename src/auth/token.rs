//! End-user tokens: JWT bearer tokens (`authorization: Bearer …`) whose subject and roles
//! are claims, checked for signature, issuer, audience and expiry.
//!
//! Keys come from a PEM public key or a JWKS document in a file, or from a JWKS URL (an
//! identity provider's `jwks_uri`: Keycloak, Dex…) fetched again periodically. `make run` signs
//! development tokens with `data/pki/jwt.key` ([`DevTokenIssuer`]).

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// What a valid token says about its bearer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// Who (`sub`): a member id, or a staff account.
    pub subject: String,
    /// What they may do (`roles`): `member`, `librarian`, `admin`.
    pub roles: Vec<String>,
}

/// Why a token was refused; the reason travels in the answer's `google.rpc.ErrorInfo`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    /// Not `Bearer <JWT>`, or not a JWT.
    Malformed,
    /// Past its `exp` (or before its `nbf`).
    Expired,
    /// Signed by none of the trusted keys, or with an algorithm they do not use.
    BadSignature,
    /// Another issuer's.
    WrongIssuer,
    /// Meant for another audience.
    WrongAudience,
}

impl TokenRefusal {
    /// The `ErrorInfo.reason`.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "TOKEN_MALFORMED",
            Self::Expired => "TOKEN_EXPIRED",
            Self::BadSignature => "TOKEN_SIGNATURE_INVALID",
            Self::WrongIssuer => "TOKEN_ISSUER_INVALID",
            Self::WrongAudience => "TOKEN_AUDIENCE_INVALID",
        }
    }
}

/// Why the verifier could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The key file could not be read.
    #[error("{0}: {1}")]
    Io(String, std::io::Error),
    /// It holds no usable key.
    #[error("{0}: {1}")]
    Invalid(String, String),
    /// The JWKS URL could not be fetched.
    #[error("{0}: {1}")]
    Fetch(String, String),
}

#[derive(Debug, Serialize, Deserialize)]
struct RawClaims {
    sub: String,
    #[serde(default)]
    roles: Vec<String>,
    iss: String,
    aud: String,
    exp: u64,
    iat: u64,
}

/// One trusted key.
#[derive(Clone)]
struct Key {
    id: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Checks tokens against the trusted keys, issuer and audience.
pub struct TokenVerifier {
    keys: RwLock<Arc<Vec<Key>>>,
    issuer: String,
    audience: String,
    /// Tokens already verified, with their claims and expiry: a client sends the same token
    /// on every call, and a signature check costs more than the call. Keyed by the whole
    /// token (no hash that a forgery could collide with), bounded, emptied when keys change.
    verified: std::sync::Mutex<std::collections::HashMap<String, (Claims, u64)>>,
}

/// Tokens remembered as verified; beyond this, the oldest are forgotten first.
const VERIFIED_TOKENS: usize = 1024;

/// Clock skew tolerated between issuer and server.
const LEEWAY_SECONDS: u64 = 30;
/// Longest token accepted: `make token` is for a laptop, and a token is not a session.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

impl TokenVerifier {
    /// A verifier trusting the keys in `file` (a PEM public key or a JWKS document).
    pub fn from_file(file: &Path, issuer: &str, audience: &str) -> Result<Self, KeysError> {
        let name = file.display().to_string();
        let text = std::fs::read(file).map_err(|e| KeysError::Io(name.clone(), e))?;
        let keys = parse_keys(&text).map_err(|e| KeysError::Invalid(name, e))?;
        Ok(Self::with_keys(keys, issuer, audience))
    }

    /// A verifier trusting the keys at `url` (a JWKS URL), fetched now and every `refresh`
    /// while the verifier lives.
    pub async fn from_jwks_url(
        url: &str,
        refresh: Duration,
        issuer: &str,
        audience: &str,
    ) -> Result<Arc<Self>, KeysError> {
        let keys = fetch_jwks(url).await?;
        let verifier = Arc::new(Self::with_keys(keys, issuer, audience));
        let (weak, url) = (Arc::downgrade(&verifier), url.to_owned());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(refresh).await;
                let Some(verifier) = weak.upgrade() else {
                    return;
                };
                match fetch_jwks(&url).await {
                    Ok(keys) => {
                        *verifier
                            .keys
                            .write()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(keys);
                        // A key the provider withdrew must not keep its tokens valid.
                        verifier.forget_verified();
                    }
                    Err(error) => {
                        tracing::warn!(%error, "token keys not refreshed; keeping the last ones");
                    }
                }
            }
        });
        Ok(verifier)
    }

    fn with_keys(keys: Vec<Key>, issuer: &str, audience: &str) -> Self {
        Self {
            keys: RwLock::new(Arc::new(keys)),
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            verified: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    fn verified(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, (Claims, u64)>> {
        self.verified
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn forget_verified(&self) {
        self.verified().clear();
    }

    /// The claims of a token verified before and not expired since.
    fn remembered(&self, token: &str, now: u64) -> Option<Claims> {
        let verified = self.verified();
        let (claims, expires) = verified.get(token)?;
        (now <= expires.saturating_add(LEEWAY_SECONDS)).then(|| claims.clone())
    }

    /// Remembers `token`, verified with `keys`, unless the keys changed meanwhile: a refresh
    /// clears the cache after replacing the keys, so an entry made with the old keys must not
    /// slip in after that clear.
    fn remember(&self, token: &str, claims: &Claims, expires: u64, now: u64, keys: &Arc<Vec<Key>>) {
        let mut verified = self.verified();
        let current = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if !Arc::ptr_eq(&current, keys) {
            return;
        }
        if verified.len() >= VERIFIED_TOKENS {
            // Expired ones first; if none, all of them: the cache refills from the next calls.
            verified.retain(|_, (_, expires)| now <= expires.saturating_add(LEEWAY_SECONDS));
            if verified.len() >= VERIFIED_TOKENS {
                verified.clear();
            }
        }
        verified.insert(token.to_owned(), (claims.clone(), expires));
    }

    /// The claims of `authorization` (`Bearer <JWT>`), or why it is refused.
    pub fn verify(&self, authorization: &str) -> Result<Claims, TokenRefusal> {
        let token = authorization
            .strip_prefix("Bearer ")
            .or_else(|| authorization.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty() && token.len() <= MAX_TOKEN_BYTES)
            .ok_or(TokenRefusal::Malformed)?;
        let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default();
        if let Some(claims) = self.remembered(token, now) {
            return Ok(claims);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenRefusal::Malformed)?;
        let keys = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let candidates = keys.iter().filter(|key| {
            key.algorithm == header.alg
                && (header.kid.is_none() || key.id.is_none() || key.id == header.kid)
        });
        let mut refusal = TokenRefusal::BadSignature;
        for key in candidates {
            let mut validation = Validation::new(key.algorithm);
            validation.set_issuer(&[&self.issuer]);
            validation.set_audience(&[&self.audience]);
            validation.leeway = LEEWAY_SECONDS;
            validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
            match jsonwebtoken::decode::<RawClaims>(token, &key.key, &validation) {
                Ok(data) => {
                    let claims = Claims {
                        subject: data.claims.sub,
                        roles: data.claims.roles,
                    };
                    self.remember(token, &claims, data.claims.exp, now, &keys);
                    return Ok(claims);
                }
                Err(error) => {
                    refusal = match error.kind() {
                        ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => {
                            TokenRefusal::Expired
                        }
                        ErrorKind::InvalidIssuer => TokenRefusal::WrongIssuer,
                        ErrorKind::InvalidAudience => TokenRefusal::WrongAudience,
                        ErrorKind::InvalidSignature => TokenRefusal::BadSignature,
                        _ => TokenRefusal::Malformed,
                    };
                    // Claims are checked after the signature: this key signed it.
                    if refusal != TokenRefusal::BadSignature {
                        return Err(refusal);
                    }
                }
            }
        }
        Err(refusal)
    }
}

/// Keys from a PEM public key (Ed25519, P-256 or RSA) or a JWKS document.
fn parse_keys(text: &[u8]) -> Result<Vec<Key>, String> {
    if text.trim_ascii_start().starts_with(b"{") {
        let set: JwkSet = serde_json::from_slice(text).map_err(|e| e.to_string())?;
        return keys_of(&set);
    }
    type Parse = fn(&[u8]) -> jsonwebtoken::errors::Result<DecodingKey>;
    let tries: [(Algorithm, Parse); 3] = [
        (Algorithm::EdDSA, DecodingKey::from_ed_pem),
        (Algorithm::ES256, DecodingKey::from_ec_pem),
        (Algorithm::RS256, DecodingKey::from_rsa_pem),
    ];
    tries
        .iter()
        .find_map(|(algorithm, parse)| {
            parse(text).ok().map(|key| {
                vec![Key {
                    id: None,
                    algorithm: *algorithm,
                    key,
                }]
            })
        })
        .ok_or_else(|| "not a PEM public key (Ed25519, P-256 or RSA) or a JWKS".to_owned())
}

fn keys_of(set: &JwkSet) -> Result<Vec<Key>, String> {
    let keys: Vec<Key> = set
        .keys
        .iter()
        .filter_map(|jwk| {
            let algorithm = match (&jwk.common.key_algorithm, &jwk.algorithm) {
                (Some(alg), _) => alg.to_string().parse::<Algorithm>().ok()?,
                (None, AlgorithmParameters::OctetKeyPair(_)) => Algorithm::EdDSA,
                (None, AlgorithmParameters::EllipticCurve(_)) => Algorithm::ES256,
                (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
                (None, _) => return None,
            };
            Some(Key {
                id: jwk.common.key_id.clone(),
                algorithm,
                key: DecodingKey::from_jwk(jwk).ok()?,
            })
        })
        .collect();
    if keys.is_empty() {
        return Err("no usable key in the JWKS".into());
    }
    Ok(keys)
}

async fn fetch_jwks(url: &str) -> Result<Vec<Key>, KeysError> {
    let failed = |e: String| KeysError::Fetch(url.to_owned(), e);
    let body = super::fetch::get(url).await.map_err(failed)?;
    let set: JwkSet = serde_json::from_slice(&body).map_err(|e| failed(e.to_string()))?;
    keys_of(&set).map_err(failed)
}

/// Signs development tokens with the local key (`<pki-dir>/jwt.key`), for `make token` and
/// tests. Never used by a service.
pub struct DevTokenIssuer {
    key: EncodingKey,
    issuer: String,
    audience: String,
}

impl DevTokenIssuer {
    /// The issuer whose key is `<dir>/jwt.key`.
    pub fn from_pki(dir: &Path, issuer: &str, audience: &str) -> Result<Self, KeysError> {
        let path = dir.join("jwt.key");
        let name = path.display().to_string();
        let pem = std::fs::read(&path).map_err(|e| KeysError::Io(name.clone(), e))?;
        let key =
            EncodingKey::from_ed_pem(&pem).map_err(|e| KeysError::Invalid(name, e.to_string()))?;
        Ok(Self {
            key,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
        })
    }

    /// A token for `subject` with `roles`, valid for `lifetime` from now (negative lifetimes
    /// give expired tokens, for tests).
    pub fn issue(&self, subject: &str, roles: &[&str], lifetime: i64) -> String {
        let now = chrono::Utc::now().timestamp();
        self.issue_as(&self.issuer, subject, roles, now, now + lifetime)
    }

    /// A token with every claim chosen (tests: another issuer, another audience).
    pub fn issue_as(
        &self,
        issuer: &str,
        subject: &str,
        roles: &[&str],
        iat: i64,
        exp: i64,
    ) -> String {
        let claims = RawClaims {
            sub: subject.to_owned(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            iss: issuer.to_owned(),
            aud: self.audience.clone(),
            exp: exp.max(0) as u64,
            iat: iat.max(0) as u64,
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some("bookmesh-dev".into());
        // Signing with a key that parsed cannot fail for these claims.
        jsonwebtoken::encode(&header, &claims, &self.key).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (tempfile::TempDir, TokenVerifier, DevTokenIssuer) {
        let dir = tempfile::tempdir().expect("dir");
        crate::identity::pki::ensure_token_keys(dir.path()).expect("keys");
        let verifier =
            TokenVerifier::from_file(&dir.path().join("jwt.pub"), "bookmesh-dev", "bookmesh")
                .expect("verifier");
        let issuer =
            DevTokenIssuer::from_pki(dir.path(), "bookmesh-dev", "bookmesh").expect("issuer");
        (dir, verifier, issuer)
    }

    #[test]
    fn a_valid_token_gives_its_subject_and_roles() {
        let (_dir, verifier, issuer) = keys();
        let token = issuer.issue("m-1", &["member"], 300);
        assert_eq!(
            verifier.verify(&format!("Bearer {token}")),
            Ok(Claims {
                subject: "m-1".into(),
                roles: vec!["member".into()]
            })
        );
    }

    #[test]
    fn a_remembered_token_stays_valid_only_until_it_expires() {
        let (_dir, verifier, issuer) = keys();
        let token = issuer.issue("m-1", &["member"], 300);
        let header = format!("Bearer {token}");
        assert!(verifier.verify(&header).is_ok());
        assert!(
            verifier.remembered(&token, 0).is_some(),
            "remembered after one check"
        );
        let far_future = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default() + 3600;
        assert_eq!(
            verifier.remembered(&token, far_future),
            None,
            "not past its expiry"
        );
        // A token that differs in one character is checked, not matched.
        let mut forged = token.clone();
        forged.pop();
        forged.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(verifier.verify(&format!("Bearer {forged}")).is_err());
        for n in 0..VERIFIED_TOKENS + 10 {
            let other = issuer.issue(&format!("m-{n}"), &["member"], 300);
            assert!(verifier.verify(&format!("Bearer {other}")).is_ok());
        }
        assert!(verifier.verified().len() <= VERIFIED_TOKENS, "bounded");
    }

    #[test]
    fn a_token_verified_with_keys_since_replaced_is_not_remembered() {
        let (_dir, verifier, issuer) = keys();
        let token = issuer.issue("m-1", &["member"], 300);
        let claims = verifier.verify(&format!("Bearer {token}")).expect("valid");
        verifier.forget_verified();
        // A check that began with the old keys ends after a refresh replaced them.
        let old = verifier.keys.read().expect("keys").clone();
        *verifier.keys.write().expect("keys") = Arc::new(old.as_ref().clone());
        let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or_default();
        verifier.remember(&token, &claims, now + 300, now, &old);
        assert_eq!(verifier.remembered(&token, now), None);
    }

    #[test]
    fn expired_foreign_and_malformed_tokens_are_refused_with_their_reason() {
        let (_dir, verifier, issuer) = keys();
        let now = chrono::Utc::now().timestamp();
        let expired = issuer.issue("m-1", &["member"], -3600);
        assert_eq!(
            verifier.verify(&format!("Bearer {expired}")),
            Err(TokenRefusal::Expired)
        );
        let elsewhere = issuer.issue_as("https://idp.example", "m-1", &[], now, now + 60);
        assert_eq!(
            verifier.verify(&format!("Bearer {elsewhere}")),
            Err(TokenRefusal::WrongIssuer)
        );
        let (_other_dir, _, stranger) = keys();
        let forged = stranger.issue("m-1", &["admin"], 300);
        assert_eq!(
            verifier.verify(&format!("Bearer {forged}")),
            Err(TokenRefusal::BadSignature)
        );
        assert_eq!(verifier.verify("Basic abc"), Err(TokenRefusal::Malformed));
        assert_eq!(
            verifier.verify("Bearer not.a.jwt"),
            Err(TokenRefusal::Malformed)
        );
        let huge = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert_eq!(
            verifier.verify(&format!("Bearer {huge}")),
            Err(TokenRefusal::Malformed)
        );
    }

    /// A JWKS document for the test key pair in `dir`.
    fn jwks(dir: &Path) -> String {
        use base64::Engine as _;
        use rustls::pki_types::pem::PemObject as _;
        let pem = std::fs::read(dir.join("jwt.pub")).expect("key");
        let spki = rustls::pki_types::SubjectPublicKeyInfoDer::from_pem_slice(&pem).expect("spki");
        // An Ed25519 SubjectPublicKeyInfo ends with the 32-byte public key.
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&spki[spki.len() - 32..]);
        serde_json::json!({ "keys": [
            { "kty": "OKP", "crv": "Ed25519", "x": x, "alg": "EdDSA", "kid": "bookmesh-dev", "use": "sig" }
        ] })
        .to_string()
    }

    #[tokio::test]
    async fn keys_are_fetched_from_a_jwks_url() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (dir, _, issuer) = keys();
        let body = jwks(dir.path());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        // An identity provider's jwks_uri, as plain HTTP/1.1.
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = [0u8; 1024];
                let _ = socket.read(&mut request).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            }
        });
        let verifier = TokenVerifier::from_jwks_url(
            &format!("http://{address}/realms/bookmesh/certs"),
            Duration::from_secs(600),
            "bookmesh-dev",
            "bookmesh",
        )
        .await
        .expect("keys fetched");
        let token = issuer.issue("librarian-1", &["librarian"], 60);
        assert_eq!(
            verifier.verify(&format!("Bearer {token}")).map(|c| c.roles),
            Ok(vec!["librarian".to_owned()])
        );
        let unreachable = TokenVerifier::from_jwks_url(
            "http://127.0.0.1:1/certs",
            Duration::from_secs(600),
            "i",
            "a",
        )
        .await;
        assert!(unreachable.is_err(), "no keys, no verifier");
    }

    #[test]
    fn a_jwks_document_is_accepted_as_keys() {
        let (dir, _, issuer) = keys();
        let keys = parse_keys(jwks(dir.path()).as_bytes()).expect("jwks");
        let verifier = TokenVerifier::with_keys(keys, "bookmesh-dev", "bookmesh");
        let token = issuer.issue("librarian-1", &["librarian"], 60);
        assert!(verifier.verify(&format!("Bearer {token}")).is_ok());
    }
}

//! Who may call what: end-user tokens ([`token`]), the declarative policy ([`policy`]), and
//! the [`Authorizer`] the server stack asks before any handler runs.

mod fetch;
pub mod policy;
pub mod token;

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

use prost_reflect::{DescriptorPool, DynamicMessage, Value};

pub use policy::{Caller, Decision, Policy, PolicyError};
pub use token::{Claims, DevTokenIssuer, TokenRefusal, TokenVerifier};

use crate::config::{AuthArgs, IdentityArgs};

/// Every contract this platform serves, for the policy's method names and its field checks.
static DESCRIPTORS: LazyLock<Option<DescriptorPool>> =
    LazyLock::new(|| DescriptorPool::decode(crate::proto::FILE_DESCRIPTOR_SET).ok());

/// Services every server has beside its own, open or not, that are not in `proto/`.
const STANDARD_SERVICES: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// Their methods, fixed by their specifications.
const STANDARD_METHODS: &[&str] = &[
    "grpc.health.v1.Health/Check",
    "grpc.health.v1.Health/Watch",
    "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
    "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/// Every `package.Service/Method` this platform serves, built once: the server stack asks
/// for every call, so it is one hash lookup.
static KNOWN_METHODS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    let mut known: HashSet<String> = STANDARD_METHODS.iter().map(|m| (*m).to_owned()).collect();
    if let Some(pool) = DESCRIPTORS.as_ref() {
        for service in pool.services() {
            for method in service.methods() {
                known.insert(format!("{}/{}", service.full_name(), method.name()));
            }
        }
    }
    known
});

/// Whether `name` (`package.Service` or `package.Service/Method`) is an RPC this platform
/// knows; what makes a metric label safe to use.
pub fn is_known(name: &str) -> bool {
    if name.contains('/') {
        return KNOWN_METHODS.contains(name);
    }
    STANDARD_SERVICES.contains(&name)
        || DESCRIPTORS
            .as_ref()
            .is_some_and(|pool| pool.get_service_by_name(name).is_some())
}

/// The value of string `field` in the encoded request of `method` (`package.Service/Method`).
pub fn request_field(method: &str, field: &str, message: &[u8]) -> Option<String> {
    let (service, name) = method.split_once('/')?;
    let descriptor = DESCRIPTORS
        .as_ref()?
        .get_service_by_name(service)?
        .methods()
        .find(|m| m.name() == name)?
        .input();
    let decoded = DynamicMessage::decode(descriptor, message).ok()?;
    match decoded.get_field_by_name(field)?.as_ref() {
        Value::String(value) => Some(value.clone()),
        _ => None,
    }
}

/// Why the authorizer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthSetupError {
    /// The policy does not load.
    #[error(transparent)]
    Policy(#[from] PolicyError),
    /// The token keys do not load.
    #[error("token keys: {0}")]
    Keys(#[from] token::KeysError),
}

/// Decides every call on one server: the policy, and the token keys that prove users.
pub struct Authorizer {
    /// The serving workload, as the policy's `servers` name it.
    server: String,
    policy: Policy,
    tokens: Arc<TokenVerifier>,
}

impl Authorizer {
    /// The authorizer of server `workload`, from its settings.
    pub async fn from_args(
        workload: &str,
        auth: &AuthArgs,
        identity: &IdentityArgs,
    ) -> Result<Self, AuthSetupError> {
        let policy_text = match &auth.authz_policy {
            Some(path) => std::fs::read_to_string(path)
                .map_err(|e| PolicyError(format!("{}: {e}", path.display())))?,
            None => policy::DEFAULT_POLICY.to_owned(),
        };
        let policy = Policy::parse(&policy_text, is_known)?;
        let tokens = match &auth.token_jwks_url {
            Some(url) => {
                TokenVerifier::from_jwks_url(
                    url,
                    auth.token_keys_refresh,
                    &auth.token_issuer,
                    &auth.token_audience,
                )
                .await?
            }
            None => {
                let file = auth
                    .token_keys
                    .clone()
                    .unwrap_or_else(|| identity.pki_dir.join("jwt.pub"));
                Arc::new(TokenVerifier::from_file(
                    &file,
                    &auth.token_issuer,
                    &auth.token_audience,
                )?)
            }
        };
        Ok(Self {
            server: workload.to_owned(),
            policy,
            tokens,
        })
    }

    /// An authorizer from parts (tests).
    pub fn new(server: &str, policy: Policy, tokens: Arc<TokenVerifier>) -> Self {
        Self {
            server: server.to_owned(),
            policy,
            tokens,
        }
    }

    /// The serving workload.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// The claims of an `authorization` header, or why it is refused.
    pub fn verify_token(&self, authorization: &str) -> Result<Claims, TokenRefusal> {
        self.tokens.verify(authorization)
    }

    /// What the policy says about `caller` calling `method`.
    pub fn decide(&self, method: &str, caller: &Caller) -> Decision {
        self.policy.decide(&self.server, method, caller)
    }
}

tokio::task_local! {
    static ON_BEHALF_OF: Arc<str>;
}

/// Runs `future` on behalf of end user `subject`: the calls it makes to other services name
/// the user in their metadata (`x-bookmesh-on-behalf-of`), for their audit logs. They are
/// authorized by this service's own identity, never by the user's token.
pub async fn on_behalf_of<F: std::future::Future>(
    subject: Option<Arc<str>>,
    future: F,
) -> F::Output {
    match subject {
        Some(subject) => ON_BEHALF_OF.scope(subject, future).await,
        None => future.await,
    }
}

/// The end user the current request is served for, if any.
pub fn current_user() -> Option<Arc<str>> {
    ON_BEHALF_OF.try_with(Arc::clone).ok()
}

/// The metadata key naming the end user a service-to-service call is made for.
pub const ON_BEHALF_OF_HEADER: &str = "x-bookmesh-on-behalf-of";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_real_rpcs_are_known_so_metric_labels_stay_bounded() {
        assert!(is_known("bookmesh.rental.v1.RentalService/RentBook"));
        assert!(is_known("bookmesh.rental.v1.RentalService"));
        assert!(is_known("grpc.health.v1.Health/Watch"));
        assert!(!is_known("grpc.health.v1.Health/Made-up"));
        assert!(!is_known("bookmesh.rental.v1.RentalService/Made-up"));
        assert!(is_known("grpc.health.v1.Health/Check"));
        assert!(!is_known("bookmesh.rental.v1.RentalService/DropAllTables"));
        assert!(!is_known("made.up.Service/Anything"));
    }

    #[test]
    fn a_request_field_is_read_by_name() {
        let request =
            prost::Message::encode_to_vec(&crate::proto::rental::v1::GetRentalCardRequest {
                member_id: "m-1".into(),
                ..Default::default()
            });
        assert_eq!(
            request_field(
                "bookmesh.rental.v1.RentalService/GetRentalCard",
                "member_id",
                &request
            ),
            Some("m-1".into())
        );
        assert_eq!(
            request_field(
                "bookmesh.rental.v1.RentalService/GetRentalCard",
                "book_id",
                &request
            ),
            None
        );
        assert_eq!(
            request_field(
                "bookmesh.rental.v1.RentalService/GetRentalCard",
                "member_id",
                b"\xff"
            ),
            None
        );
    }
}

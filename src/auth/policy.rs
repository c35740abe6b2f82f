//! The authorization policy: for each RPC, which workloads and which user roles may call it,
//! in one declarative file (`policy/authorization.toml`), like Linkerd's or Istio's
//! AuthorizationPolicy. Default deny: an RPC no rule names is refused to everyone.

use std::collections::BTreeSet;

use serde::Deserialize;

/// Who is calling, as far as the server could establish.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Caller {
    /// The calling workload, from its certificate's SPIFFE ID (same trust domain and
    /// namespace only).
    pub workload: Option<String>,
    /// The end user, from a verified token.
    pub user: Option<super::token::Claims>,
}

impl Caller {
    /// Neither a workload certificate nor a token.
    pub fn is_anonymous(&self) -> bool {
        self.workload.is_none() && self.user.is_none()
    }

    fn has_role(&self, role: &str) -> bool {
        self.user
            .as_ref()
            .is_some_and(|user| user.roles.iter().any(|r| r == role))
    }
}

/// What the policy says about one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Go ahead if the request's `field` equals `subject` (the member themself).
    AllowIfField {
        /// The request field to compare (`member_id`).
        field: String,
        /// The token's subject.
        subject: String,
    },
    /// No credentials where some are needed: UNAUTHENTICATED.
    Unauthenticated(&'static str),
    /// Credentials the policy does not allow here: PERMISSION_DENIED.
    Denied(&'static str),
}

/// A policy file that does not parse, or names a method that does not exist.
#[derive(Debug, thiserror::Error)]
#[error("authorization policy: {0}")]
pub struct PolicyError(pub String);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(rename = "rule", default)]
    rules: Vec<RawRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    /// Methods, `package.Service/Method` or `package.Service/*`.
    methods: Vec<String>,
    /// The servers (workloads) the rule applies on; all when absent.
    #[serde(default)]
    servers: Option<BTreeSet<String>>,
    /// Anyone at all, credentials or not (health, reflection).
    #[serde(default)]
    anyone: bool,
    #[serde(default)]
    workloads: BTreeSet<String>,
    #[serde(default)]
    roles: BTreeSet<String>,
    /// A user with this role, calling about themself: `{ role = "member", field = "member_id" }`.
    #[serde(default, rename = "self")]
    own: Option<SelfRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SelfRule {
    role: String,
    field: String,
}

/// One rule: on these servers, these methods may be called by these callers.
#[derive(Debug)]
struct Rule {
    methods: Vec<String>,
    servers: Option<BTreeSet<String>>,
    anyone: bool,
    workloads: BTreeSet<String>,
    roles: BTreeSet<String>,
    own: Option<SelfRule>,
}

impl Rule {
    fn covers(&self, server: &str, method: &str) -> bool {
        self.servers
            .as_ref()
            .is_none_or(|servers| servers.contains(server))
            && self
                .methods
                .iter()
                .any(|pattern| match pattern.strip_suffix("/*") {
                    Some(service) => method
                        .strip_prefix(service)
                        .is_some_and(|rest| rest.starts_with('/')),
                    None => pattern == method,
                })
    }
}

/// The parsed policy.
#[derive(Debug)]
pub struct Policy {
    rules: Vec<Rule>,
}

/// The repository's policy, built into every binary.
pub const DEFAULT_POLICY: &str = include_str!("../../policy/authorization.toml");

impl Policy {
    /// Parses `text`; every method it names must exist (`method_exists`), so a typo fails at
    /// start instead of silently denying.
    pub fn parse(text: &str, method_exists: impl Fn(&str) -> bool) -> Result<Self, PolicyError> {
        let file: File = toml::from_str(text).map_err(|e| PolicyError(e.to_string()))?;
        let mut rules = Vec::with_capacity(file.rules.len());
        for raw in file.rules {
            for method in &raw.methods {
                let exists = match method.strip_suffix("/*") {
                    Some(service) => method_exists(service),
                    None => method_exists(method),
                };
                if !exists {
                    return Err(PolicyError(format!("`{method}` names no known RPC")));
                }
            }
            let grants = raw.anyone
                || !raw.workloads.is_empty()
                || !raw.roles.is_empty()
                || raw.own.is_some();
            if !grants {
                return Err(PolicyError(format!(
                    "the rule for {:?} allows nobody",
                    raw.methods
                )));
            }
            rules.push(Rule {
                methods: raw.methods,
                servers: raw.servers,
                anyone: raw.anyone,
                workloads: raw.workloads,
                roles: raw.roles,
                own: raw.own,
            });
        }
        Ok(Self { rules })
    }

    /// What the policy says about `caller` calling `method` (`package.Service/Method`) on
    /// `server` (the serving workload).
    pub fn decide(&self, server: &str, method: &str, caller: &Caller) -> Decision {
        let rules: Vec<&Rule> = self
            .rules
            .iter()
            .filter(|rule| rule.covers(server, method))
            .collect();
        if rules.iter().any(|rule| rule.anyone) {
            return Decision::Allow;
        }
        if caller.is_anonymous() {
            return Decision::Unauthenticated("CREDENTIALS_MISSING");
        }
        if rules.is_empty() {
            return Decision::Denied("NO_RULE");
        }
        let allowed = rules.iter().any(|rule| {
            caller
                .workload
                .as_ref()
                .is_some_and(|workload| rule.workloads.contains(workload))
                || rule.roles.iter().any(|role| caller.has_role(role))
        });
        if allowed {
            return Decision::Allow;
        }
        let own = rules
            .iter()
            .filter_map(|rule| rule.own.as_ref())
            .find(|own| caller.has_role(&own.role));
        match (own, &caller.user) {
            (Some(own), Some(user)) => Decision::AllowIfField {
                field: own.field.clone(),
                subject: user.subject.clone(),
            },
            _ => Decision::Denied("POLICY_DENIED"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::token::Claims;
    use super::*;

    fn policy() -> Policy {
        Policy::parse(
            r#"
            [[rule]]
            methods = ["grpc.health.v1.Health/*"]
            anyone = true

            [[rule]]
            servers = ["rental"]
            methods = ["bookmesh.events.v1.EventFeedService/Subscribe"]
            workloads = ["book"]

            [[rule]]
            methods = ["bookmesh.rental.v1.RentalService/RentBook"]
            roles = ["librarian"]
            self = { role = "member", field = "member_id" }
            "#,
            |_| true,
        )
        .expect("policy")
    }

    fn user(subject: &str, role: &str) -> Caller {
        Caller {
            workload: None,
            user: Some(Claims {
                subject: subject.into(),
                roles: vec![role.into()],
            }),
        }
    }

    fn workload(name: &str) -> Caller {
        Caller {
            workload: Some(name.into()),
            user: None,
        }
    }

    #[test]
    fn rules_name_who_may_call_and_everything_else_is_denied() {
        let p = policy();
        let feed = "bookmesh.events.v1.EventFeedService/Subscribe";
        let rent = "bookmesh.rental.v1.RentalService/RentBook";
        assert_eq!(
            p.decide("rental", "grpc.health.v1.Health/Check", &Caller::default()),
            Decision::Allow
        );
        assert_eq!(p.decide("rental", feed, &workload("book")), Decision::Allow);
        assert_eq!(
            p.decide("member", feed, &workload("book")),
            Decision::Denied("NO_RULE")
        );
        assert_eq!(
            p.decide("rental", feed, &workload("member")),
            Decision::Denied("POLICY_DENIED")
        );
        assert_eq!(
            p.decide("rental", feed, &Caller::default()),
            Decision::Unauthenticated("CREDENTIALS_MISSING")
        );
        assert_eq!(
            p.decide("rental", rent, &user("x", "librarian")),
            Decision::Allow
        );
        assert_eq!(
            p.decide("rental", rent, &user("m-1", "member")),
            Decision::AllowIfField {
                field: "member_id".into(),
                subject: "m-1".into()
            }
        );
        assert_eq!(
            p.decide("rental", rent, &user("m-1", "guest")),
            Decision::Denied("POLICY_DENIED")
        );
        assert_eq!(
            p.decide(
                "rental",
                "bookmesh.rental.v1.RentalService/RentBookX",
                &user("x", "librarian")
            ),
            Decision::Denied("NO_RULE"),
            "a pattern is the whole method name"
        );
    }

    #[test]
    fn a_policy_naming_an_unknown_method_or_granting_nobody_does_not_load() {
        let unknown = Policy::parse("[[rule]]\nmethods = [\"a.B/C\"]\nanyone = true\n", |_| {
            false
        });
        assert!(unknown.is_err());
        let nobody = Policy::parse("[[rule]]\nmethods = [\"a.B/C\"]\n", |_| true);
        assert!(nobody.is_err());
        let typo = Policy::parse("[[rule]]\nmethod = [\"a.B/C\"]\nanyone = true\n", |_| true);
        assert!(typo.is_err(), "unknown keys are refused");
    }
}

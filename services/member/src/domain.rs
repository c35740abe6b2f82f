//! Member rules as values that are valid by construction ("parse, don't validate").
//! No tonic or sea-orm here: the API parses into these types, the store persists them.

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A display name: 1 to 100 characters, trimmed, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberName(String);

impl MemberName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, String> {
        let name = raw.trim();
        if name.is_empty() {
            return Err("must not be empty".into());
        }
        if name.chars().count() > Self::MAX_CHARS {
            return Err(format!("must be at most {} characters", Self::MAX_CHARS));
        }
        if name.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An email address, lower-cased so that uniqueness ignores case.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// RFC 5321 limits a forward path to 254 characters.
    pub const MAX_CHARS: usize = 254;

    /// Accepts `local@domain.tld`: a deliberately simple check (the only real proof of an
    /// address is a mail that arrives) that still rejects the common typos.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let email = raw.trim().to_lowercase();
        if email.is_empty() {
            return Err("must not be empty".into());
        }
        if email.chars().count() > Self::MAX_CHARS {
            return Err(format!("must be at most {} characters", Self::MAX_CHARS));
        }
        let invalid = || "must look like name@example.org".to_owned();
        let (local, domain) = email.split_once('@').ok_or_else(invalid)?;
        let well_formed = !local.is_empty()
            && !domain.contains('@')
            && !email.chars().any(|c| c.is_whitespace() || c.is_control())
            && domain.contains('.')
            && domain.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label.chars().all(|c| c.is_alphanumeric() || c == '-')
            });
        if !well_formed {
            return Err(invalid());
        }
        Ok(Self(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A member identifier (UUID).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberId(pub Uuid);

impl MemberId {
    pub fn parse(raw: &str) -> Result<Self, String> {
        Uuid::parse_str(raw.trim())
            .map(Self)
            .map_err(|_| "must be a UUID such as 0190f5c2-7a4e-7cc1-b8e3-2f1d5b0c9a11".into())
    }

    /// A new time-ordered identifier.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }
}

impl std::fmt::Display for MemberId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A registered member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: MemberId,
    pub name: MemberName,
    pub email: Email,
    pub points: i64,
    pub created_at: DateTime<Utc>,
}

impl Member {
    /// A member as registered at `now`: no points yet.
    pub fn register(name: MemberName, email: Email, now: DateTime<Utc>) -> Self {
        Self {
            id: MemberId::generate(),
            name,
            email,
            points: 0,
            created_at: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(MemberName::parse("  Ada  ").map(|n| n.0), Ok("Ada".into()));
        assert!(MemberName::parse("   ").is_err());
        assert!(MemberName::parse(&"x".repeat(101)).is_err());
        assert!(MemberName::parse(&"é".repeat(100)).is_ok());
        assert!(MemberName::parse("bad\u{7}name").is_err());
    }

    #[test]
    fn emails_are_lower_cased_and_checked() {
        assert_eq!(
            Email::parse(" Ada@Example.ORG ").map(|e| e.0),
            Ok("ada@example.org".into())
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.org",
            "ada@example",
            "ada@@example.org",
            "a da@example.org",
            "ada@exa_mple.org",
            "ada@.org",
            "ada@-x.org",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let long = format!("{}@example.org", "a".repeat(250));
        assert!(Email::parse(&long).is_err());
    }

    #[test]
    fn member_ids_are_uuids() {
        assert!(MemberId::parse("not-a-uuid").is_err());
        let id = MemberId::generate();
        assert_eq!(MemberId::parse(&id.to_string()), Ok(id));
    }

    #[test]
    fn registration_starts_without_points() {
        let now = Utc::now();
        let member = Member::register(
            MemberName::parse("Ada").expect("valid"),
            Email::parse("ada@example.org").expect("valid"),
            now,
        );
        assert_eq!(member.points, 0);
        assert_eq!(member.created_at, now);
    }
}

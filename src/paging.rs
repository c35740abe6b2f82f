//! Keyset pagination with opaque page tokens (`page_size`/`page_token`, AIP-158 style).
//!
//! A token encodes the last identifier of the previous page; identifiers are UUIDv7, so they
//! sort by creation time and a page is "the next N identifiers after the token". Unlike offsets,
//! this stays correct and cheap while rows are inserted between page requests.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::status::FieldViolations;

/// Page size used when a request leaves `page_size` at 0.
pub const DEFAULT_PAGE_SIZE: u64 = 20;
/// Largest page a request may ask for; bounds the work and memory of one call.
pub const MAX_PAGE_SIZE: u64 = 100;

const TOKEN_PREFIX: &str = "after:";

/// A validated page request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// How many rows to return.
    pub size: u64,
    /// Return rows whose identifier is greater than this one.
    pub after: Option<String>,
}

impl PageRequest {
    /// Parses the request fields, recording violations of `page_size` and `page_token`.
    pub fn parse(
        page_size: i32,
        page_token: &str,
        violations: &mut FieldViolations,
    ) -> Option<Self> {
        let size = match page_size {
            0 => Some(DEFAULT_PAGE_SIZE),
            n if n < 0 => {
                violations.add("page_size", "must not be negative");
                None
            }
            n if n as u64 > MAX_PAGE_SIZE => {
                violations.add("page_size", format!("must be at most {MAX_PAGE_SIZE}"));
                None
            }
            n => Some(n as u64),
        };
        let after = if page_token.is_empty() {
            Some(None)
        } else {
            violations
                .check("page_token", decode_token(page_token))
                .map(Some)
        };
        Some(Self {
            size: size?,
            after: after?,
        })
    }

    /// The first page at the default size.
    pub fn first_page() -> Self {
        Self {
            size: DEFAULT_PAGE_SIZE,
            after: None,
        }
    }

    /// Rows to fetch: one more than the page, to learn whether another page follows.
    pub fn fetch_limit(&self) -> u64 {
        self.size + 1
    }

    /// Trims the extra row and returns the token of the next page (empty on the last page).
    pub fn finish<T>(&self, rows: &mut Vec<T>, id_of: impl Fn(&T) -> &str) -> String {
        if rows.len() as u64 <= self.size {
            return String::new();
        }
        rows.truncate(self.size as usize);
        rows.last()
            .map(|row| encode_token(id_of(row)))
            .unwrap_or_default()
    }
}

fn encode_token(last_id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{TOKEN_PREFIX}{last_id}"))
}

fn decode_token(token: &str) -> Result<String, &'static str> {
    const INVALID: &str = "is not a token returned by this service";
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| INVALID)?;
    let text = String::from_utf8(bytes).map_err(|_| INVALID)?;
    let id = text.strip_prefix(TOKEN_PREFIX).ok_or(INVALID)?;
    // Canonical, whatever the token's spelling: the keyset compares ids as stored.
    let id = uuid::Uuid::parse_str(id).map_err(|_| INVALID)?;
    Ok(id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(size: i32, token: &str) -> Result<PageRequest, Vec<String>> {
        let mut violations = FieldViolations::new();
        let parsed = PageRequest::parse(size, token, &mut violations);
        match violations.into_result() {
            Ok(()) => Ok(parsed.expect("parsed without violations")),
            Err(status) => Err(status
                .get_details_bad_request()
                .map(|b| b.field_violations.into_iter().map(|v| v.field).collect())
                .unwrap_or_default()),
        }
    }

    use tonic_types::StatusExt;

    #[test]
    fn defaults_and_bounds() {
        assert_eq!(parse(0, "").map(|p| p.size), Ok(DEFAULT_PAGE_SIZE));
        assert_eq!(parse(100, "").map(|p| p.size), Ok(100));
        assert_eq!(parse(101, ""), Err(vec!["page_size".to_owned()]));
        assert_eq!(
            parse(-1, "junk"),
            Err(vec!["page_size".to_owned(), "page_token".to_owned()])
        );
    }

    #[test]
    fn tokens_round_trip_and_reject_forgeries() {
        let id = uuid::Uuid::now_v7().to_string();
        let mut rows = vec![id.clone(), "x".to_owned()];
        let page = parse(1, "").expect("valid");
        let token = page.finish(&mut rows, |r| r.as_str());
        assert_eq!(rows, vec![id.clone()]);
        assert_eq!(parse(1, &token).map(|p| p.after), Ok(Some(id.clone())));
        assert!(parse(1, "YWZ0ZXI6bm90LWEtdXVpZA").is_err());
        // A token spelling the id in upper case resumes at the same (canonical) id.
        let upper = encode_token(&id.to_uppercase());
        assert_eq!(parse(1, &upper).map(|p| p.after), Ok(Some(id.clone())));
        let mut last_page = vec!["only".to_owned()];
        assert_eq!(page.finish(&mut last_page, |r| r.as_str()), "");
    }
}

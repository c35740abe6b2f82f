//! Catalogue rules as values that are valid by construction. No tonic or sea-orm here.

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

/// Free text of bounded length: trimmed, non-empty, no control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text(String);

impl Text {
    pub fn parse(raw: &str, max_chars: usize) -> Result<Self, String> {
        let text = raw.trim();
        if text.is_empty() {
            return Err("must not be empty".into());
        }
        if text.chars().count() > max_chars {
            return Err(format!("must be at most {max_chars} characters"));
        }
        if text.chars().any(char::is_control) {
            return Err("must not contain control characters".into());
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Longest title; other descriptive fields allow [`SHORT_TEXT_CHARS`].
pub const TITLE_CHARS: usize = 200;
pub const SHORT_TEXT_CHARS: usize = 100;

/// An ISBN-10 or ISBN-13 with a valid check digit, kept without separators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Isbn(String);

impl Isbn {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let compact: String = raw
            .chars()
            .filter(|c| !matches!(c, '-' | ' '))
            .map(|c| c.to_ascii_uppercase())
            .collect();
        match compact.len() {
            10 => Self::check_isbn10(&compact)?,
            13 => Self::check_isbn13(&compact)?,
            0 => return Err("must not be empty".into()),
            _ => return Err("must have 10 or 13 digits".into()),
        }
        Ok(Self(compact))
    }

    /// Weights 10..1; the last character may be X (10); the sum must be divisible by 11.
    fn check_isbn10(isbn: &str) -> Result<(), String> {
        let mut sum = 0;
        for (position, c) in isbn.chars().enumerate() {
            let value = match (c, position) {
                ('X', 9) => 10,
                (c, _) => c
                    .to_digit(10)
                    .ok_or("must contain only digits (and a final X for ISBN-10)")?,
            };
            sum += value * (10 - position as u32);
        }
        if sum % 11 == 0 {
            Ok(())
        } else {
            Err("has a wrong check digit for an ISBN-10".into())
        }
    }

    /// Weights alternate 1 and 3; the sum must be divisible by 10.
    fn check_isbn13(isbn: &str) -> Result<(), String> {
        let mut sum = 0;
        for (position, c) in isbn.chars().enumerate() {
            let digit = c.to_digit(10).ok_or("must contain only digits")?;
            sum += if position % 2 == 0 { digit } else { digit * 3 };
        }
        if sum % 10 == 0 {
            Ok(())
        } else {
            Err("has a wrong check digit for an ISBN-13".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A publication date, exactly YYYY-MM-DD (year 0001 to 9999, what every supported database
/// stores as a DATE), that is not in the future.
pub fn parse_published_on(raw: &str, today: NaiveDate) -> Result<NaiveDate, String> {
    const FORMAT: &str = "must be a date as YYYY-MM-DD";
    // chrono's `%Y` also takes "-5000" and "1": check the shape first.
    let bytes = raw.as_bytes();
    let shaped = bytes.len() == 10
        && bytes.iter().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                *b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !shaped || raw.starts_with("0000") {
        return Err(FORMAT.into());
    }
    let date = NaiveDate::parse_from_str(raw, "%Y-%m-%d").map_err(|_| FORMAT.to_owned())?;
    if date > today {
        return Err("must not be in the future".into());
    }
    Ok(date)
}

/// A book identifier (UUID).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BookId(pub Uuid);

impl BookId {
    pub fn parse(raw: &str) -> Result<Self, String> {
        Uuid::parse_str(raw.trim())
            .map(Self)
            .map_err(|_| "must be a UUID such as 0190f5c2-7a4e-7cc1-b8e3-2f1d5b0c9a11".into())
    }

    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }
}

impl std::fmt::Display for BookId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Whether a copy can be rented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookStatus {
    Available,
    Unavailable,
}

/// What a librarian enters to register a copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BookDetails {
    pub title: Text,
    pub author: Text,
    pub isbn: Isbn,
    pub publisher: Text,
    pub published_on: NaiveDate,
    pub classification: Text,
    pub location: Text,
}

/// One copy in the catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Book {
    pub id: BookId,
    pub details: BookDetails,
    pub status: BookStatus,
    pub created_at: DateTime<Utc>,
}

impl Book {
    /// A newly registered copy is on the shelf.
    pub fn register(details: BookDetails, now: DateTime<Utc>) -> Self {
        Self {
            id: BookId::generate(),
            details,
            status: BookStatus::Available,
            created_at: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_isbns_with_separators() {
        assert_eq!(
            Isbn::parse("978-0-306-40615-7").map(|i| i.0),
            Ok("9780306406157".into())
        );
        assert_eq!(
            Isbn::parse("0 306 40615 2").map(|i| i.0),
            Ok("0306406152".into())
        );
        // ISBN-10 whose check digit is X.
        assert_eq!(
            Isbn::parse("0-8044-2957-x").map(|i| i.0),
            Ok("080442957X".into())
        );
    }

    #[test]
    fn rejects_bad_isbns() {
        for bad in [
            "",
            "12345",
            "978-0-306-40615-8",
            "0306406153",
            "X306406152",
            "97803064061A7",
            "030640615Y",
        ] {
            assert!(Isbn::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn publication_dates_are_iso_and_not_future() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 25).expect("valid date");
        assert!(parse_published_on("2026-11-25", today).is_ok());
        assert!(parse_published_on("2026-11-26", today).is_err());
        for odd in [
            "-5000-01-01",
            "1-1-1",
            "0000-01-01",
            "2026-1-01",
            " 2026-01-01",
            "2026-02-30",
        ] {
            assert!(parse_published_on(odd, today).is_err(), "{odd}");
        }
        assert!(parse_published_on("0001-01-01", today).is_ok());
        assert!(parse_published_on("2019-02-30", today).is_err());
        assert!(parse_published_on("25/11/2020", today).is_err());
    }

    #[test]
    fn text_is_trimmed_and_bounded() {
        assert_eq!(Text::parse("  Dune ", 10).map(|t| t.0), Ok("Dune".into()));
        assert!(Text::parse("", 10).is_err());
        assert!(Text::parse("elevenchars", 10).is_err());
        assert!(Text::parse("tab\there", 10).is_err());
    }

    #[test]
    fn registered_books_are_available() {
        let text = |s: &str| Text::parse(s, 100).expect("valid");
        let details = BookDetails {
            title: text("Dune"),
            author: text("Frank Herbert"),
            isbn: Isbn::parse("9780441013593").expect("valid"),
            publisher: text("Ace"),
            published_on: NaiveDate::from_ymd_opt(1965, 8, 1).expect("valid"),
            classification: text("Fiction"),
            location: text("Shelf 1"),
        };
        let book = Book::register(details, Utc::now());
        assert_eq!(book.status, BookStatus::Available);
    }
}

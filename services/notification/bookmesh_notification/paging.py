"""Keyset pagination with opaque page tokens, as the Rust services do it (src/paging.rs):
`page_size` 1 to 100 (0 means 20); a token names where the previous page stopped, so a page
stays right while notices are written between requests.

Notices are listed newest first by their position in the store (the order they were written):
a token is the position of the last notice of the previous page, and the next page has the
notices before it.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from .validation import FieldViolations

#: Page size when a request leaves `page_size` at 0.
DEFAULT_PAGE_SIZE = 20
#: Largest page a request may ask for.
MAX_PAGE_SIZE = 100

_TOKEN_PREFIX = "before:"
_INVALID_TOKEN = "is not a token returned by this service"


@dataclass(frozen=True)
class PageRequest:
    """A validated page request: `size` notices before position `before` (None: the newest)."""

    size: int
    before: int | None = None

    @staticmethod
    def parse(page_size: int, page_token: str, violations: FieldViolations) -> "PageRequest | None":
        """The request's page, or None with the violations recorded."""
        size: int | None = page_size or DEFAULT_PAGE_SIZE
        if page_size < 0:
            violations.add("page_size", "must not be negative")
            size = None
        elif page_size > MAX_PAGE_SIZE:
            violations.add("page_size", f"must be at most {MAX_PAGE_SIZE}")
            size = None
        before: int | None = None
        token_ok = True
        if page_token:
            try:
                before = decode_token(page_token)
            except ValueError:
                violations.add("page_token", _INVALID_TOKEN)
                token_ok = False
        if size is None or not token_ok:
            return None
        return PageRequest(size=size, before=before)

    @property
    def fetch_limit(self) -> int:
        """Rows to read: one more than the page, to learn whether another page follows."""
        return self.size + 1

    def finish(self, rows: list, position_of) -> tuple[list, str]:
        """The page (the extra row dropped) and the next page's token, empty on the last page."""
        if len(rows) <= self.size:
            return rows, ""
        page = rows[: self.size]
        return page, encode_token(position_of(page[-1]))


def encode_token(position: int) -> str:
    return base64.urlsafe_b64encode(f"{_TOKEN_PREFIX}{position}".encode()).decode().rstrip("=")


def decode_token(token: str) -> int:
    """The position a token names; ValueError for anything this service did not write."""
    try:
        padded = token + "=" * (-len(token) % 4)
        text = base64.urlsafe_b64decode(padded.encode("ascii")).decode("utf-8")
    except (binascii.Error, UnicodeError, ValueError) as error:
        raise ValueError(_INVALID_TOKEN) from error
    if not text.startswith(_TOKEN_PREFIX):
        raise ValueError(_INVALID_TOKEN)
    number = text[len(_TOKEN_PREFIX) :]
    if not (number.isascii() and number.isdigit()) or len(number) > 18 or int(number) <= 0:
        raise ValueError(_INVALID_TOKEN)
    return int(number)

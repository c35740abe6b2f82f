"""paging.py: page sizes and opaque tokens, as the Rust services validate them."""

from __future__ import annotations

import pytest

from bookmesh_notification.paging import DEFAULT_PAGE_SIZE, PageRequest, decode_token, encode_token
from bookmesh_notification.validation import FieldViolations


def parse(size: int, token: str = ""):
    violations = FieldViolations()
    page = PageRequest.parse(size, token, violations)
    return page, violations.fields


def test_sizes_default_to_20_and_stop_at_100():
    assert parse(0)[0].size == DEFAULT_PAGE_SIZE
    assert parse(1)[0].size == 1
    assert parse(100)[0].size == 100
    assert parse(101) == (None, ["page_size"])
    assert parse(-1) == (None, ["page_size"])


def test_tokens_round_trip_and_every_bad_field_is_named():
    token = encode_token(42)
    assert parse(5, token)[0] == PageRequest(size=5, before=42)
    assert parse(-1, "junk") == (None, ["page_size", "page_token"])


@pytest.mark.parametrize(
    "token",
    ["junk", "YmVmb3JlOg", encode_token(1)[:-2] + "!!", "YWZ0ZXI6MQ", "YmVmb3JlOi0x", "YmVmb3JlOjA", "YmVmb3JlOu-8kQ"],
)
def test_forged_tokens_are_refused(token):
    with pytest.raises(ValueError):
        decode_token(token)


def test_a_page_tells_whether_another_follows():
    page = PageRequest(size=2)
    rows, token = page.finish([5, 4, 3], lambda position: position)
    assert rows == [5, 4] and decode_token(token) == 4
    rows, token = page.finish([2, 1], lambda position: position)
    assert rows == [2, 1] and token == ""

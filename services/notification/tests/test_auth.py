"""auth.py: the repository's policy decided as the Rust servers decide it, tokens checked
with the Rust services' refusal reasons, SPIFFE IDs."""

from __future__ import annotations

import base64
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from bookmesh_notification.auth import (
    Authorizer,
    Caller,
    Claims,
    PeerInfo,
    Policy,
    PolicyError,
    SpiffeId,
    TokenRefusal,
    TokenVerifier,
    is_known,
    parse_keys,
)
from bookmesh_notification.config import DEFAULT_POLICY
from support.pki import make_token_keys
from support.tokens import token

LIST = "bookmesh.notification.v1.NotificationService/ListNotices"
WATCH = "bookmesh.notification.v1.NotificationService/WatchNotices"


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy.parse(DEFAULT_POLICY.read_text(), is_known)


def user(role: str, subject: str = "someone") -> Caller:
    return Caller(user=Claims(subject, (role,)))


def test_the_repository_policy_loads_and_knows_the_notification_rpcs(policy):
    assert is_known(LIST) and is_known(WATCH) and is_known("bookmesh.notification.v1.NotificationService")
    assert not is_known("bookmesh.notification.v1.NotificationService/Made-up")
    assert not is_known("made.Up/ListNotices")


def test_notices_are_for_the_member_themself_staff_and_the_workloads_named(policy):
    for method in (LIST, WATCH):
        assert policy.decide("notification", method, user("librarian")).allow
        assert policy.decide("notification", method, user("admin")).allow
        assert policy.decide("notification", method, Caller(workload="check")).allow
        member = policy.decide("notification", method, user("member", "m-1"))
        assert (member.allow, member.field, member.subject) == (False, "member_id", "m-1")
        denied = policy.decide("notification", method, Caller(workload="loadgen"))
        assert (denied.code, denied.reason) == ("PERMISSION_DENIED", "POLICY_DENIED")
        anonymous = policy.decide("notification", method, Caller())
        assert (anonymous.code, anonymous.reason) == ("UNAUTHENTICATED", "CREDENTIALS_MISSING")


def test_health_and_reflection_are_open_and_unknown_methods_have_no_rule(policy):
    assert policy.decide("notification", "grpc.health.v1.Health/Check", Caller()).allow
    assert policy.decide(
        "notification", "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", Caller()
    ).allow
    made_up = policy.decide("notification", "bookmesh.notification.v1.NotificationService/Made-up", user("librarian"))
    assert made_up.reason == "NO_RULE"


def test_the_rental_feed_is_open_to_this_workload_on_rental_only(policy):
    feed = "bookmesh.events.v1.EventFeedService/Subscribe"
    assert policy.decide("rental", feed, Caller(workload="notification")).allow
    assert policy.decide("book", feed, Caller(workload="notification")).reason == "POLICY_DENIED"


@pytest.mark.parametrize(
    "text",
    [
        '[[rule]]\nmethods = ["a.B/C"]\nanyone = true\n',  # names no known RPC
        f'[[rule]]\nmethods = ["{LIST}"]\n',  # allows nobody
        f'[[rule]]\nmethod = ["{LIST}"]\nanyone = true\n',  # a typo
        f'[[rule]]\nmethods = ["{LIST}"]\nself = {{ role = "member" }}\n',
        "not toml [",
    ],
)
def test_a_policy_that_does_not_hold_does_not_load(text):
    with pytest.raises(PolicyError):
        Policy.parse(text, is_known)


def test_spiffe_ids_in_the_kubernetes_shape_only():
    assert SpiffeId.parse("spiffe://bookmesh.local/ns/bookmesh/sa/rental") == SpiffeId(
        "bookmesh.local", "bookmesh", "rental"
    )
    assert str(SpiffeId("bookmesh.local", "bookmesh", "rental")) == "spiffe://bookmesh.local/ns/bookmesh/sa/rental"
    for bad in (
        "https://bookmesh.local/ns/bookmesh/sa/rental",
        "spiffe://bookmesh.local/ns/bookmesh/rental",
        "spiffe://bookmesh.local/ns/bookmesh/sa/rental/x",
        "spiffe://bookmesh.local/ns//sa/rental",
        "spiffe://bookmesh.local/ns/bookmesh/sa/ren tal",
    ):
        assert SpiffeId.parse(bad) is None, bad


@pytest.fixture()
def keys(tmp_path):
    make_token_keys(tmp_path)
    return tmp_path


def verifier(keys) -> TokenVerifier:
    return TokenVerifier.from_file(keys / "jwt.pub", "bookmesh-dev", "bookmesh")


def test_a_valid_token_gives_its_subject_and_roles(keys):
    claims = verifier(keys).verify("Bearer " + token(keys, "member", "m-1"))
    assert claims == Claims("m-1", ("member",))


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda keys: token(keys, "member", lifetime=-120), "TOKEN_EXPIRED"),
        (lambda keys: token(keys, "member", issuer="elsewhere"), "TOKEN_ISSUER_INVALID"),
        (lambda keys: token(keys, "member", audience="another"), "TOKEN_AUDIENCE_INVALID"),
        (lambda keys: "not-a-jwt", "TOKEN_MALFORMED"),
        (lambda keys: "", "TOKEN_MALFORMED"),
        (lambda keys: "x" * 9000, "TOKEN_MALFORMED"),
    ],
)
def test_bad_tokens_are_refused_with_their_reason(keys, make, reason):
    with pytest.raises(TokenRefusal) as refused:
        verifier(keys).verify("Bearer " + make(keys))
    assert refused.value.reason == reason


def test_a_token_signed_by_another_key_is_refused(keys, tmp_path_factory):
    other = tmp_path_factory.mktemp("other")
    make_token_keys(other)
    with pytest.raises(TokenRefusal) as refused:
        verifier(keys).verify("Bearer " + token(other, "librarian"))
    assert refused.value.reason == "TOKEN_SIGNATURE_INVALID"
    hs256 = jwt.encode(
        {"sub": "x", "iss": "bookmesh-dev", "aud": "bookmesh", "exp": 2**40},
        "a-shared-secret-of-thirty-two-bytes!",
        algorithm="HS256",
    )
    with pytest.raises(TokenRefusal) as refused:
        verifier(keys).verify("Bearer " + hs256)
    assert refused.value.reason == "TOKEN_SIGNATURE_INVALID", "an algorithm the keys do not use"


def test_a_jwks_document_is_accepted_as_keys(keys):
    public = serialization.load_pem_public_key((keys / "jwt.pub").read_bytes())
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jwk = {"kty": "OKP", "crv": "Ed25519", "alg": "EdDSA", "x": base64.urlsafe_b64encode(raw).decode().rstrip("=")}
    [key] = parse_keys(json.dumps({"keys": [jwk]}).encode())
    assert key.algorithm == "EdDSA"
    assert TokenVerifier([key], "bookmesh-dev", "bookmesh").verify("Bearer " + token(keys, "admin")).roles == ("admin",)


def test_workloads_count_only_in_this_trust_domain_and_namespace(keys):
    policy = Policy.parse(DEFAULT_POLICY.read_text(), is_known)
    own = SpiffeId("bookmesh.local", "bookmesh", "notification")
    authorizer = Authorizer("notification", own, policy, verifier(keys))
    ours = PeerInfo("1.2.3.4:5", SpiffeId("bookmesh.local", "bookmesh", "check"))
    theirs = PeerInfo("1.2.3.4:5", SpiffeId("elsewhere.org", "bookmesh", "check"))
    assert authorizer.identify(ours, None) == Caller(workload="check")
    assert authorizer.identify(theirs, None) == Caller()
    assert authorizer.identify(None, "Bearer " + token(keys, "librarian")).user.roles == ("librarian",)


_ABSENT = object()


def signed(keys, **claims) -> str:
    """A token signed with the development key, with `claims` over valid ones (`_ABSENT`
    removes one)."""
    now = int(time.time())
    body = {"sub": "m-1", "roles": ["member"], "iss": "bookmesh-dev", "aud": "bookmesh", "iat": now, "exp": now + 600}
    body.update(claims)
    body = {name: value for name, value in body.items() if value is not _ABSENT}
    key = serialization.load_pem_private_key((keys / "jwt.key").read_bytes(), password=None)
    return jwt.encode(body, key, algorithm="EdDSA")


@pytest.mark.parametrize(
    "claims",
    [
        {"iat": _ABSENT},
        {"aud": ["bookmesh"]},  # RFC 7519 allows an array; the Rust services' RawClaims do not
        {"aud": ["elsewhere"]},  # the shape is checked before the audience, as in Rust
        {"exp": time.time() + 600.5},  # a u64 in Rust
        {"iat": -1},
        {"sub": 7},
        {"roles": None},
        {"roles": ["member", 3]},
        {"exp": int(time.time()) - 3600, "iat": _ABSENT},  # expired, but malformed first
    ],
)
def test_claims_the_rust_services_cannot_read_are_malformed(keys, claims):
    with pytest.raises(TokenRefusal) as refused:
        verifier(keys).verify("Bearer " + signed(keys, **claims))
    assert refused.value.reason == "TOKEN_MALFORMED"


def test_claims_jsonwebtoken_does_not_check_are_not_checked(keys):
    later = int(time.time()) + 3600
    # An `iat` or an `nbf` in the future (a skewed issuer clock): the Rust services accept both.
    assert verifier(keys).verify("Bearer " + signed(keys, iat=later)).subject == "m-1"
    assert verifier(keys).verify("Bearer " + signed(keys, nbf=later)).subject == "m-1"
    assert verifier(keys).verify("Bearer " + signed(keys, roles=_ABSENT, jti=5)).roles == ()


def test_expiry_issuer_and_audience_are_checked_in_that_order(keys):
    now = int(time.time())
    for claims, reason in (
        ({"exp": now - 31, "iss": "elsewhere"}, "TOKEN_EXPIRED"),
        ({"iss": "elsewhere", "aud": "another"}, "TOKEN_ISSUER_INVALID"),
        ({"aud": "another"}, "TOKEN_AUDIENCE_INVALID"),
    ):
        with pytest.raises(TokenRefusal) as refused:
            verifier(keys).verify("Bearer " + signed(keys, **claims))
        assert refused.value.reason == reason, claims
    assert verifier(keys).verify("Bearer " + signed(keys, exp=now - 20)).subject == "m-1", "30 s of leeway"

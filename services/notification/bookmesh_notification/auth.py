"""Who may call what, exactly as the Rust servers decide it (src/auth/, src/server/authorize.rs):

- the caller's **workload** is the SPIFFE ID in its mTLS certificate's URI SAN
  (`spiffe://<trust domain>/ns/<namespace>/sa/<workload>`), counted only in this service's
  trust domain and namespace;
- its **user** is a verified `authorization: Bearer <JWT>` (EdDSA, ES256 or RS256; issuer,
  audience, expiry with 30 s of leeway; `sub`, `roles`, and `iat` present; the claims' types as
  the Rust services read them, `aud` a single string);
- the **policy** (policy/authorization.toml) says per RPC who may call it: default deny,
  `anyone`, `workloads`, `roles`, `self = {role, field}`, optionally only on some `servers`.

Refusals are UNAUTHENTICATED or PERMISSION_DENIED with a google.rpc.ErrorInfo whose reason is
the Rust services' (CREDENTIALS_MISSING, TOKEN_*, NO_RULE, POLICY_DENIED, NOT_SELF).
"""

from __future__ import annotations

import importlib
import json
import logging
import pkgutil
import re
import threading
import time
import tomllib
import urllib.request
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

log = logging.getLogger("bookmesh.authz")

# === workload identity ===

_SPIFFE_PART = re.compile(r"^[A-Za-z0-9._-]+$")


@dataclass(frozen=True)
class SpiffeId:
    """`spiffe://<trust domain>/ns/<namespace>/sa/<workload>`."""

    trust_domain: str
    namespace: str
    workload: str

    @staticmethod
    def parse(uri: str) -> "SpiffeId | None":
        if not uri.startswith("spiffe://"):
            return None
        parts = uri[len("spiffe://") :].split("/")
        if len(parts) != 5 or parts[1] != "ns" or parts[3] != "sa":
            return None
        trust_domain, namespace, workload = parts[0], parts[2], parts[4]
        if not all(_SPIFFE_PART.match(part) for part in (trust_domain, namespace, workload)):
            return None
        return SpiffeId(trust_domain, namespace, workload)

    def __str__(self) -> str:
        return f"spiffe://{self.trust_domain}/ns/{self.namespace}/sa/{self.workload}"


def spiffe_id_of(peer_certificate: dict | None) -> SpiffeId | None:
    """The SPIFFE ID of a verified peer certificate (ssl's `getpeercert()`), if it has exactly
    one: SPIFFE allows one per certificate, two would make "who is this" ambiguous."""
    if not peer_certificate:
        return None
    uris = [value for kind, value in peer_certificate.get("subjectAltName", ()) if kind == "URI"]
    spiffe = [uri for uri in uris if uri.startswith("spiffe://")]
    if len(spiffe) != 1:
        return None
    return SpiffeId.parse(spiffe[0])


@dataclass(frozen=True)
class PeerInfo:
    """Who is on the other end of a connection, read once after its TLS handshake."""

    remote_addr: str | None
    workload: SpiffeId | None


# === user tokens ===


@dataclass(frozen=True)
class Claims:
    """What a valid token says: who (`sub`) and what they may do (`roles`)."""

    subject: str
    roles: tuple[str, ...]


class TokenRefusal(Exception):
    """Why a token was refused; `reason` is the ErrorInfo reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


MALFORMED = "TOKEN_MALFORMED"
EXPIRED = "TOKEN_EXPIRED"
BAD_SIGNATURE = "TOKEN_SIGNATURE_INVALID"
WRONG_ISSUER = "TOKEN_ISSUER_INVALID"
WRONG_AUDIENCE = "TOKEN_AUDIENCE_INVALID"

#: Clock skew tolerated between issuer and server.
LEEWAY_SECONDS = 30
#: Longest token accepted.
MAX_TOKEN_BYTES = 8 * 1024
#: Tokens remembered as verified (a client sends the same one on every call).
VERIFIED_TOKENS = 1024
#: PyJWT checks the signature only; the claims are checked by `_raw_claims` and `verify`, as
#: jsonwebtoken checks them for the Rust services. (PyJWT would refuse an `iat` in the future
#: and an `nbf` not reached yet, which jsonwebtoken does not look at, and accept an `aud` array
#: and a missing `iat`, which the Rust services refuse.)
_SIGNATURE_ONLY = {
    "verify_signature": True,
    "verify_exp": False,
    "verify_nbf": False,
    "verify_iat": False,
    "verify_iss": False,
    "verify_aud": False,
    "verify_sub": False,
    "verify_jti": False,
    "require": [],
}
_U64 = 2**64


@dataclass(frozen=True)
class _Key:
    algorithm: str
    key: object
    key_id: str | None = None


def _algorithm_of(public_key) -> str:
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "EdDSA"
    if isinstance(public_key, ec.EllipticCurvePublicKey) and isinstance(public_key.curve, ec.SECP256R1):
        return "ES256"
    if isinstance(public_key, rsa.RSAPublicKey):
        return "RS256"
    raise ValueError(f"unsupported key type {type(public_key).__name__} (use Ed25519, P-256 or RSA)")


def parse_keys(text: bytes) -> list[_Key]:
    """Keys from a PEM public key or a JWKS document."""
    stripped = text.strip()
    if stripped.startswith(b"{"):
        document = json.loads(stripped)
        keys = []
        for jwk in jwt.PyJWKSet.from_dict(document).keys:
            algorithm = jwk.algorithm_name
            if algorithm not in ("EdDSA", "ES256", "RS256"):
                continue
            keys.append(_Key(algorithm, jwk.key, jwk.key_id))
        if not keys:
            raise ValueError("the JWKS has no EdDSA, ES256 or RS256 key")
        return keys
    public_key = load_pem_public_key(stripped)
    return [_Key(_algorithm_of(public_key), public_key)]


class TokenVerifier:
    """Checks bearer tokens against the trusted keys, issuer and audience."""

    def __init__(self, keys: list[_Key], issuer: str, audience: str) -> None:
        self._keys = keys
        self._issuer = issuer
        self._audience = audience
        self._verified: OrderedDict[str, tuple[Claims, float]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def from_file(path: Path, issuer: str, audience: str) -> "TokenVerifier":
        return TokenVerifier(parse_keys(Path(path).read_bytes()), issuer, audience)

    @staticmethod
    def from_jwks_url(url: str, refresh: float, issuer: str, audience: str) -> "TokenVerifier":
        """Keys from an identity provider's `jwks_uri`, fetched now and every `refresh` seconds
        (a failed refresh keeps the keys it has)."""
        verifier = TokenVerifier(_fetch_jwks(url), issuer, audience)

        def refresh_loop() -> None:
            while True:
                time.sleep(refresh)
                try:
                    verifier.replace_keys(_fetch_jwks(url))
                except Exception as error:  # noqa: BLE001 - keep the current keys, say why
                    log.warning(
                        "token keys not refreshed; keeping the current ones", extra={"url": url, "error": str(error)}
                    )

        threading.Thread(target=refresh_loop, name="jwks-refresh", daemon=True).start()
        return verifier

    def replace_keys(self, keys: list[_Key]) -> None:
        with self._lock:
            self._keys = keys
            # A token verified with keys since replaced must be verified again.
            self._verified.clear()

    def verify(self, authorization: str) -> Claims:
        """The claims of an `authorization` value (`Bearer <JWT>`); TokenRefusal otherwise."""
        token = None
        for prefix in ("Bearer ", "bearer "):
            if authorization.startswith(prefix):
                token = authorization[len(prefix) :].strip()
        if not token or len(token) > MAX_TOKEN_BYTES:
            raise TokenRefusal(MALFORMED)
        now = int(time.time())
        with self._lock:
            remembered = self._verified.get(token)
            keys = self._keys
        if remembered and remembered[1] + LEEWAY_SECONDS > now:
            return remembered[0]
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as error:
            raise TokenRefusal(MALFORMED) from error
        algorithm, key_id = header.get("alg"), header.get("kid")
        candidates = [
            k for k in keys if k.algorithm == algorithm and (not key_id or not k.key_id or k.key_id == key_id)
        ]
        for candidate in candidates:
            try:
                data = jwt.decode(token, key=candidate.key, algorithms=[candidate.algorithm], options=_SIGNATURE_ONLY)
            except jwt.InvalidSignatureError:
                continue  # another key may have signed it
            except jwt.PyJWTError as error:
                raise TokenRefusal(MALFORMED) from error
            # This key signed it: the claims decide now, in jsonwebtoken's order (the shape,
            # then expiry, issuer, audience).
            claims, issuer, audience, expires = _raw_claims(data)
            if expires < now - LEEWAY_SECONDS:
                raise TokenRefusal(EXPIRED)
            if issuer != self._issuer:
                raise TokenRefusal(WRONG_ISSUER)
            if audience != self._audience:
                raise TokenRefusal(WRONG_AUDIENCE)
            self._remember(token, claims, float(expires), keys)
            return claims
        raise TokenRefusal(BAD_SIGNATURE)

    def _remember(self, token: str, claims: Claims, expires: float, keys: list[_Key]) -> None:
        with self._lock:
            if keys is not self._keys:
                return  # verified with keys since replaced
            self._verified[token] = (claims, expires)
            while len(self._verified) > VERIFIED_TOKENS:
                self._verified.popitem(last=False)


def _raw_claims(data) -> tuple[Claims, str, str, int]:
    """The claims, the issuer, the audience and the expiry, read as src/auth/token.rs reads
    them (`RawClaims`, by serde): `sub`, `iss` and `aud` strings (an `aud` array is refused,
    though RFC 7519 allows one), `exp` and `iat` whole numbers from 0 to 2^64 - 1 (`iat` required,
    its value not checked), `roles` absent or a list of strings; other claims ignored. Anything
    else is TOKEN_MALFORMED, as the Rust services' deserialization error is."""

    def whole(value) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _U64

    if not isinstance(data, dict):
        raise TokenRefusal(MALFORMED)
    roles = data.get("roles", [])
    if (
        not all(isinstance(data.get(name), str) for name in ("sub", "iss", "aud"))
        or not whole(data.get("exp"))
        or not whole(data.get("iat"))
        or not isinstance(roles, list)
        or not all(isinstance(role, str) for role in roles)
    ):
        raise TokenRefusal(MALFORMED)
    return Claims(subject=data["sub"], roles=tuple(roles)), data["iss"], data["aud"], data["exp"]


def _fetch_jwks(url: str) -> list[_Key]:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - an operator's URL
        return parse_keys(response.read(1024 * 1024))


# === the policy ===


@dataclass(frozen=True)
class Caller:
    """Who is calling, as far as the server could establish."""

    workload: str | None = None
    user: Claims | None = None

    @property
    def anonymous(self) -> bool:
        return self.workload is None and self.user is None

    def has_role(self, role: str) -> bool:
        return self.user is not None and role in self.user.roles


@dataclass(frozen=True)
class Decision:
    """What the policy says: `allow`; or allow if the request's `field` is `subject` (the member
    themself); or refuse with `code` (UNAUTHENTICATED, PERMISSION_DENIED) and `reason`."""

    allow: bool = False
    field: str | None = None
    subject: str | None = None
    code: str | None = None
    reason: str | None = None


ALLOW = Decision(allow=True)


class PolicyError(ValueError):
    """A policy that does not load: it stops the service at start, never denies silently."""


@dataclass
class _Rule:
    methods: list[str]
    servers: frozenset[str] | None
    anyone: bool
    workloads: frozenset[str]
    roles: frozenset[str]
    own: tuple[str, str] | None = field(default=None)

    def covers(self, server: str, method: str) -> bool:
        if self.servers is not None and server not in self.servers:
            return False
        for pattern in self.methods:
            if pattern.endswith("/*"):
                if method.startswith(pattern[:-2] + "/"):
                    return True
            elif pattern == method:
                return True
        return False


_RULE_KEYS = {"methods", "servers", "anyone", "workloads", "roles", "self"}


def _strings(value, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise PolicyError(f"{where} must be a list of strings")
    return value


class Policy:
    """The parsed policy file."""

    def __init__(self, rules: list[_Rule]) -> None:
        self._rules = rules

    @staticmethod
    def parse(text: str, method_exists: Callable[[str], bool]) -> "Policy":
        """Parses `text`; every method it names must exist, unknown keys and rules that allow
        nobody are refused."""
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise PolicyError(f"authorization policy: {error}") from error
        unknown = set(document) - {"rule"}
        if unknown:
            raise PolicyError(f"authorization policy: unknown keys {sorted(unknown)}")
        rules = []
        for raw in document.get("rule", []):
            extra = set(raw) - _RULE_KEYS
            if extra:
                raise PolicyError(f"authorization policy: unknown keys {sorted(extra)} in a rule")
            if "methods" not in raw:
                raise PolicyError("authorization policy: a rule without methods")
            methods = _strings(raw["methods"], "methods")
            for method in methods:
                name = method[:-2] if method.endswith("/*") else method
                if not method_exists(name):
                    raise PolicyError(f"authorization policy: `{method}` names no known RPC")
            own = None
            if "self" in raw:
                own_rule = raw["self"]
                if not isinstance(own_rule, dict) or set(own_rule) != {"role", "field"}:
                    raise PolicyError("authorization policy: self must be { role = …, field = … }")
                own = (str(own_rule["role"]), str(own_rule["field"]))
            anyone = raw.get("anyone", False)
            if not isinstance(anyone, bool):
                raise PolicyError("authorization policy: anyone must be true or false")
            rule = _Rule(
                methods=methods,
                servers=frozenset(_strings(raw["servers"], "servers")) if "servers" in raw else None,
                anyone=anyone,
                workloads=frozenset(_strings(raw.get("workloads", []), "workloads")),
                roles=frozenset(_strings(raw.get("roles", []), "roles")),
                own=own,
            )
            if not (rule.anyone or rule.workloads or rule.roles or rule.own):
                raise PolicyError(f"authorization policy: the rule for {methods} allows nobody")
            rules.append(rule)
        return Policy(rules)

    def decide(self, server: str, method: str, caller: Caller) -> Decision:
        """What the policy says about `caller` calling `method` (`package.Service/Method`) on
        `server` — the same order of questions as src/auth/policy.rs."""
        rules = [rule for rule in self._rules if rule.covers(server, method)]
        if any(rule.anyone for rule in rules):
            return ALLOW
        if caller.anonymous:
            return Decision(code="UNAUTHENTICATED", reason="CREDENTIALS_MISSING")
        if not rules:
            return Decision(code="PERMISSION_DENIED", reason="NO_RULE")
        for rule in rules:
            if caller.workload is not None and caller.workload in rule.workloads:
                return ALLOW
            if any(caller.has_role(role) for role in rule.roles):
                return ALLOW
        for rule in rules:
            if rule.own and caller.has_role(rule.own[0]) and caller.user is not None:
                return Decision(field=rule.own[1], subject=caller.user.subject)
        return Decision(code="PERMISSION_DENIED", reason="POLICY_DENIED")


# === the RPCs this platform knows ===

STANDARD_METHODS = frozenset(
    {
        "grpc.health.v1.Health/Check",
        "grpc.health.v1.Health/Watch",
        "grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    }
)


def _contract_methods() -> frozenset[str]:
    """Every `package.Service/Method` of the contracts in proto/ (the generated modules)."""
    import bookmesh  # the generated package

    methods = set()
    for module in pkgutil.walk_packages(bookmesh.__path__, "bookmesh."):
        if not module.name.endswith("_pb2"):
            continue
        descriptor = importlib.import_module(module.name).DESCRIPTOR
        for service in descriptor.services_by_name.values():
            for method in service.methods:
                methods.add(f"{service.full_name}/{method.name}")
    return frozenset(methods)


_KNOWN: frozenset[str] | None = None


def known_methods() -> frozenset[str]:
    global _KNOWN
    if _KNOWN is None:
        _KNOWN = STANDARD_METHODS | _contract_methods()
    return _KNOWN


def is_known(name: str) -> bool:
    """Whether `name` (`package.Service` or `package.Service/Method`) is an RPC of the platform:
    what makes a metric label or a span name safe to use."""
    if "/" in name:
        return name in known_methods()
    return any(method.startswith(name + "/") for method in known_methods())


# === the authorizer ===


class Authorizer:
    """Decides every call on this server: the policy, and the keys that prove users."""

    def __init__(self, server: str, own: SpiffeId, policy: Policy, tokens: TokenVerifier) -> None:
        self.server = server
        self._own = own
        self._policy = policy
        self._tokens = tokens

    def identify(self, peer: PeerInfo | None, authorization: str | None) -> Caller:
        """The caller: its workload (a certificate of this trust domain and namespace) and its
        user (a valid token). A token that does not verify raises TokenRefusal."""
        workload = None
        if peer is not None and peer.workload is not None:
            if (peer.workload.trust_domain, peer.workload.namespace) == (self._own.trust_domain, self._own.namespace):
                workload = peer.workload.workload
        user = self._tokens.verify(authorization) if authorization is not None else None
        return Caller(workload=workload, user=user)

    def decide(self, method: str, caller: Caller) -> Decision:
        return self._policy.decide(self.server, method, caller)

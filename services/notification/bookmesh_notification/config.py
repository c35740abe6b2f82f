"""Settings from the environment, with the same variable names and defaults as the Rust
services (src/config.rs) where they exist, and this service's own beside them.

Defaults are written once, in `Config`'s fields; `Config.from_env` reads a mapping (the process
environment by default) so tests pass their own.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

#: The workload name: certificates (`<pki>/notification.crt`), the policy's `servers`, the
#: consumer's name on feeds and JetStream, `service.name` in traces.
WORKLOAD = "notification"

#: The repository's own policy file, the default of BOOKMESH_AUTHZ_POLICY (the Rust binaries
#: build the same file in).
REPOSITORY = Path(__file__).resolve().parents[3]
DEFAULT_POLICY = REPOSITORY / "policy" / "authorization.toml"


class ConfigError(ValueError):
    """A variable that does not parse; the message names it."""


_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """`250ms`, `10s`, `2m`, `1h` or `7d` in seconds, as the Rust services parse them."""
    match = _DURATION.match(text.strip())
    if not match:
        raise ValueError(f"`{text}` is not a duration (a number and ms, s, m, h or d)")
    return int(match.group(1)) * _UNITS[match.group(2)]


def parse_bool(text: str) -> bool:
    """clap's spelling of booleans: true/false, yes/no, on/off, 1/0."""
    value = text.strip().lower()
    if value in ("true", "yes", "on", "1"):
        return True
    if value in ("false", "no", "off", "0", ""):
        return False
    raise ValueError(f"`{text}` is not a boolean (true or false)")


def parse_address(text: str) -> tuple[str, int]:
    """`host:port` (`[::1]:port` for IPv6)."""
    host, separator, port = text.strip().rpartition(":")
    if not separator or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"`{text}` is not host:port")
    return host.strip("[]"), int(port)


def parse_endpoints(text: str) -> tuple[str, ...]:
    """A comma-separated list of `http://host:port` (or `host:port`), as gRPC targets."""
    targets = []
    for raw in text.split(","):
        raw = raw.strip()
        if not raw:
            continue
        target = re.sub(r"^https?://", "", raw).rstrip("/")
        parse_address(target)
        targets.append(target)
    if not targets:
        raise ValueError("no endpoint given")
    return tuple(targets)


def mask_url_password(url: str) -> str:
    """`redis://user:****@host` for `redis://user:secret@host`, so a URL can be logged."""
    scheme, separator, rest = url.partition("://")
    if not separator or "@" not in rest:
        return url
    credentials, _, host = rest.rpartition("@")
    if ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:****@{host}"


@dataclass(frozen=True)
class Config:
    """Everything the service reads from its environment."""

    # gRPC and admin ports.
    listen: tuple[str, int] = ("0.0.0.0", 50055)
    admin_listen: tuple[str, int] | None = None
    # Storage.
    data_dir: Path = Path("data")
    store: str = "sqlite"
    redis_url: str = "redis://127.0.0.1:6379/0"
    redis_prefix: str = "bookmesh:notification:"
    # Events in.
    rental_endpoints: tuple[str, ...] = ("127.0.0.1:50053",)
    event_transport: str = "feed"
    nats_url: str = "nats://127.0.0.1:4222"
    nats_prefix: str = "bookmesh"
    nats_ca: Path | None = None
    nats_replica_consumer: str | None = None
    inbox_retention: float = 7 * 86400.0
    prune_interval: float = 600.0
    # Bounds on what is kept (Redis runs with `noeviction`: what is never deleted fills it).
    notice_retention: float = 90 * 86400.0
    max_notices_per_member: int = 200
    reminder_interval: float = 60.0
    # Identity and authorization.
    pki_dir: Path = Path("data/pki")
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    tls_reload_interval: float = 10.0
    trust_domain: str = "bookmesh.local"
    namespace: str = "bookmesh"
    insecure_plaintext: bool = False
    token_keys: Path | None = None
    token_jwks_url: str | None = None
    token_keys_refresh: float = 600.0
    token_issuer: str = "bookmesh-dev"
    token_audience: str = "bookmesh"
    authz_policy: Path = DEFAULT_POLICY
    # The server runtime.
    log_format: str = "auto"
    log_level: str = "INFO"
    max_message_bytes: int = 1024 * 1024
    request_timeout: float = 10.0
    max_concurrent_streams: int = 256
    max_concurrent_requests: int = 512
    max_connections: int = 1024
    max_header_list_bytes: int = 16 * 1024
    max_connection_age: float = 300.0
    keepalive_interval: float = 30.0
    min_ping_interval: float = 10.0
    drain_delay: float = 0.0
    shutdown_grace: float = 20.0
    readiness_interval: float = 5.0
    max_notice_watchers: int = 256

    @property
    def certificate(self) -> Path:
        return self.tls_cert or self.pki_dir / f"{WORKLOAD}.crt"

    @property
    def private_key(self) -> Path:
        return self.tls_key or self.pki_dir / f"{WORKLOAD}.key"

    @property
    def authorities(self) -> Path:
        return self.tls_ca or self.pki_dir / "ca.crt"

    @property
    def token_key_file(self) -> Path:
        return self.token_keys or self.pki_dir / "jwt.pub"

    @property
    def sqlite_path(self) -> Path:
        return self.data_dir / f"{WORKLOAD}.db"

    def described(self) -> dict[str, object]:
        """The settings as logged at start, passwords masked."""
        described = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if item.name in ("redis_url", "nats_url"):
                value = mask_url_password(value)
            elif isinstance(value, Path):
                value = str(value)
            described[item.name] = value
        return described

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Config":
        """Reads `env` (default: the process environment); unset or empty variables keep the
        default. Raises ConfigError naming every variable that does not parse."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        errors: list[str] = []
        for name, (variable, parse) in _VARIABLES.items():
            raw = env.get(variable)
            if raw is None or raw.strip() == "":
                continue
            try:
                values[name] = parse(raw)
            except ValueError as error:
                errors.append(f"{variable}: {error}")
        if errors:
            raise ConfigError("; ".join(errors))
        config = cls(**values)
        if config.notice_retention < config.inbox_retention:
            # A notice's id stops a replayed event from writing it twice only while the notice
            # is kept; the inbox stops replays only for its own retention.
            raise ConfigError(
                "BOOKMESH_NOTICE_RETENTION: must be at least BOOKMESH_INBOX_RETENTION (an event may be "
                "delivered again that long)"
            )
        return config


def _choice(*allowed: str, aliases: Mapping[str, str] | None = None):
    def parse(text: str) -> str:
        value = text.strip().lower()
        value = (aliases or {}).get(value, value)
        if value not in allowed:
            raise ValueError(f"`{text}` is not one of {', '.join(allowed)}")
        return value

    return parse


def _positive_int(text: str) -> int:
    value = int(text.strip())
    if value <= 0:
        raise ValueError(f"`{text}` must be positive")
    return value


def _positive_duration(text: str) -> float:
    value = parse_duration(text)
    if value <= 0:
        raise ValueError(f"`{text}` must be longer than 0")
    return value


def _path(text: str) -> Path:
    return Path(text.strip())


def _text(text: str) -> str:
    return text.strip()


def _log_level(text: str) -> str:
    value = text.strip().upper()
    if value not in ("DEBUG", "INFO", "WARNING", "WARN", "ERROR"):
        raise ValueError(f"`{text}` is not debug, info, warning or error")
    return "WARNING" if value == "WARN" else value


# Field name → (environment variable, parser). The Rust services' names where they have one.
_VARIABLES = {
    "listen": ("BOOKMESH_LISTEN", parse_address),
    "admin_listen": ("BOOKMESH_ADMIN_LISTEN", parse_address),
    "data_dir": ("BOOKMESH_DATA_DIR", _path),
    "store": ("BOOKMESH_NOTIFICATION_STORE", _choice("sqlite", "redis")),
    "redis_url": ("BOOKMESH_REDIS_URL", _text),
    "redis_prefix": ("BOOKMESH_REDIS_PREFIX", _text),
    "rental_endpoints": ("BOOKMESH_RENTAL_ENDPOINTS", parse_endpoints),
    # `feed` is the Rust services' name for the gRPC event feed; `grpc` is accepted too.
    "event_transport": ("BOOKMESH_EVENT_TRANSPORT", _choice("feed", "nats", aliases={"grpc": "feed"})),
    "nats_url": ("BOOKMESH_NATS_URL", _text),
    "nats_prefix": ("BOOKMESH_NATS_PREFIX", _text),
    "nats_ca": ("BOOKMESH_NATS_CA", _path),
    "nats_replica_consumer": ("BOOKMESH_NATS_REPLICA_CONSUMER", _text),
    "inbox_retention": ("BOOKMESH_INBOX_RETENTION", _positive_duration),
    "prune_interval": ("BOOKMESH_PRUNE_INTERVAL", parse_duration),
    "notice_retention": ("BOOKMESH_NOTICE_RETENTION", _positive_duration),
    "max_notices_per_member": ("BOOKMESH_MAX_NOTICES_PER_MEMBER", _positive_int),
    "reminder_interval": ("BOOKMESH_REMINDER_INTERVAL", _positive_duration),
    "pki_dir": ("BOOKMESH_PKI_DIR", _path),
    "tls_cert": ("BOOKMESH_TLS_CERT", _path),
    "tls_key": ("BOOKMESH_TLS_KEY", _path),
    "tls_ca": ("BOOKMESH_TLS_CA", _path),
    "tls_reload_interval": ("BOOKMESH_TLS_RELOAD_INTERVAL", _positive_duration),
    "trust_domain": ("BOOKMESH_TRUST_DOMAIN", _text),
    "namespace": ("BOOKMESH_NAMESPACE", _text),
    "insecure_plaintext": ("BOOKMESH_INSECURE_PLAINTEXT", parse_bool),
    "token_keys": ("BOOKMESH_TOKEN_KEYS", _path),
    "token_jwks_url": ("BOOKMESH_TOKEN_JWKS_URL", _text),
    "token_keys_refresh": ("BOOKMESH_TOKEN_KEYS_REFRESH", _positive_duration),
    "token_issuer": ("BOOKMESH_TOKEN_ISSUER", _text),
    "token_audience": ("BOOKMESH_TOKEN_AUDIENCE", _text),
    "authz_policy": ("BOOKMESH_AUTHZ_POLICY", _path),
    "log_format": ("BOOKMESH_LOG_FORMAT", _choice("auto", "pretty", "json")),
    "log_level": ("BOOKMESH_LOG_LEVEL", _log_level),
    "max_message_bytes": ("BOOKMESH_MAX_MESSAGE_BYTES", _positive_int),
    "request_timeout": ("BOOKMESH_REQUEST_TIMEOUT", _positive_duration),
    "max_concurrent_streams": ("BOOKMESH_MAX_CONCURRENT_STREAMS", _positive_int),
    "max_concurrent_requests": ("BOOKMESH_MAX_CONCURRENT_REQUESTS", _positive_int),
    "max_connections": ("BOOKMESH_MAX_CONNECTIONS", _positive_int),
    "max_header_list_bytes": ("BOOKMESH_MAX_HEADER_LIST_BYTES", _positive_int),
    "max_connection_age": ("BOOKMESH_MAX_CONNECTION_AGE", parse_duration),
    "keepalive_interval": ("BOOKMESH_KEEPALIVE_INTERVAL", _positive_duration),
    "min_ping_interval": ("BOOKMESH_MIN_PING_INTERVAL", _positive_duration),
    "drain_delay": ("BOOKMESH_DRAIN_DELAY", parse_duration),
    "shutdown_grace": ("BOOKMESH_SHUTDOWN_GRACE", parse_duration),
    "readiness_interval": ("BOOKMESH_READINESS_INTERVAL", _positive_duration),
    "max_notice_watchers": ("BOOKMESH_MAX_NOTICE_WATCHERS", _positive_int),
}

# Every field has its variable: a new setting cannot be forgotten here.
assert set(_VARIABLES) == {f.name for f in dataclasses.fields(Config)}, "config fields and variables differ"

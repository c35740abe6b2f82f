"""User tokens as `make -s token` (tools/token) signs them: EdDSA with the PKI's jwt.key,
issuer `bookmesh-dev`, audience `bookmesh`, `sub` and `roles`."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization


def token(
    pki: Path,
    role: str,
    subject: str | None = None,
    *,
    lifetime: int = 3600,
    issuer: str = "bookmesh-dev",
    audience: str = "bookmesh",
    key_file: str = "jwt.key",
) -> str:
    key = serialization.load_pem_private_key((Path(pki) / key_file).read_bytes(), password=None)
    now = int(time.time())
    claims = {
        "sub": subject or f"{role}-user",
        "roles": [role],
        "iss": issuer,
        "aud": audience,
        "iat": now,
        "exp": now + lifetime,
    }
    return jwt.encode(claims, key, algorithm="EdDSA")

"""A local PKI shaped like src/identity/pki.rs makes it: an ECDSA P-256 authority, and per
workload a certificate whose URI SAN is its SPIFFE ID (DNS SANs `localhost`, the workload's
name and its Kubernetes names, IP SANs for loopback), for server and client use; and the
development token key pair `jwt.key` / `jwt.pub` (Ed25519)."""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TRUST_DOMAIN = "bookmesh.local"
NAMESPACE = "bookmesh"


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def make_authority(directory: Path, trust_domain: str = TRUST_DOMAIN) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"bookmesh CA {trust_domain}")])
    now = datetime.now(timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    _write(directory / "ca.crt", certificate.public_bytes(serialization.Encoding.PEM))
    _write(directory / "ca.key", _key_pem(key), private=True)


def issue(
    directory: Path,
    workload: str,
    *,
    trust_domain: str = TRUST_DOMAIN,
    namespace: str = NAMESPACE,
    valid_days: float = 90,
    not_before: datetime | None = None,
    authority: Path | None = None,
) -> None:
    """`<directory>/<workload>.crt` and `.key`, signed by the authority in `authority`
    (default: `directory`)."""
    authority = authority or directory
    ca_key = serialization.load_pem_private_key((authority / "ca.key").read_bytes(), password=None)
    ca_certificate = x509.load_pem_x509_certificate((authority / "ca.crt").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    start = not_before or datetime.now(timezone.utc) - timedelta(minutes=5)
    names = [
        x509.DNSName("localhost"),
        x509.DNSName(workload),
        x509.DNSName(f"{workload}.{namespace}"),
        x509.DNSName(f"{workload}.{namespace}.svc"),
        x509.DNSName(f"{workload}.{namespace}.svc.cluster.local"),
        x509.UniformResourceIdentifier(f"spiffe://{trust_domain}/ns/{namespace}/sa/{workload}"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, workload)]))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=valid_days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        .add_extension(x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    _write(directory / f"{workload}.key", _key_pem(key), private=True)
    _write(directory / f"{workload}.crt", certificate.public_bytes(serialization.Encoding.PEM))


def make_token_keys(directory: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    _write(directory / "jwt.key", _key_pem(key), private=True)
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    _write(directory / "jwt.pub", public)


def make_pki(directory: Path, workloads: list[str]) -> Path:
    """A whole local PKI in `directory`."""
    make_authority(directory)
    for workload in workloads:
        issue(directory, workload)
    make_token_keys(directory)
    return directory

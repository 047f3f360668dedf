"""TLS contexts: the one dbward shows clients, and the ones it uses towards targets."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from dbward.domain import TlsMode
from dbward.errors import ConfigError


def generate_self_signed(cert_path: Path, key_path: Path, hostname: str = "localhost") -> None:
    """A self-signed certificate for clients, so TLS works out of the box (replace in production)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"dbward {hostname}")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=825))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(hostname), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def server_context(cert: Path | None, key: Path | None, data_dir: Path) -> ssl.SSLContext:
    """The context for client-facing TLS: the configured certificate, or one generated once."""
    if cert is None or key is None:
        cert = data_dir / "tls" / "proxy-cert.pem"
        key = data_dir / "tls" / "proxy-key.pem"
        if not cert.exists() or not key.exists():
            generate_self_signed(cert, key)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"proxy.tls_cert / proxy.tls_key ({cert}, {key}) cannot be loaded: {exc}") from exc
    return ctx


def client_context(mode: TlsMode, ca_pem: str | None = None) -> ssl.SSLContext | None:
    """The context dbward uses towards a target, per the connection's tls_mode."""
    if mode is TlsMode.DISABLE:
        return None
    ctx = ssl.create_default_context()
    if ca_pem:
        ctx.load_verify_locations(cadata=ca_pem)
    if mode in (TlsMode.PREFER, TlsMode.REQUIRE):
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif mode is TlsMode.VERIFY_CA:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx

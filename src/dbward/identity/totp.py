"""TOTP two-factor sign-in (RFC 6238 via pyotp) and single-use recovery codes.

Codes are accepted one step either side of now, and never twice: the last accepted time step
is stored and only later steps pass, so a code seen over someone's shoulder is worthless.
Recovery codes are random (60 bits) and kept as SHA-256 hashes.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

import pyotp

ISSUER = "dbward"
RECOVERY_CODES = 10
_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, username: str, issuer: str = ISSUER) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=username, issuer_name=issuer)


def provisioning_qr_svg(uri: str, scale: int = 4) -> str:
    """The provisioning URI as an inline SVG QR code (for the enrolment page; no image request,
    so the console's content security policy stays strict)."""
    import segno

    qr = segno.make(uri, error="m", micro=False)
    svg: str = qr.svg_inline(
        scale=scale,
        border=4,
        dark="#000",
        light="#fff",
        svgclass="totp-qr",
        svgid="totp-qr",
        title="QR code of your two-factor key: scan it with your authenticator app",
    )
    return svg


def check_code(secret: str, code: str, last_step: int, now: float | None = None) -> int | None:
    """The time step ``code`` belongs to if it is valid and newer than ``last_step``, else None."""
    code = code.strip().replace(" ", "")
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret)
    step = int((now if now is not None else time.time()) // totp.interval)
    for candidate in (step - 1, step, step + 1):
        if candidate > last_step and hmac.compare_digest(totp.at(candidate * totp.interval), code):
            return candidate
    return None


def new_recovery_codes(n: int = RECOVERY_CODES) -> list[str]:
    out = []
    for _ in range(n):
        raw = "".join(secrets.choice(_ALPHABET) for _ in range(12))
        out.append(f"{raw[:4]}-{raw[4:8]}-{raw[8:]}")
    return out


def hash_recovery_code(code: str) -> str:
    norm = code.strip().lower().replace(" ", "").replace("-", "")
    return hashlib.sha256(norm.encode()).hexdigest()

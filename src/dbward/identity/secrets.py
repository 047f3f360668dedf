"""Verifiers derived from a secret (a password or a proxy token).

One secret yields one verifier per protocol that must check it without seeing it:

- argon2id, for the console, the API and cleartext passwords received over TLS;
- SCRAM-SHA-256 (RFC 7677 / PostgreSQL), salted and iterated;
- MySQL ``mysql_native_password``: SHA1(SHA1(secret));
- MySQL ``caching_sha2_password`` fast path: SHA256(SHA256(secret)).

The two MySQL verifiers are what a MySQL server itself keeps; they are unsalted, so the
store keeps the whole verifier set encrypted at rest (see ``store/crypto.py``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets as _secrets
from dataclasses import asdict, dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

SCRAM_ITERATIONS = 4096
_hasher = PasswordHasher()


@dataclass(frozen=True, kw_only=True)
class ScramVerifier:
    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int


@dataclass(frozen=True, kw_only=True)
class SecretVerifiers:
    argon2: str
    scram: ScramVerifier
    mysql_native: bytes  # SHA1(SHA1(secret))
    mysql_sha2: bytes  # SHA256(SHA256(secret))

    def to_json(self) -> str:
        d = asdict(self)
        d["scram"] = {
            "salt": base64.b64encode(self.scram.salt).decode(),
            "stored_key": base64.b64encode(self.scram.stored_key).decode(),
            "server_key": base64.b64encode(self.scram.server_key).decode(),
            "iterations": self.scram.iterations,
        }
        d["mysql_native"] = self.mysql_native.hex()
        d["mysql_sha2"] = self.mysql_sha2.hex()
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> SecretVerifiers:
        d = json.loads(text)
        s = d["scram"]
        return cls(
            argon2=d["argon2"],
            scram=ScramVerifier(
                salt=base64.b64decode(s["salt"]),
                stored_key=base64.b64decode(s["stored_key"]),
                server_key=base64.b64decode(s["server_key"]),
                iterations=int(s["iterations"]),
            ),
            mysql_native=bytes.fromhex(d["mysql_native"]),
            mysql_sha2=bytes.fromhex(d["mysql_sha2"]),
        )


def scram_verifier(
    secret: str, *, salt: bytes | None = None, iterations: int = SCRAM_ITERATIONS
) -> ScramVerifier:
    salt = salt if salt is not None else _secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", secret.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
    return ScramVerifier(salt=salt, stored_key=stored_key, server_key=server_key, iterations=iterations)


def verify_scram_secret(verifier: ScramVerifier, secret: str) -> bool:
    """Whether ``secret`` is the one ``verifier`` was made from (a cleartext password received
    over TLS). Costs one PBKDF2 of the verifier's iterations, a few milliseconds, where argon2
    costs a hundred: and it is no weaker, since the verifier alone already lets a client in
    through SCRAM."""
    salted = hashlib.pbkdf2_hmac("sha256", secret.encode(), verifier.salt, verifier.iterations)
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return hmac.compare_digest(hashlib.sha256(client_key).digest(), verifier.stored_key)


def make_verifiers(secret: str) -> SecretVerifiers:
    raw = secret.encode()
    return SecretVerifiers(
        argon2=_hasher.hash(secret),
        scram=scram_verifier(secret),
        mysql_native=hashlib.sha1(hashlib.sha1(raw).digest()).digest(),
        mysql_sha2=hashlib.sha256(hashlib.sha256(raw).digest()).digest(),
    )


def hash_password(secret: str) -> str:
    return _hasher.hash(secret)


def verify_argon2(hash_: str, secret: str) -> bool:
    try:
        return _hasher.verify(hash_, secret)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def new_token(prefix: str = "dbw") -> str:
    """A random secret that a user pastes as a password; the prefix makes leaks greppable."""
    return f"{prefix}_{_secrets.token_urlsafe(32)}"


def new_password(length: int = 20) -> str:
    return _secrets.token_urlsafe(length)[:length]

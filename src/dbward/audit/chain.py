"""Hash chain and signed checkpoints: the integrity half of the audit trail.

Each record is one line of canonical JSON (sorted keys, compact separators, UTF-8) holding
``chain`` (the journal's id), ``seq`` (1, 2, 3, ... within the chain), ``prev`` (the SHA-256
hex of the previous record's line, or 64 zeros for the first) and the event's fields. The
hash of a record is the SHA-256 of its canonical line, so any edit, deletion, insertion or
reordering breaks the link to the next record.

A checkpoint is itself a chained record (type ``audit.checkpoint``) carrying an Ed25519
signature over ``chain|seq|hash`` of the record before it. Forging one needs the signing key;
truncating the trail behind a checkpoint is visible because the checkpoint names what came
before it. Counterpart: ``audit/verify.py``.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dbward.errors import ConfigError

GENESIS = "0" * 64
CHECKPOINT_TYPE = "audit.checkpoint"


_CANONICAL = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def canonical(obj: dict[str, Any]) -> str:
    """Sorted keys, no whitespace, UTF-8. The hash covers the stored line itself, so readers
    never need to re-serialise; orjson only makes writing cheap (about 1 us an event)."""
    return orjson.dumps(obj, option=_CANONICAL, default=str).decode()


def canonical_bytes(obj: dict[str, Any]) -> bytes:
    """:func:`canonical` as the UTF-8 bytes written to the journal (no decoding and encoding
    again on the journal's hot path)."""
    return orjson.dumps(obj, option=_CANONICAL, default=str)


def record_hash(line: str) -> str:
    return hashlib.sha256(line.encode()).hexdigest()


def record_hash_bytes(line: bytes) -> str:
    """:func:`record_hash` of a line already encoded."""
    return hashlib.sha256(line).hexdigest()


def checkpoint_message(chain: str, seq: int, hash_: str) -> bytes:
    return f"dbward-audit-checkpoint|{chain}|{seq}|{hash_}".encode()


class Signer:
    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._key.public_key()

    def key_id(self) -> str:
        return public_key_id(self.public_key)

    def sign(self, chain: str, seq: int, hash_: str) -> str:
        return base64.b64encode(self._key.sign(checkpoint_message(chain, seq, hash_))).decode()


def public_key_id(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def verify_signature(key: Ed25519PublicKey, chain: str, seq: int, hash_: str, sig: str) -> bool:
    try:
        key.verify(base64.b64decode(sig), checkpoint_message(chain, seq, hash_))
    except (InvalidSignature, ValueError):
        return False
    return True


def generate_signing_key(path: Path) -> Ed25519PrivateKey:
    key = Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path.with_name(path.stem + ".pub").write_bytes(pub)
    return key


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise ConfigError(f"the audit signing key {path} does not exist; run `dbward init`") from exc
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"the audit signing key {path} is not a PEM Ed25519 private key") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"the audit signing key {path} is not an Ed25519 key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    data = path.read_bytes()
    try:
        if b"PRIVATE KEY" in data:
            priv = serialization.load_pem_private_key(data, password=None)
            if not isinstance(priv, Ed25519PrivateKey):
                raise ConfigError(f"{path} is not an Ed25519 key")
            return priv.public_key()
        key = serialization.load_pem_public_key(data)
    except ValueError as exc:
        raise ConfigError(f"{path} is not a PEM Ed25519 key") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path} is not an Ed25519 public key")
    return key

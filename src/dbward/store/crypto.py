"""Encryption of secrets at rest (target credentials, protocol verifiers).

Fernet (AES-128-CBC + HMAC-SHA256) from ``cryptography`` with a key read from the setting
``encryption_key`` or the key file in the data directory. Values are stored as ``fernet:<token>``
so that a later key rotation can tell old from new.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from dbward.errors import ConfigError

PREFIX = "fernet:"


class SecretBox:
    def __init__(self, key: bytes) -> None:
        self._key = key
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                "the encryption key is not a valid Fernet key (32 bytes, url-safe base64); "
                "set encryption_key or point encryption_key_file at the key `dbward init` wrote"
            ) from exc

    def derive_key(self, purpose: str) -> bytes:
        """A 32-byte key for ``purpose`` derived from the encryption key (HMAC-SHA256), so
        that one configured secret serves several uses without reusing the key itself."""
        import hashlib
        import hmac

        return hmac.new(self._key, b"dbward/" + purpose.encode(), hashlib.sha256).digest()

    def encrypt(self, plaintext: str) -> str:
        return PREFIX + self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, stored: str) -> str:
        if not stored.startswith(PREFIX):
            raise ConfigError("a stored secret is not in the expected encrypted format")
        try:
            return self._fernet.decrypt(stored[len(PREFIX) :].encode()).decode()
        except InvalidToken as exc:
            raise ConfigError(
                "a stored secret cannot be decrypted with the configured encryption key; "
                "check encryption_key / encryption_key_file"
            ) from exc


def generate_key() -> bytes:
    return Fernet.generate_key()


def write_key_file(path: Path) -> bytes:
    key = generate_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    return key


def load_key(setting: str | None, path: Path) -> bytes:
    if setting:
        return setting.encode()
    try:
        return path.read_bytes().strip()
    except FileNotFoundError as exc:
        raise ConfigError(
            f"the encryption key file {path} does not exist; run `dbward init` or set encryption_key"
        ) from exc
    except PermissionError as exc:
        raise ConfigError(f"the encryption key file {path} cannot be read (permission denied)") from exc

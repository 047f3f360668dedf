"""Authentication math of the MySQL protocol, for both roles dbward plays.

Towards the client dbward is the server: it checks scrambles against its own verifiers (see
``proxy/engine.py``'s ``verify_mysql_*``) and decrypts caching_sha2_password's RSA full
authentication. Towards the target dbward is the client: it computes scrambles from the
vaulted password.

- mysql_native_password (https://dev.mysql.com/doc/dev/mysql-server/latest/page_protocol_connection_phase_authentication_methods_native_password_authentication.html):
  SHA1(password) XOR SHA1(nonce + SHA1(SHA1(password)))
- caching_sha2_password (https://dev.mysql.com/doc/dev/mysql-server/latest/page_caching_sha2_authentication_exchanges.html):
  fast path SHA256(password) XOR SHA256(SHA256(SHA256(password)) + nonce); full path sends
  the password in clear over TLS, or RSA-OAEP encrypted (password + NUL XOR nonce) otherwise.
"""

from __future__ import annotations

import hashlib
import secrets
import string

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

NATIVE = "mysql_native_password"
CACHING_SHA2 = "caching_sha2_password"
SHA256 = "sha256_password"
CLEAR = "mysql_clear_password"
ED25519 = "client_ed25519"

#: caching_sha2_password's AuthMoreData codes
FAST_AUTH_SUCCESS = b"\x03"
PERFORM_FULL_AUTHENTICATION = b"\x04"
REQUEST_PUBLIC_KEY = b"\x02"

_NONCE_ALPHABET = (string.ascii_letters + string.digits).encode()


def new_nonce(n: int = 20) -> bytes:
    """A scramble as servers make them: printable, no NUL (clients read it NUL-terminated)."""
    return bytes(secrets.choice(_NONCE_ALPHABET) for _ in range(n))


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def scramble_native(password: bytes, nonce: bytes) -> bytes:
    if not password:
        return b""
    h1 = hashlib.sha1(password).digest()
    h2 = hashlib.sha1(h1).digest()
    return _xor(h1, hashlib.sha1(nonce[:20] + h2).digest())


def scramble_caching_sha2(password: bytes, nonce: bytes) -> bytes:
    if not password:
        return b""
    p1 = hashlib.sha256(password).digest()
    p2 = hashlib.sha256(p1).digest()
    return _xor(p1, hashlib.sha256(p2 + nonce[:20]).digest())


def _xor_cycle(data: bytes, nonce: bytes) -> bytes:
    return bytes(b ^ nonce[i % len(nonce)] for i, b in enumerate(data))


def rsa_encrypt_password(password: bytes, nonce: bytes, public_key_pem: bytes) -> bytes:
    """The client side of RSA full authentication (OAEP with SHA-1, as MySQL 8 servers expect)."""
    key = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("the server's public key is not an RSA key")
    oaep = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
    return key.encrypt(_xor_cycle(password + b"\x00", nonce[:20]), oaep)


class RsaKeyPair:
    """The key pair dbward offers clients for caching_sha2_password full authentication without TLS."""

    def __init__(self) -> None:
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.public_pem = self._key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def decrypt_password(self, data: bytes, nonce: bytes) -> bytes:
        """The cleartext password a client sent RSA-encrypted (raises ValueError when invalid)."""
        oaep = padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
        plain = _xor_cycle(self._key.decrypt(data, oaep), nonce[:20])
        return plain.split(b"\x00", 1)[0]

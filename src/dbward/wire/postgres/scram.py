"""SCRAM-SHA-256 as a server (towards clients) and md5 as a client (towards targets).

Server side, RFC 5802 section 3 and RFC 7677, as PostgreSQL speaks it
(https://www.postgresql.org/docs/current/sasl-authentication.html):

    client-first   gs2-header "n,," | "y,," | "p=<cb>,,"  then  "n=<user>,r=<cnonce>"
    server-first   "r=<cnonce><snonce>,s=<base64 salt>,i=<iterations>"
    client-final   "c=<base64 gs2-header>,r=<nonce>,p=<base64 ClientProof>"
    server-final   "v=<base64 ServerSignature>"

    AuthMessage     = client-first-bare "," server-first "," client-final-without-proof
    ClientSignature = HMAC(StoredKey, AuthMessage);  ClientKey = ClientProof XOR ClientSignature
    the proof is right when H(ClientKey) == StoredKey;  ServerSignature = HMAC(ServerKey, AuthMessage)

PostgreSQL ignores the user name in client-first (libpq sends it empty; the user comes from
the StartupMessage), which is why scramp's server role cannot be used here. dbward never
offers SCRAM-SHA-256-PLUS: it asks for a cleartext password over TLS instead, so a client
asking for channel binding is refused with a clear error.
Counterpart: ``proxy/postgres_upstream.py`` (the client side towards targets).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from dbward.wire.postgres.messages import WireError

MECHANISM = "SCRAM-SHA-256"


class ScramError(WireError):
    """The client's SCRAM messages are malformed or ask for something dbward does not offer."""


def _attrs(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in text.split(","):
        if len(part) < 2 or part[1] != "=":
            raise ScramError("a SCRAM attribute is malformed")
        out[part[0]] = part[2:]
    return out


@dataclass
class ScramServer:
    """One server-side exchange against a stored verifier (salt, StoredKey, ServerKey, iterations)."""

    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int
    _nonce: str = ""
    _client_first_bare: str = ""
    _server_first: str = ""
    _gs2: str = ""

    def first(self, mechanism: str, client_first: bytes) -> bytes:
        """Handle SASLInitialResponse; return the server-first-message."""
        if mechanism != MECHANISM:
            raise ScramError(
                f"SASL mechanism {mechanism} is not offered; dbward offers {MECHANISM} only "
                "(channel binding is not used because dbward asks for the password over TLS)"
            )
        try:
            text = client_first.decode("utf-8")
        except UnicodeDecodeError:
            raise ScramError("the SCRAM client-first-message is not UTF-8") from None
        parts = text.split(",", 2)
        if len(parts) != 3:
            raise ScramError("the SCRAM client-first-message is malformed")
        cbind, authzid, bare = parts
        if cbind.startswith("p="):
            raise ScramError("the client requires SCRAM channel binding, which dbward does not offer")
        if cbind not in ("n", "y") or authzid not in ("",):
            raise ScramError("the SCRAM client-first-message has an unsupported GS2 header")
        attrs = _attrs(bare)
        if "m" in attrs or "r" not in attrs or not attrs["r"]:
            raise ScramError("the SCRAM client-first-message has no nonce")
        self._gs2 = f"{cbind},{authzid},"
        self._client_first_bare = bare
        self._nonce = attrs["r"] + base64.b64encode(secrets.token_bytes(18)).decode()
        self._server_first = f"r={self._nonce},s={base64.b64encode(self.salt).decode()},i={self.iterations}"
        return self._server_first.encode()

    def final(self, client_final: bytes) -> bytes | None:
        """Handle SASLResponse; return server-final-message, or None when the proof is wrong."""
        try:
            text = client_final.decode("utf-8")
        except UnicodeDecodeError:
            raise ScramError("the SCRAM client-final-message is not UTF-8") from None
        without_proof, sep, proof_part = text.rpartition(",p=")
        if not sep:
            raise ScramError("the SCRAM client-final-message has no proof")
        attrs = _attrs(without_proof)
        if attrs.get("c") != base64.b64encode(self._gs2.encode()).decode():
            raise ScramError("the SCRAM channel-binding attribute does not match the GS2 header")
        if attrs.get("r") != self._nonce:
            raise ScramError("the SCRAM nonce does not match")
        try:
            proof = base64.b64decode(proof_part, validate=True)
        except ValueError:
            raise ScramError("the SCRAM proof is not base64") from None
        if len(proof) != 32:
            return None
        auth_message = f"{self._client_first_bare},{self._server_first},{without_proof}".encode()
        signature = hmac.new(self.stored_key, auth_message, hashlib.sha256).digest()
        client_key = bytes(a ^ b for a, b in zip(proof, signature, strict=True))
        if not hmac.compare_digest(hashlib.sha256(client_key).digest(), self.stored_key):
            return None
        server_sig = hmac.new(self.server_key, auth_message, hashlib.sha256).digest()
        return b"v=" + base64.b64encode(server_sig)


def md5_password(user: str, password: str, salt: bytes) -> str:
    """The md5 response PostgreSQL expects: "md5" + md5(md5(password + user) + salt)."""
    inner = hashlib.md5((password + user).encode()).hexdigest()
    return "md5" + hashlib.md5(inner.encode() + salt).hexdigest()

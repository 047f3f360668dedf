"""Sign-in building blocks without I/O: TOTP steps and replay, recovery codes, the password
policy, address rules, API token scopes, the editor's one-login tokens."""

from __future__ import annotations

import time

import pyotp
import pytest

from dbward.errors import ValidationError
from dbward.identity import totp
from dbward.identity.apitokens import hash_token, new_api_token, scope_allows
from dbward.identity.ephemeral import EphemeralTokens
from dbward.identity.ipaccess import allowed, valid_cidr
from dbward.identity.passwords import check_password
from dbward.identity.secrets import verify_argon2


def test_totp_accepts_one_step_either_side_and_never_twice() -> None:
    secret = totp.new_secret()
    now = 1_800_000_000.0
    code = pyotp.TOTP(secret).at(now)
    step = totp.check_code(secret, code, 0, now=now)
    assert step == int(now // 30)
    assert totp.check_code(secret, code, step, now=now) is None  # replay
    assert totp.check_code(secret, pyotp.TOTP(secret).at(now + 30), step, now=now) == step + 1
    assert totp.check_code(secret, pyotp.TOTP(secret).at(now + 90), 0, now=now) is None
    assert (
        totp.check_code(secret, "12345", 0, now=now) is None and totp.check_code(secret, "abcdef", 0) is None
    )
    assert "issuer=dbward" in totp.provisioning_uri(secret, "alice")


def test_recovery_codes_are_random_and_hashed_loosely() -> None:
    codes = totp.new_recovery_codes()
    assert len(set(codes)) == 10 and all(len(c) == 14 for c in codes)
    assert totp.hash_recovery_code(codes[0]) == totp.hash_recovery_code(
        " " + codes[0].upper().replace("-", "")
    )


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("Short-1", "at least 12 characters"),
        ("alllowercaseletters", "at least 3 of"),
        ("Alice-password-1", "must not contain the user name"),
    ],
)
def test_password_policy_names_what_is_missing(password: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        check_password(password, username="alice", min_length=12, min_classes=3)
    check_password("Correct-horse-9", username="alice", min_length=12, min_classes=3)


def test_address_rules() -> None:
    assert allowed("10.1.2.3", []) and allowed("10.1.2.3", ["10.0.0.0/8"])
    assert not allowed("192.168.1.1", ["10.0.0.0/8"]) and not allowed("not-an-ip", ["10.0.0.0/8"])
    assert allowed("::ffff:10.1.2.3", ["10.0.0.0/8"]) and allowed("2001:db8::1", ["2001:db8::/32"])
    assert valid_cidr("10.1.2.3/8") == "10.0.0.0/8"
    with pytest.raises(ValueError, match="not an IP address"):
        valid_cidr("ten.dot")


def test_api_token_scopes_and_hashing() -> None:
    token = new_api_token()
    assert token.startswith("dbwa_") and len(hash_token(token)) == 64 and hash_token(token) != token
    assert scope_allows(frozenset({"admin"}), "users", True)
    assert scope_allows(frozenset({"read"}), "audit", False) and not scope_allows(
        frozenset({"read"}), "audit", True
    )
    assert scope_allows(frozenset({"users:write"}), "users", False)
    assert not scope_allows(frozenset({"users:read"}), "grants", False)
    assert not scope_allows(frozenset({"self"}), "users", False)


def test_ephemeral_tokens_expire_and_revoke() -> None:
    tokens = EphemeralTokens(ttl_seconds=0.2)
    name, secret = tokens.issue("alice")
    (stored,) = tokens.secrets_for("alice")
    assert stored.method == "web_session" and stored.name == name
    assert verify_argon2(stored.verifiers.argon2, secret) and tokens.secrets_for("bob") == []
    tokens.revoke(name)
    assert len(tokens) == 0
    tokens.issue("alice")
    time.sleep(0.25)
    assert tokens.secrets_for("alice") == []

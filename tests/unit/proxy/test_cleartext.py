"""Cleartext passwords received over TLS are checked against the secrets' SCRAM verifiers."""

from __future__ import annotations

from dbward.domain import Principal
from dbward.identity.secrets import make_verifiers, scram_verifier, verify_scram_secret
from dbward.proxy.engine import StoredSecret, UserCredentials, verify_cleartext


def _creds(*secrets: tuple[str, str]) -> UserCredentials:
    return UserCredentials(
        principal=Principal(user_id=1, username="alice"),
        secrets=tuple(
            StoredSecret(method=method, name=name, verifiers=make_verifiers(value))
            for method, name, value in ((m, n, n + "-value") for m, n in secrets)
        ),
    )


def test_scram_verifier_accepts_its_secret_only() -> None:
    v = scram_verifier("s3cret-password")
    assert verify_scram_secret(v, "s3cret-password")
    assert not verify_scram_secret(v, "s3cret-passwore")
    assert not verify_scram_secret(v, "")


def test_cleartext_finds_the_secret_that_matches() -> None:
    creds = _creds(("password", "password"), ("proxy_token", "laptop"))
    found = verify_cleartext(creds, "laptop-value")
    assert found is not None and found.name == "laptop"
    found = verify_cleartext(creds, "password-value")
    assert found is not None and found.method == "password"
    assert verify_cleartext(creds, "nobody's") is None


def test_an_unknown_user_is_refused_after_the_same_work() -> None:
    assert verify_cleartext(None, "anything") is None
    assert verify_cleartext(_creds(), "anything") is None

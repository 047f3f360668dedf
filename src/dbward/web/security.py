"""Console sign-in and sessions: passwords with lockout, TOTP, CSRF, cookies, address rules.

A console session lives in the store (``console_sessions``), keyed by the SHA-256 of the
random cookie value, so sessions survive a restart, work across nodes and can be ended.
Each session has a stage: ``totp`` (the second factor is still due), ``enroll`` (two-factor
sign-in is required but not set up yet), ``password`` (the password must be changed) and
``done``. Only ``done`` reaches anything beyond the sign-in pages.

Address rules (everyone, per user, admin pages) are checked on every request, whatever the
stage, and independently of TOTP: one never stands in for the other.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from fastapi import Request, Response

from dbward.api.context import Actor, ApiContext, client_ip, get_ctx
from dbward.api.errors import Forbidden, TooManyAttempts
from dbward.api.service import password_policy, record
from dbward.audit.events import SigninFailed, SigninSucceeded
from dbward.config import ApiSettings
from dbward.errors import AuthenticationError, ValidationError
from dbward.identity import totp
from dbward.identity.ipaccess import allowed
from dbward.identity.secrets import hash_password, verify_argon2
from dbward.store import repo
from dbward.store.models import ConsoleSession, User

COOKIE = "dbward_session"
PRE_COOKIE = "dbward_presession"  # double-submit CSRF token of the sign-in form
TOUCH_EVERY = timedelta(seconds=30)
WRONG = "The user name or password is wrong."


def _aware(d: datetime | None) -> datetime | None:
    return None if d is None else (d if d.tzinfo else d.replace(tzinfo=UTC))


def sha(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class Redirect(Exception):
    def __init__(self, to: str) -> None:
        super().__init__(to)
        self.to = to


@dataclass
class Signed:
    """The console session of a request and its user."""

    session: ConsoleSession
    user: User
    ip: str

    @property
    def actor(self) -> Actor:
        return Actor(
            user_id=self.user.id,
            username=self.user.username,
            is_admin=self.user.is_admin,
            surface="console",
            client_ip=self.ip,
            client_program="dbward-console",
        )


class SignIn:
    """The sign-in service of one app (holds a dummy hash for unknown user names)."""

    def __init__(self, ctx: ApiContext) -> None:
        self.ctx = ctx
        self._dummy: str | None = None

    @property
    def settings(self) -> ApiSettings:
        return self.ctx.settings.api

    def cookie_secure(self, request: Request) -> bool:
        mode = self.settings.cookie_secure
        if mode != "auto":
            return mode == "always"
        public = self.settings.public_url or ""
        return request.url.scheme == "https" or public.startswith("https://")

    def set_cookie(
        self, request: Request, response: Response, name: str, value: str, max_age: int | None
    ) -> None:
        response.set_cookie(
            name,
            value,
            max_age=max_age,
            httponly=True,
            samesite="strict",
            secure=self.cookie_secure(request),
            path="/",
        )

    # ------------------------------------------------------------------ address rules
    def check_ip(self, ip: str, *, admin: bool = False, user_rules: list[str] | None = None) -> None:
        if not allowed(ip, self.settings.allowed_ips):
            raise Forbidden(f"The console is not open to your address {ip}.")
        if user_rules is not None and not allowed(ip, user_rules):
            raise Forbidden(f"Your account may not use the console from {ip}.")
        if admin and not allowed(ip, self.settings.admin_allowed_ips):
            raise Forbidden(f"The administration pages are not open to your address {ip}.")

    # ------------------------------------------------------------------ password
    async def _failure(
        self, username: str, ip: str, reason: str, method: str = "password"
    ) -> datetime | None:
        now = datetime.now(UTC)
        s_ = self.settings
        locked: datetime | None = None
        async with self.ctx.store.transaction() as s:
            row = await repo.lockout_row(s, username)
            first = _aware(row.first_failure_at)
            if first is None or now - first > timedelta(minutes=s_.lockout_window_minutes):
                row.failures, row.first_failure_at = 0, now
            row.failures += 1
            if row.failures >= s_.lockout_failures:
                locked = now + timedelta(minutes=s_.lockout_minutes)
                row.locked_until, row.failures, row.first_failure_at = locked, 0, None
                reason += f"; user name locked for {s_.lockout_minutes} minutes after {s_.lockout_failures} failures"
        await record(
            self.ctx,
            None,
            SigninFailed(
                surface="console",
                method=method,
                reason=reason,
                user=username,
                client_addr=ip,
                client_program="dbward-console",
            ),
        )
        return locked

    async def _locked_until(self, username: str) -> datetime | None:
        async with self.ctx.store.session() as s:
            row = await repo.get_lockout(s, username)
        until = _aware(row.locked_until) if row else None
        return until if until is not None and until > datetime.now(UTC) else None

    def _locked_message(self, until: datetime) -> str:
        return (
            f"This account is locked after repeated failed sign-ins until {until:%H:%M} UTC; "
            "try again later or ask an administrator to unlock it."
        )

    async def password(self, request: Request, username: str, password: str) -> tuple[str, str]:
        """Check user name and password; returns (cookie value, stage) of a new session."""
        ip = client_ip(request)
        self.check_ip(ip)
        username = username.strip()[:128]
        until = await self._locked_until(username)
        if until is not None:
            await record(
                self.ctx,
                None,
                SigninFailed(
                    surface="console",
                    reason="user name is locked",
                    user=username,
                    client_addr=ip,
                    client_program="dbward-console",
                ),
            )
            raise TooManyAttempts(self._locked_message(until))
        async with self.ctx.store.session() as s:
            user = await repo.get_user(s, username)
            rules = await repo.user_ip_rules(s, user.id) if user is not None else []
            totp_row = await repo.get_totp(s, user.id) if user is not None else None
            groups = set(await repo_groups(s, user.id)) if user is not None else set()
        if user is None or user.password_hash is None:
            if self._dummy is None:
                self._dummy = hash_password(secrets.token_hex(16))
            verify_argon2(self._dummy, password)  # the same time as for a real user
            ok = False
        else:
            ok = verify_argon2(user.password_hash, password)
        if not ok or user is None:
            locked = await self._failure(username, ip, "wrong user name or password")
            if locked is not None:
                raise TooManyAttempts(self._locked_message(locked))
            raise AuthenticationError(WRONG)
        if user.disabled:
            await self._failure(username, ip, "the account is disabled")
            raise AuthenticationError(WRONG)
        try:
            self.check_ip(ip, user_rules=rules)
        except Forbidden:
            await record(
                self.ctx,
                None,
                SigninFailed(
                    surface="console",
                    reason=f"address {ip} not allowed for the user",
                    user=username,
                    client_addr=ip,
                    client_program="dbward-console",
                ),
            )
            raise
        if totp_row is not None and totp_row.confirmed_at is not None:
            stage = "totp"
        elif self.totp_required(user, groups):
            stage = "enroll"
        else:
            stage = self._after_second_factor(user)
        token = secrets.token_urlsafe(32)
        now = datetime.now(UTC)
        row = ConsoleSession(
            id=sha(token),
            user_id=user.id,
            stage=stage,
            csrf_token=secrets.token_urlsafe(24),
            method="password",
            client_ip=ip,
            user_agent=(request.headers.get("user-agent") or "")[:256],
            created_at=now,
            last_seen_at=now,
            expires_at=now + timedelta(hours=self.settings.session_max_hours),
        )
        async with self.ctx.store.transaction() as s:
            await repo.add_console_session(s, row)
            await repo.clear_lockout(s, username)
        if stage == "done":
            await self._succeeded(user, ip, "password")
        return token, stage

    def totp_required(self, user: User, groups: set[str]) -> bool:
        mode = self.settings.totp_required
        if mode == "everyone" or (mode == "admins" and user.is_admin):
            return True
        return bool(groups & set(self.settings.totp_required_groups))

    @staticmethod
    def _after_second_factor(user: User) -> str:
        return "password" if user.must_change_password else "done"

    async def _succeeded(self, user: User, ip: str, method: str) -> None:
        await record(
            self.ctx,
            None,
            SigninSucceeded(
                surface="console",
                method=method,
                user=user.username,
                client_addr=ip,
                client_program="dbward-console",
            ),
        )

    async def _advance(self, signed: Signed, method: str) -> str:
        stage = self._after_second_factor(signed.user)
        async with self.ctx.store.transaction() as s:
            row = await s.get(ConsoleSession, signed.session.id)
            assert row is not None
            row.stage, row.method = stage, method
        signed.session.stage = stage
        if stage == "done":
            await self._succeeded(signed.user, signed.ip, method)
        return stage

    # ------------------------------------------------------------------ TOTP
    async def second_factor(self, signed: Signed, code: str) -> str:
        """Check a TOTP code or a recovery code for a session in stage ``totp``."""
        username = signed.user.username
        until = await self._locked_until(username)
        if until is not None:
            raise TooManyAttempts(self._locked_message(until))
        code = code.strip()
        method = None
        async with self.ctx.store.transaction() as s:
            row = await repo.get_totp(s, signed.user.id)
            if row is not None and row.confirmed_at is not None:
                if len(code.replace(" ", "")) == 6:
                    step = totp.check_code(self.ctx.store.box.decrypt(row.secret), code, row.last_step)
                    if step is not None:
                        row.last_step = step
                        method = "password+totp"
                elif await repo.use_recovery_code(s, signed.user.id, totp.hash_recovery_code(code)):
                    method = "password+recovery_code"
        if method is None:
            locked = await self._failure(username, signed.ip, "wrong two-factor code", method="totp")
            if locked is not None:
                await self.end(signed.session.id)
                raise TooManyAttempts(self._locked_message(locked))
            raise AuthenticationError(
                "The code is wrong or was already used; enter the current code from your app."
            )
        return await self._advance(signed, method)

    async def start_enrollment(self, signed: Signed) -> str:
        """A new TOTP secret for the user (unconfirmed until a code from it is entered)."""
        secret = totp.new_secret()
        async with self.ctx.store.transaction() as s:
            await repo.set_totp(s, self.ctx.store.box, signed.user.id, secret)
        return secret

    async def pending_secret(self, signed: Signed) -> str | None:
        async with self.ctx.store.session() as s:
            row = await repo.get_totp(s, signed.user.id)
        if row is None or row.confirmed_at is not None:
            return None
        return self.ctx.store.box.decrypt(row.secret)

    async def confirm_enrollment(self, signed: Signed, code: str) -> list[str]:
        """Confirm the pending secret with a code; returns the new recovery codes (shown once)."""
        async with self.ctx.store.transaction() as s:
            row = await repo.get_totp(s, signed.user.id)
            if row is None or row.confirmed_at is not None:
                raise ValidationError("Start two-factor setup again: there is no pending secret.")
            step = totp.check_code(self.ctx.store.box.decrypt(row.secret), code, row.last_step)
            if step is None:
                raise ValidationError(
                    "The code does not match; check the time on your phone and enter the current code."
                )
            row.last_step, row.confirmed_at = step, datetime.now(UTC)
            codes = totp.new_recovery_codes()
            await repo.replace_recovery_codes(s, signed.user.id, [totp.hash_recovery_code(c) for c in codes])
        from dbward.api.service import record_change

        await record_change(
            self.ctx, signed.actor, "user", signed.user.username, "update", {"totp": False}, {"totp": True}
        )
        if signed.session.stage == "enroll":
            await self._advance(signed, "password+totp")
        return codes

    # ------------------------------------------------------------------ password change
    async def change_password(self, signed: Signed, current: str, new: str, repeat: str) -> None:
        user = signed.user
        if user.password_hash is None or not verify_argon2(user.password_hash, current):
            await self._failure(user.username, signed.ip, "wrong current password on password change")
            raise AuthenticationError("The current password is wrong.")
        if new != repeat:
            raise ValidationError("The two new passwords differ.")
        if verify_argon2(user.password_hash, new):
            raise ValidationError("The new password must differ from the current one.")
        password_policy(self.ctx, new, user.username)
        async with self.ctx.store.transaction() as s:
            row = await repo.require_user(s, user.username)
            repo.set_password(row, self.ctx.store.box, new)
            row.must_change_password = False
            # every other session of this user ends with the old password
            from sqlalchemy import delete

            await s.execute(
                delete(ConsoleSession).where(
                    ConsoleSession.user_id == row.id, ConsoleSession.id != signed.session.id
                )
            )
        from dbward.api.service import record_change

        await record_change(
            self.ctx, signed.actor, "user", user.username, "update", None, {"password": "(changed)"}
        )
        user.must_change_password = False
        if signed.session.stage == "password":
            await self._advance(signed, signed.session.method)

    # ------------------------------------------------------------------ sessions
    async def load(self, request: Request) -> Signed | None:
        token = request.cookies.get(COOKIE)
        if not token:
            return None
        now = datetime.now(UTC)
        async with self.ctx.store.transaction() as s:
            found = await repo.console_session(s, sha(token))
            if found is None:
                return None
            row, user = found
            idle = timedelta(minutes=self.settings.session_idle_minutes)
            last = _aware(row.last_seen_at) or now
            exp = _aware(row.expires_at) or now
            if user.disabled or exp <= now or now - last > idle:
                await repo.delete_console_sessions(s, session_hash=row.id)
                return None
            if now - last > TOUCH_EVERY:
                row.last_seen_at = now
            rules = await repo.user_ip_rules(s, user.id)
        ip = client_ip(request)
        self.check_ip(ip, user_rules=rules)
        return Signed(session=row, user=user, ip=ip)

    async def end(self, session_hash: str) -> None:
        async with self.ctx.store.transaction() as s:
            await repo.delete_console_sessions(s, session_hash=session_hash)

    @staticmethod
    def check_csrf(signed: Signed | None, submitted: str | None, pre_cookie: str | None = None) -> None:
        expected = signed.session.csrf_token if signed is not None else pre_cookie
        if not expected or not submitted or not hmac.compare_digest(expected, submitted):
            raise Forbidden(
                "The form has expired or did not come from this console; reload the page and try again."
            )


async def repo_groups(s, user_id: int) -> list[str]:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from dbward.store.models import Group, GroupMember

    rows = await s.execute(
        select(Group.name)
        .join(GroupMember, GroupMember.group_id == Group.id)
        .where(GroupMember.user_id == user_id)
    )
    return list(rows.scalars().all())


def signin_of(request: Request) -> SignIn:
    si = request.app.state.signin
    assert isinstance(si, SignIn)
    return si


__all__ = ["COOKIE", "PRE_COOKIE", "Redirect", "SignIn", "Signed", "get_ctx", "signin_of"]

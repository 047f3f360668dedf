"""Request and response bodies of the REST API (the OpenAPI document is generated from these).

Objects that ``dbward apply`` also manages reuse its models (``declarative/schema.py``), so a
group in the API looks exactly like a group in a YAML file.
"""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, Optional, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, create_model, field_validator

from dbward.declarative.policy_sections import ConnectionPolicyItem, PrivilegeTypeItem, RuleItem
from dbward.declarative.schema import (
    Conditions,
    EmailAddress,
    GrantItem,
    GroupItem,
    Name,
    Port,
    RoleItem,
    Scope,
)
from dbward.errors import ValidationError
from dbward.identity.apitokens import SCOPES
from dbward.identity.ipaccess import valid_cidr

T = TypeVar("T")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Page(BaseModel, Generic[T]):
    """One page of a list; pass ``next_cursor`` as ``cursor`` to get the next (null: last page)."""

    items: list[T]
    next_cursor: str | None = None


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


def encode_cursor(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    if not cursor:
        return None
    try:
        return base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        raise ValidationError("cursor is not one this API returned; pass next_cursor unchanged") from None


def paginate(items: list[dict[str, Any]], key: str, limit: int, cursor: str | None) -> dict[str, Any]:
    """Keyset pagination over ``items`` sorted by ``key`` (names are unique)."""
    after = decode_cursor(cursor)
    rows = sorted(items, key=lambda d: str(d[key]))
    if after is not None:
        rows = [r for r in rows if str(r[key]) > after]
    page = rows[:limit]
    nxt = encode_cursor(str(page[-1][key])) if len(rows) > limit and page else None
    return {"items": page, "next_cursor": nxt}


Limit = Annotated[int, Field(ge=1, le=500)]
Password = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
Cidr = Annotated[str, StringConstraints(min_length=1, max_length=64)]


def _cidrs(v: list[str] | None) -> list[str] | None:
    if v is None:
        return None
    try:
        return [valid_cidr(c) for c in v]
    except ValueError as exc:
        raise ValueError(str(exc)) from None


# ----------------------------------------------------------------------------- users
class UserOut(BaseModel):
    username: str
    display_name: str | None = None
    email: str | None = None
    admin: bool = False
    disabled: bool = False
    has_password: bool = False
    must_change_password: bool = False
    totp_enabled: bool = False
    locked_until: str | None = None
    allowed_ips: list[str] = Field(default_factory=list)


class UserCreate(Strict):
    username: Name
    display_name: str | None = None
    email: EmailAddress | None = None
    admin: bool = False
    disabled: bool = False
    #: a temporary password; the user must change it at first sign-in unless told otherwise
    password: Password | None = None
    must_change_password: bool = True
    allowed_ips: list[Cidr] = Field(default_factory=list)

    _c = field_validator("allowed_ips")(_cidrs)


class UserPatch(Strict):
    display_name: str | None = None
    email: EmailAddress | None = None
    admin: bool | None = None
    disabled: bool | None = None
    allowed_ips: list[Cidr] | None = None

    _c = field_validator("allowed_ips")(_cidrs)


class PasswordSet(Strict):
    password: Password
    must_change_password: bool = True


# ----------------------------------------------------------------------------- groups / roles
class GroupPatch(Strict):
    description: str | None = None
    members: list[Name] | None = None


class RolePatch(Strict):
    description: str | None = None
    members: list[Annotated[str, StringConstraints(pattern=r"^(user|group):[^/\s]+$")]] | None = None


# ----------------------------------------------------------------------------- connections
class ConnectionOut(BaseModel):
    name: str
    engine: str
    host: str
    port: int
    database: str | None = None
    username: str
    has_password: bool = False
    tls_mode: str
    tls_ca: str | None = None
    listen_port: int | None = None
    description: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    policy: dict[str, Any] = Field(default_factory=dict)


class ConnectionCreate(Strict):
    name: Name
    engine: Literal["mysql", "postgres"]
    host: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    port: Port
    database: str | None = None
    username: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    #: the upstream password: write-only, never returned
    password: Password | None = None
    tls_mode: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    tls_ca: str | None = None
    listen_port: Port | None = None
    description: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    policy: ConnectionPolicyItem = Field(default_factory=ConnectionPolicyItem)


class ConnectionPatch(Strict):
    engine: Literal["mysql", "postgres"] | None = None
    host: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    port: Port | None = None
    database: str | None = None
    username: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = None
    password: Password | None = None
    tls_mode: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] | None = None
    tls_ca: str | None = None
    listen_port: Port | None = None
    description: str | None = None
    options: dict[str, Any] | None = None
    policy: ConnectionPolicyItem | None = None


class CheckOut(BaseModel):
    name: str
    status: Literal["pass", "fail", "warn", "skip"]
    detail: str
    fix: str | None = None
    ms: float = 0.0


# ----------------------------------------------------------------------------- grants
class GrantPatch(Strict):
    subject: Annotated[str, StringConstraints(pattern=r"^(user|group|role):[^/\s]+$")] | None = None
    connection: Name | None = None
    scope: Scope | None = None
    privileges: (
        Annotated[list[Annotated[str, StringConstraints(min_length=1)]], Field(min_length=1)] | None
    ) = None
    conditions: Conditions | None = None
    expires_at: datetime | None = None
    description: str | None = None


# ----------------------------------------------------------------------------- policies
class PrivilegeTypePatch(Strict):
    kinds: list[str] | None = None
    includes: list[str] | None = None
    description: str | None = None


class RulePatch(Strict):
    priority: int | None = None
    match: Literal["exact", "regex", "fingerprint"] | None = None
    pattern: str | None = None
    action: Literal["allow", "deny", "require_approval"] | None = None
    connection: str | None = None
    subjects: list[str] | None = None
    message: str | None = None
    enabled: bool | None = None
    description: str | None = None


def patch_model(item: type[BaseModel], name_field: str) -> type[BaseModel]:
    """A model of ``item`` with every field optional (except the name): the body of a PATCH.

    Constraints are checked when the merged object is validated as ``item`` again.
    """
    fields: dict[str, Any] = {}
    for fname, f in item.model_fields.items():
        if fname != name_field:
            fields[fname] = (Optional[f.annotation], Field(default=None, alias=f.alias))  # noqa: UP045
    name = item.__name__.removesuffix("Item") + "Patch"
    return create_model(name, __config__=ConfigDict(extra="forbid", populate_by_name=True), **fields)


# ----------------------------------------------------------------------------- tokens
Scope_ = Literal[SCOPES]  # type: ignore[valid-type]


class ApiTokenCreate(Strict):
    name: Name
    #: the user the token acts as (never for more than that user may do)
    user: Name
    scopes: Annotated[list[Scope_], Field(min_length=1)]
    expires_at: datetime | None = None
    allowed_ips: list[Cidr] = Field(default_factory=list)
    description: str | None = None

    _c = field_validator("allowed_ips")(_cidrs)


class ApiTokenOut(BaseModel):
    name: str
    user: str
    prefix: str
    scopes: list[str]
    allowed_ips: list[str]
    description: str | None = None
    created_by: str | None = None
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class ApiTokenCreated(ApiTokenOut):
    #: shown once; store it now, it cannot be shown again
    token: str


class ProxyTokenCreate(Strict):
    name: Name = "default"
    expires_at: datetime | None = None


class ProxyTokenOut(BaseModel):
    name: str
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class ProxyTokenCreated(ProxyTokenOut):
    #: use as the password of proxy logins; shown once
    token: str


# ----------------------------------------------------------------------------- me
class MyConnection(BaseModel):
    name: str
    engine: str
    database: str | None = None
    host: str
    port: int | None = None
    privileges: list[str]
    grants: list[str]
    settings: dict[str, str]


class Me(BaseModel):
    username: str
    display_name: str | None = None
    email: str | None = None
    admin: bool
    groups: list[str]
    roles: list[str]
    scopes: list[str]


# ----------------------------------------------------------------------------- sessions / audit
class LiveSessionOut(BaseModel):
    id: str
    node: str
    user: str
    connection: str
    database: str | None = None
    protocol: str
    client_addr: str
    client_program: str | None = None
    started_at: datetime
    statements: int
    busy: bool
    idle_seconds: float


class AuditRecordOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: int
    type: str
    code: str
    time: str
    chain: str
    seq: int


__all__ = ["GrantItem", "GroupItem", "PrivilegeTypeItem", "RoleItem", "RuleItem"]

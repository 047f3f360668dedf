"""The objects of a ``dbward apply`` file, as pydantic models that refuse unknown keys.

Each section (``users:``, ``groups:``, ...) is a list of one model; the file model is built
from the section registry in ``sections.py`` so that later sections (``policies:``,
``masking:``) add themselves without touching this module. Omitted optional fields mean
"the default" (a description left out is no description), except ``password``, which when
left out leaves the stored secret as it is.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, field_validator

Name = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^/\s]+$")]
#: ``env:NAME``, ``file:PATH`` or (with a warning) the secret itself
SecretRef = Annotated[str, StringConstraints(min_length=1)]
MemberRef = Annotated[str, StringConstraints(pattern=r"^(user|group):[^/\s]+$")]
SubjectRef = Annotated[str, StringConstraints(pattern=r"^(user|group|role):[^/\s]+$")]
Port = Annotated[int, Field(ge=1, le=65535)]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]

_EMAIL_LOCAL = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_EMAIL_LABEL = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def email_address(v: str) -> str:
    """An e-mail address approval notices can be sent to: ``local@domain.tld`` (RFC 5321
    sizes, a dot-atom local part, a domain of at least two labels; international domains in
    their ``xn--`` form). Raises ValueError with a sentence naming the address."""
    v = v.strip()
    local, at, domain = v.rpartition("@")
    labels = domain.split(".")
    ok = (
        bool(at)
        and len(v) <= 254
        and 0 < len(local) <= 64
        and _EMAIL_LOCAL.match(local) is not None
        and len(labels) >= 2
        and all(_EMAIL_LABEL.match(label) for label in labels)
        and not labels[-1].isdigit()
    )
    if not ok:
        raise ValueError(
            f"{v!r} is not an e-mail address (like dave@example.com); approval notices are sent to it"
        )
    return v


#: a user's e-mail address (``users:`` in `dbward apply`, the user API)
EmailAddress = Annotated[str, AfterValidator(email_address)]

_HOURS = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-4]):[0-5]\d$")


def _utc(v: datetime | None) -> datetime | None:
    if v is None:
        return None
    return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)


class Item(BaseModel):
    """Base of every object kind: strict about keys, plain about values."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    def comparable(self) -> dict[str, Any]:
        """The fields that decide whether the stored object differs (secrets left out)."""
        return self.model_dump(mode="json", exclude={"password"})


class UserItem(Item):
    username: Name
    display_name: str | None = None
    #: where approval notices reach the user (``approvals.notifications`` e-mail)
    email: EmailAddress | None = None
    admin: bool = False
    disabled: bool = False
    password: SecretRef | None = None


class GroupItem(Item):
    name: Name
    description: str | None = None
    members: list[Name] = Field(default_factory=list)

    @field_validator("members")
    @classmethod
    def _sorted(cls, v: list[str]) -> list[str]:
        return sorted(set(v))


class RoleItem(Item):
    name: Name
    description: str | None = None
    #: ``user:alice`` or ``group:analysts``
    members: list[MemberRef] = Field(default_factory=list)

    @field_validator("members")
    @classmethod
    def _sorted(cls, v: list[str]) -> list[str]:
        return sorted(set(v))


class ConnectionItem(Item):
    name: Name
    engine: Literal["mysql", "postgres"]
    host: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    port: Port
    database: str | None = None
    username: Annotated[str, StringConstraints(min_length=1, max_length=255)]
    password: SecretRef | None = None
    tls_mode: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    tls_ca: str | None = None
    listen_port: Port | None = None
    description: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)


class Scope(Item):
    """Where a grant applies; empty lists mean the whole connection. Names may use ``*``."""

    databases: list[str] = Field(default_factory=list)
    schemas: list[str] = Field(default_factory=list)
    tables: list[str] = Field(default_factory=list)


class Conditions(Item):
    """When and from where a grant applies."""

    valid_from: datetime | None = None
    weekdays: list[Weekday] = Field(default_factory=list)
    #: ``09:00-18:00`` in ``timezone``
    hours: str | None = None
    timezone: str | None = None
    #: CIDR ranges such as ``10.0.0.0/8``
    client_ips: list[str] = Field(default_factory=list)

    @field_validator("hours")
    @classmethod
    def _hours(cls, v: str | None) -> str | None:
        if v is not None and not _HOURS.match(v):
            raise ValueError("hours must look like 09:00-18:00")
        return v

    @field_validator("valid_from")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        return _utc(v)

    @field_validator("client_ips")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        import ipaddress

        for net in v:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"{net!r} is not an IP address or CIDR range") from None
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        if v is None:
            return v
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"{v!r} is not a known time zone (for example Asia/Seoul or UTC)") from None
        return v


class GrantItem(Item):
    name: Name
    #: ``user:alice``, ``group:analysts`` or ``role:dba``
    subject: SubjectRef
    connection: Name
    scope: Scope = Field(default_factory=Scope)
    privileges: Annotated[list[Annotated[str, StringConstraints(min_length=1)]], Field(min_length=1)]
    conditions: Conditions = Field(default_factory=Conditions)
    expires_at: datetime | None = None
    description: str | None = None

    @field_validator("expires_at")
    @classmethod
    def _utc(cls, v: datetime | None) -> datetime | None:
        return _utc(v)

    @property
    def subject_type(self) -> str:
        return self.subject.split(":", 1)[0]

    @property
    def subject_name(self) -> str:
        return self.subject.split(":", 1)[1]

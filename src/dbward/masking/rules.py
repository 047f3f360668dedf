"""Masking rules as administrators write them: which columns are masked, how, and for whom.

These are the ``masking:`` section of the ``dbward apply`` YAML, built from dicts::

    masking:
      patterns:                       # custom patterns, next to the built-in ones
        - name: employee_no
          regex: 'E\\d{6}'
          algorithm: {algorithm: keep_first, keep_first: 1}
      rules:
        - name: mask-phone
          connection: "prod-*"        # connection glob
          database: "*"               # PostgreSQL database / MySQL database (glob)
          schema: "*"                 # PostgreSQL schema; in MySQL the database (glob)
          table: "users"              # table glob (bare name)
          column: "phone*"            # column glob
          pattern: phone              # a pattern name (built-in or custom) ...
          # algorithm: full           # ... or an algorithm spec
          exempt: [role:support]
          exempt_client_ips: [10.0.0.0/8]   # the exemption holds only from these addresses
          priority: 10                # lower first

Globs are shell globs matched case-insensitively. For a column, the matching enabled rules are
taken in priority order (then file order); a rule that exempts the user (from the client's
address, when ``exempt_client_ips`` is given) is skipped, and the first remaining rule masks
the column. The masking plan for a statement is built in :mod:`dbward.masking.plan`.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import IntEnum
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dbward.masking.algorithms import Algorithm, MaskSpec
from dbward.masking.patterns import BUILTIN, Pattern, custom_pattern
from dbward.policy.subject import Subject

_RULE_ALGORITHMS = frozenset(a for a in Algorithm if a is not Algorithm.PATTERN)


class AlgorithmSpec(BaseModel):
    """An algorithm and its parameters; written as a dict or as the bare algorithm name
    (``full``, ``redact``, ``null``, ``token``, or ``keep_last:4``, ``keep_first:2``,
    ``partial:2:4``, ``fixed:<text>``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    algorithm: Algorithm
    keep_first: int = Field(0, ge=0, le=64)
    keep_last: int = Field(0, ge=0, le=64)
    mask_char: str = Field("*", min_length=1, max_length=1)
    replacement: str = "****"
    token_prefix: str = "tok_"
    token_length: int = Field(16, ge=8, le=64)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        if isinstance(data, str):
            name, _, rest = data.strip().partition(":")
            name = name.strip().lower()
            args = [x.strip() for x in rest.split(":")] if rest else []
            out: dict[str, Any] = {"algorithm": name}
            try:
                if name == "keep_first" and args:
                    out["keep_first"] = int(args[0])
                elif name == "keep_last" and args:
                    out["keep_last"] = int(args[0])
                elif name == "partial" and args:
                    out["keep_first"] = int(args[0])
                    out["keep_last"] = int(args[1]) if len(args) > 1 else 0
                elif name == "fixed" and rest:
                    out["replacement"] = rest
            except ValueError as exc:
                raise ValueError(f"cannot read the algorithm {data!r}: counts must be numbers") from exc
            return out
        return data

    @field_validator("algorithm")
    @classmethod
    def _allowed(cls, v: Algorithm) -> Algorithm:
        if v not in _RULE_ALGORITHMS:
            raise ValueError(
                f"algorithm {v.value!r} is not a rule algorithm (use a pattern name in 'pattern' instead)"
            )
        return v

    def to_spec(self) -> MaskSpec:
        return MaskSpec(
            algorithm=self.algorithm,
            keep_first=self.keep_first,
            keep_last=self.keep_last,
            mask_char=self.mask_char,
            replacement=self.replacement,
            token_prefix=self.token_prefix,
            token_length=self.token_length,
        )

    def describe(self) -> str:
        a = self.algorithm
        if a is Algorithm.PARTIAL:
            return f"partial (first {self.keep_first}, last {self.keep_last} kept)"
        if a is Algorithm.KEEP_FIRST:
            return f"keep_first {self.keep_first}"
        if a is Algorithm.KEEP_LAST:
            return f"keep_last {self.keep_last}"
        return a.value


class MaskingPatternDef(BaseModel):
    """An administrator's pattern: every match of ``regex`` in a value is masked by
    ``algorithm``; a value with no match is masked whole."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    regex: str
    algorithm: AlgorithmSpec
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> MaskingPatternDef:
        if self.name in BUILTIN:
            raise ValueError(f"masking pattern {self.name}: the name is taken by a built-in pattern")
        try:
            re.compile(self.regex)
        except re.error as exc:
            raise ValueError(f"masking pattern {self.name}: invalid regular expression: {exc}") from exc
        return self

    def build(self) -> Pattern:
        return custom_pattern(self.name, self.regex, self.algorithm.to_spec(), self.description)


class MaskingRule(BaseModel):
    """Columns (connection, database, schema, table, column globs) masked with a pattern or
    an algorithm, except for the exempt subjects (optionally only from given addresses)."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1, max_length=128)
    connection: str = "*"
    database: str = "*"
    schema_: str = Field("*", alias="schema")
    table: str = "*"
    column: str
    pattern: str | None = None
    algorithm: AlgorithmSpec | None = None
    exempt: tuple[Subject, ...] = ()
    exempt_client_ips: tuple[IPv4Network | IPv6Network, ...] = ()
    priority: int = 100
    enabled: bool = True
    description: str = ""

    @field_validator("exempt", mode="before")
    @classmethod
    def _subjects(cls, v: Any) -> Any:
        return (v,) if isinstance(v, (str, dict)) else v

    @field_validator("exempt_client_ips", mode="before")
    @classmethod
    def _nets(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        return tuple(ip_network(x, strict=False) for x in v)

    @model_validator(mode="after")
    def _one_way(self) -> MaskingRule:
        if (self.pattern is None) == (self.algorithm is None):
            raise ValueError(f"masking rule {self.name}: give exactly one of 'pattern' or 'algorithm'")
        if self.exempt_client_ips and not self.exempt:
            raise ValueError(
                f"masking rule {self.name}: exempt_client_ips limits an exemption, so it needs 'exempt' subjects"
            )
        return self

    @property
    def rule_id(self) -> str:
        return f"masking:{self.name}"

    def describe_how(self) -> str:
        if self.pattern is not None:
            return f"pattern {self.pattern}"
        assert self.algorithm is not None
        return self.algorithm.describe()


class Unmask(BaseModel):
    """An approved unmask request, as the policy set carries it: ``user`` sees the columns
    matching ``database``/``schema``/``table``/``column`` (globs, case-insensitive) of
    ``connection`` in clear from ``valid_from`` until ``valid_until``.

    The store's policy loader builds one per column of every approved unmask request
    (``store/policy_source.py``); :class:`~dbward.masking.plan.CompiledMasking` applies those
    valid at the moment of each decision. An exemption only ever removes the masking of a
    column a rule masks; it never allows copying the clear values elsewhere.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    request_id: int
    user: str = Field(min_length=1)
    connection: str = Field(min_length=1)
    database: str = "*"
    schema_: str = Field("*", alias="schema")
    table: str = Field(min_length=1)
    column: str = Field(min_length=1)
    valid_from: datetime | None = None
    valid_until: datetime

    @field_validator("valid_from", "valid_until")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            return v.replace(tzinfo=UTC)
        return v

    @property
    def rule_id(self) -> str:
        return f"unmask:{self.request_id}"

    def active(self, now: datetime) -> bool:
        return (self.valid_from is None or self.valid_from <= now) and now < self.valid_until

    def describe(self) -> str:
        return (
            f"approved unmask request #{self.request_id} until "
            f"{self.valid_until.astimezone(UTC).strftime('%Y-%m-%d %H:%M:%S UTC')}"
        )


class Strength(IntEnum):
    """How much of a value a masking reveals; higher reveals less. When one result column
    carries values of several masked columns, the strongest of their maskings applies."""

    PATTERN = 1  # format-preserving: the shape and some characters stay
    PARTIAL = 2  # partial, keep_first, keep_last
    TOKEN = 3  # equality of values stays
    FULL = 4  # the length stays
    FIXED = 5
    REDACT = 6
    NULL = 7


def strength(algorithm: Algorithm | None) -> Strength:
    match algorithm:
        case None | Algorithm.PATTERN:
            return Strength.PATTERN
        case Algorithm.PARTIAL | Algorithm.KEEP_FIRST | Algorithm.KEEP_LAST:
            return Strength.PARTIAL
        case Algorithm.TOKEN:
            return Strength.TOKEN
        case Algorithm.FULL:
            return Strength.FULL
        case Algorithm.FIXED:
            return Strength.FIXED
        case Algorithm.REDACT:
            return Strength.REDACT
        case Algorithm.NULL:
            return Strength.NULL
        case _:
            return Strength.NULL


class MaskingConfig(BaseModel):
    """The ``masking:`` section: custom patterns and rules."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    patterns: tuple[MaskingPatternDef, ...] = ()
    rules: tuple[MaskingRule, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> MaskingConfig:
        check_masking(self.patterns, self.rules)
        return self


def check_masking(patterns: tuple[MaskingPatternDef, ...], rules: tuple[MaskingRule, ...]) -> None:
    """Pattern names unique, rule names unique, every rule's pattern known."""
    names: set[str] = set()
    for p in patterns:
        if p.name in names:
            raise ValueError(f"masking pattern {p.name} is defined twice")
        names.add(p.name)
    seen: set[str] = set()
    for r in rules:
        if r.name in seen:
            raise ValueError(f"masking rule name {r.name!r} is used twice")
        seen.add(r.name)
        if r.pattern is not None and r.pattern not in BUILTIN and r.pattern not in names:
            known = ", ".join(sorted(BUILTIN))
            raise ValueError(
                f"masking rule {r.name}: unknown pattern {r.pattern!r} (built in: {known}; or define it under patterns)"
            )

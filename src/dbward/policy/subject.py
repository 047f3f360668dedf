"""Who a grant or rule is for: ``user:alice``, ``group:dba``, ``role:analyst``.

Its own module so that :mod:`dbward.masking.rules` can use it without importing the policy
model (which imports the masking rules for :class:`~dbward.policy.model.PolicySet`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class SubjectType(StrEnum):
    USER = "user"
    GROUP = "group"
    ROLE = "role"


class Subject(BaseModel):
    """Who a grant or rule is for. Also accepted as the string ``"role:analyst"``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    type: SubjectType
    name: str

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        if isinstance(data, str):
            kind, sep, name = data.partition(":")
            if not sep or not name:
                raise ValueError(
                    f"a subject is written type:name (user:alice, group:dba, role:analyst), not {data!r}"
                )
            return {"type": kind.strip(), "name": name.strip()}
        return data

    def __str__(self) -> str:
        return f"{self.type.value} {self.name}"

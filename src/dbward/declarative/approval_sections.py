"""The ``approval_lines:`` section of a ``dbward apply`` file: who approves which requests.

Each item validates against the approval model itself (``approvals/model.py``), so a file that
applies is a line the workflow can use: one to four stages, "any" or "all", approvers written
``user:NAME``, ``group:NAME`` or ``role:NAME`` (each must exist in the file or in dbward), and
request types and statement kinds the workflow knows. Lines are stored in the
``approval_lines`` table (``store/approvals_repo.py``); requests already filed keep the stages
they were filed with, so changing a line never changes a request in flight.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator

from dbward.approvals.model import ApprovalLine
from dbward.approvals.service import line_from_row
from dbward.declarative.schema import Item, SubjectRef
from dbward.declarative.sections import Context, Path_, Reference, Section, register_section
from dbward.sql.model import StatementKind
from dbward.store import approvals_repo

LineName = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]
_KINDS = {k.value for k in StatementKind}
_SECTION_OF = {"user": "users", "group": "groups", "role": "roles"}


class StageItem(Item):
    name: str = ""
    mode: Literal["any", "all"] = "any"
    approvers: Annotated[list[SubjectRef], Field(min_length=1)]


class LineMatchItem(Item):
    connections: list[str] = Field(default_factory=list)
    request_types: list[Literal["access", "sql", "unmask", "export"]] = Field(default_factory=list)
    statement_kinds: list[str] = Field(default_factory=list)
    #: true: only SQL requests that change a ledger table; false: only those that do not
    ledger: bool | None = None

    @field_validator("statement_kinds")
    @classmethod
    def _kinds(cls, v: list[str]) -> list[str]:
        out: list[str] = []
        for k in v:
            key = k.strip().upper().replace("_", " ")
            if key not in _KINDS:
                raise ValueError(f"unknown statement kind {k!r} (for example UPDATE, DELETE, DROP)")
            out.append(key)
        return out


class ApprovalLineItem(Item):
    name: LineName
    #: lower first; the first enabled line that matches a request serves it
    priority: int = 100
    enabled: bool = True
    match: LineMatchItem = Field(default_factory=LineMatchItem)
    stages: Annotated[list[StageItem], Field(min_length=1, max_length=4)]
    allow_urgent: bool = False
    description: str | None = None

    @model_validator(mode="after")
    def _valid(self) -> ApprovalLineItem:
        self.line()
        return self

    def line(self) -> ApprovalLine:
        data = self.model_dump(mode="json")
        data["description"] = self.description or ""
        return ApprovalLine.model_validate(data)

    @classmethod
    def of(cls, line: ApprovalLine) -> ApprovalLineItem:
        m = line.match
        return cls(
            name=line.name,
            priority=line.priority,
            enabled=line.enabled,
            match=LineMatchItem(
                connections=list(m.connections),
                request_types=[t.value for t in m.request_types],  # type: ignore[misc]
                statement_kinds=list(m.statement_kinds),
                ledger=m.ledger,
            ),
            stages=[
                StageItem(
                    name=st.name,
                    mode=st.mode.value,  # type: ignore[arg-type]
                    approvers=[f"{a.type.value}:{a.name}" for a in st.approvers],
                )
                for st in line.stages
            ],
            allow_urgent=line.allow_urgent,
            description=line.description or None,
        )


def _row_fields(line: ApprovalLine) -> dict[str, Any]:
    d = line.model_dump(mode="json")
    return {k: d[k] for k in approvals_repo.LINE_FIELDS}


class ApprovalLines(Section):
    key = "approval_lines"
    kind = "approval line"
    item = ApprovalLineItem

    async def current(self, ctx: Context) -> dict[str, Item]:
        out: dict[str, Item] = {}
        for row in await approvals_repo.list_lines(ctx.session):
            line = line_from_row(row)
            out[row.name] = ApprovalLineItem.of(line)
        return out

    async def create(self, ctx: Context, item: Item, secret: str | None) -> None:
        assert isinstance(item, ApprovalLineItem)
        await approvals_repo.put_line(ctx.session, item.name, create=True, **_row_fields(item.line()))

    async def update(self, ctx: Context, item: Item, secret: str | None) -> None:
        assert isinstance(item, ApprovalLineItem)
        await approvals_repo.put_line(ctx.session, item.name, create=False, **_row_fields(item.line()))

    async def delete(self, ctx: Context, name: str) -> None:
        await approvals_repo.delete_line(ctx.session, name)

    def references(self, item: Item, path: Path_) -> list[Reference]:
        assert isinstance(item, ApprovalLineItem)
        refs: list[Reference] = []
        for i, st in enumerate(item.stages):
            for j, a in enumerate(st.approvers):
                t, _, n = a.partition(":")
                refs.append(Reference((*path, "stages", i, "approvers", j), _SECTION_OF[t], n, "approver"))
        return refs


register_section(ApprovalLines())

"""The audit catalogue is code; its document is generated and must not be stale."""

from __future__ import annotations

from pathlib import Path

from dbward.audit.catalogue_docs import render
from dbward.audit.events import CATALOGUE

DOC = Path(__file__).resolve().parents[3] / "docs" / "audit-events.md"


def test_docs_audit_events_is_current() -> None:
    assert DOC.read_text() == render(), "docs/audit-events.md is stale: run `make docs`"


def test_codes_and_types_are_unique_and_documented() -> None:
    codes = [c.code for c in CATALOGUE]
    types = [c.type for c in CATALOGUE]
    assert len(set(codes)) == len(codes)
    assert len(set(types)) == len(types)
    assert all((c.__doc__ or "").strip() for c in CATALOGUE)

"""docs/openapi.json is the API's OpenAPI document; it must follow the code."""

from __future__ import annotations

import json
from pathlib import Path

from dbward.api.app import openapi_document

DOC = Path(__file__).resolve().parents[3] / "docs" / "openapi.json"


def render() -> str:
    return json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n"


def test_openapi_document_is_current() -> None:
    assert DOC.read_text() == render(), (
        "docs/openapi.json is stale: run `python -m dbward.api.openapi > docs/openapi.json`"
    )


def test_every_operation_is_under_api_v1_and_tagged() -> None:
    doc = json.loads(render())
    for path, ops in doc["paths"].items():
        assert path.startswith("/api/v1/")
        for op in ops.values():
            assert op.get("tags"), path

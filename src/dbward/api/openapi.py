"""Print the API's OpenAPI document (what docs/openapi.json holds): ``python -m dbward.api.openapi``."""

from __future__ import annotations

import json
import sys

from dbward.api.app import openapi_document


def main() -> None:
    sys.stdout.write(json.dumps(openapi_document(), indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()

"""The TOTP enrolment page shows the provisioning URI as an inline SVG QR code beside the key.

The SVG's dark modules are read back from its path and compared with the QR code of the
otpauth URI the page shows, so the code is that URI's, not just some picture.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
import segno

from dbward.store import repo
from dbward.store.db import Store
from tests.integration.api.test_console_signin import ADMIN_PW, make


@pytest.fixture
async def admin_store(sqlite_store: Store) -> Store:
    async with sqlite_store.transaction() as s:
        await repo.create_user(s, sqlite_store.box, "admin", password=ADMIN_PW, is_admin=True)
    return sqlite_store


def dark_modules(path_d: str, border: int) -> set[tuple[int, int]]:
    """(row, column) of every dark module drawn by segno's path of horizontal strokes."""
    out: set[tuple[int, int]] = set()
    x = y = 0.0
    for cmd, a, b in re.findall(r"([MmHhVv])\s*(-?[\d.]+)(?:[ ,]+(-?[\d.]+))?", path_d):
        if cmd == "M":
            x, y = float(a), float(b)
        elif cmd == "m":
            x, y = x + float(a), y + float(b)
        elif cmd == "h":
            for col in range(int(x), int(x + float(a))):
                out.add((int(y - 0.5) - border, col - border))
            x += float(a)
        else:  # pragma: no cover - segno draws rows only
            raise AssertionError(f"unexpected path command {cmd}")
    return out


async def test_enrolment_page_has_the_uri_as_svg_qr_and_the_key(tmp_path: Path, admin_store: Store) -> None:
    b, _journal, client = await make(tmp_path, admin_store)
    async with client:
        r = await b.login("admin", ADMIN_PW)
        assert r.headers["location"] == "/login/enroll"
        page = (await client.get("/login/enroll")).text
    secret = re.search(r'id="totp-secret" class="secret">([A-Z2-7]+)<', page).group(1)  # type: ignore[union-attr]
    uri = re.search(r'id="totp-uri">([^<]+)<', page).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
    assert parse_qs(urlparse(uri).query)["secret"] == [secret]
    svg_text = re.search(r"<svg[^>]*>.*?</svg>", page, re.S).group(0)  # type: ignore[union-attr]
    svg = ET.fromstring(svg_text)
    assert svg.tag.endswith("svg") and svg.get("id") == "totp-qr"

    expected = segno.make(uri, error="m", micro=False)
    scale, border = 4, 4
    side = expected.symbol_size(scale=scale, border=border)[0]
    assert side == (expected.version * 4 + 17 + 2 * border) * scale  # type: ignore[operator]
    assert (int(svg.get("width", "0")), int(svg.get("height", "0"))) == (side, side)

    stroke = next(p for p in svg.iter() if p.tag.endswith("path") and p.get("stroke"))
    drawn = dark_modules(stroke.get("d", ""), border)
    want = {(r, c) for r, row in enumerate(expected.matrix) for c, v in enumerate(row) if v}
    assert drawn == want
    # the CSP forbids inline scripts and styles: the SVG has neither
    assert "<script" not in svg_text and "style=" not in svg_text

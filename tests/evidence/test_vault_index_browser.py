"""vault/index.html (and the one inside an export) in a real headless chromium, from file://:
no errors, no network, Japanese drawn with real glyphs, every link leads to a file that exists.
The screenshot (tests/artifacts/vault-index.png) is for a person to look at."""

from __future__ import annotations

import sys
import zipfile
from datetime import date
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
from browser import load, require_browser, text_is_rendered

sys.path.insert(0, str(Path(__file__).parent))
from test_vault_index import WHEN, Org  # noqa: E402

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@pytest.fixture
def org(tmp_path, small_tree):
    require_browser()
    org = Org(tmp_path, small_tree)
    org.bags = [org.collect(w) for w in WHEN[:4]]
    org.bags.append(org.report("2025-11-20T09:00:00"))
    org.bags.append(org.collect(WHEN[4]))
    return org


def linked_files(visit) -> list[Path]:
    paths = []
    for href in visit.links:
        parts = urlsplit(href)
        assert parts.scheme == "file", f"a link leaves the file system: {href}"
        paths.append(Path(unquote(parts.path)))
    return paths


def test_the_vault_index_in_a_browser(org):
    page = org.write_index()
    visit = load(page, screenshot=ARTIFACTS / "vault-index.png")
    assert visit.console_errors == [] and visit.page_errors == []
    assert visit.network_requests == []
    assert visit.html_lang == "ja"
    assert "証跡保管庫の索引" in visit.text and "最新のレポート" in visit.text and "2025-11" in visit.text
    assert text_is_rendered(page, "証跡保管庫の索引")
    targets = linked_files(visit)
    assert len([t for t in targets if t.name == "summary.html"]) == 5
    assert len([t for t in targets if t.name == "index.html" and t != page.resolve()]) == 2  # the box and the row
    missing = [t for t in targets if not t.is_file()]
    assert missing == [], missing
    assert visit.screenshot.stat().st_size > 10_000


def test_the_index_inside_an_export_in_a_browser(org, tmp_path):
    from evidence.export import export_period

    o = org.cfg.main.organization
    result = export_period(org.vault, date(2025, 11, 1), date(2025, 11, 30), tmp_path / "nov.zip", tz=org.cfg.tz,
                           language=o.language, organization=o.name)
    with zipfile.ZipFile(result.path) as zf:
        zf.extractall(tmp_path / "x")
    page = tmp_path / "x" / result.top / "index.html"
    visit = load(page)
    assert visit.console_errors == [] and visit.page_errors == [] and visit.network_requests == []
    assert "2025-11-01" in visit.text and "2025-10" not in visit.text
    targets = linked_files(visit)
    assert targets and [t for t in targets if not t.is_file()] == []

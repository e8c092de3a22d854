"""The report's index.html in a real headless browser (chromium), opened from file:// as an
auditor would: no errors, no network, Japanese drawn with real glyphs, every link resolving.

The screenshot is saved to tests/artifacts/report.png for a person to look at.
"""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from browser import load, require_browser, text_is_rendered
from report_sample import collect, collected_vault, sample_assessment, seal_sample, use_sample_tables

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name == "id":
                self.ids.add(value)


@pytest.fixture
def report_page(tmp_path, monkeypatch):
    require_browser()
    use_sample_tables(monkeypatch)
    config, vault, key, share = collected_vault(tmp_path)
    seal_sample(config, vault, key, sample_assessment(vault))
    (share / "open" / "新しい資料.txt").write_text("n", encoding="utf-8")
    collect(config, key)
    result = seal_sample(config, vault, key, sample_assessment(vault))  # with changes since the first
    return result.index, result.assessment


def test_report_loads_offline_without_errors_and_every_link_resolves(report_page):
    index, assessment = report_page
    visit = load(index, screenshot=ARTIFACTS / "report.png", click_all_details=True)
    assert visit.console_errors == [] and visit.page_errors == []
    assert visit.network_requests == [], "the page must work from file:// with no network"
    assert visit.html_lang == "ja"
    assert "アクセス権限レポート" in visit.title
    for text in ("誰でもアクセスできる共有", "例外 1 により承認済み (2027-03-31 まで)", "新しい資料.txt", "従業員の給与情報"):
        assert text in visit.text, text
    ids = _Ids()
    ids.feed(index.read_text(encoding="utf-8"))
    page_url = urlparse(visit.url)
    fragments = [urlparse(link).fragment for link in visit.links if urlparse(link).path == page_url.path]
    evidence_links = {f for f in fragments if f.startswith("ev-")}
    wanted = {r.anchor for f in assessment.findings for r in f.evidence}
    assert wanted <= evidence_links, "every finding links to its evidence"
    for fragment in fragments:
        assert fragment in ids.ids, f"#{fragment} has no element with that id"
    elsewhere = [link for link in visit.links if urlparse(link).path != page_url.path]
    assert any(link.endswith("/data/summary.html") for link in elsewhere)
    for link in elsewhere:
        assert link.startswith("file://"), link
        assert Path(unquote(urlparse(link).path)).is_file(), f"{link} does not exist"
    assert visit.screenshot is not None and visit.screenshot.stat().st_size > 10_000


def test_japanese_text_is_drawn_with_real_glyphs(report_page):
    index, _ = report_page
    assert text_is_rendered(index, "指摘事項 個人情報管理台帳 例外承認済み")

"""A real headless browser for the HTML tests: Debian's ``chromium``, driven by Playwright.

Playwright's own browser downloads are never used (no internet here): the Python package talks
to the system's ``/usr/bin/chromium`` over its DevTools pipe. ``.ci/run`` installs both.

:func:`load` opens one ``file://`` page and reports what an auditor's browser would see:
console errors, page errors, every request the page made (anything but the page itself and
other ``file://`` reads counts as network), the rendered text, the links, and a screenshot.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    explicit = os.environ.get("SHOSEKI_TEST_CHROMIUM")
    if explicit:
        return explicit
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def require_browser() -> str:
    """The chromium binary, or skip (CI installs it; a laptop without it skips these tests)."""
    path = chromium_path()
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    if path is None:
        pytest.skip("no chromium on this machine (apt-get install chromium; .ci/run does)")
    return path


def require_japanese_font() -> None:
    """Skip unless fontconfig knows a font with Japanese glyphs (CI installs fonts-ipafont-gothic)."""
    import subprocess

    try:
        out = subprocess.run(["fc-list", ":lang=ja", "family"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        out = ""
    if not out.strip():
        pytest.skip("no font with Japanese glyphs (apt-get install fonts-ipafont-gothic; .ci/run does)")


@dataclass
class PageVisit:
    url: str
    title: str
    text: str                                   # document.body.innerText
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)   # every URL requested, the page included
    links: list[str] = field(default_factory=list)      # resolved href of every <a>
    screenshot: Path | None = None
    html_lang: str | None = None

    @property
    def network_requests(self) -> list[str]:
        """Requests that left the file system (http, https, ws, data fetched by script …)."""
        return [u for u in self.requests if not u.startswith("file://")]


def load(page_path: Path, *, screenshot: Path | None = None, width: int = 1280, height: int = 900,
         full_page: bool = True, click_all_details: bool = False) -> PageVisit:
    """Open ``page_path`` from file:// in headless chromium and record what happened."""
    from playwright.sync_api import sync_playwright

    binary = require_browser()
    url = Path(page_path).resolve().as_uri()
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=binary, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        try:
            context = browser.new_context(viewport={"width": width, "height": height}, locale="ja-JP")
            page = context.new_page()
            visit = PageVisit(url=url, title="", text="")
            page.on("console", lambda m: visit.console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: visit.page_errors.append(str(e)))
            page.on("request", lambda r: visit.requests.append(r.url))
            page.goto(url, wait_until="load")
            page.wait_for_load_state("networkidle")
            if click_all_details:
                page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
            visit.title = page.title()
            visit.text = page.evaluate("document.body ? document.body.innerText : ''")
            visit.links = page.evaluate("Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
            visit.html_lang = page.evaluate("document.documentElement.getAttribute('lang')")
            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(screenshot), full_page=full_page)
                visit.screenshot = screenshot
            return visit
        finally:
            browser.close()


def text_is_rendered(page_path: Path, sample: str) -> bool:
    """Whether ``sample`` (Japanese, say) is drawn with real glyphs, not tofu boxes.

    Renders the sample twice in the page's font, and a string of the same length of a code
    point no font has (U+10FFFD, a private-use plane character): when the widths differ the
    sample's characters have glyphs of their own.
    """
    from playwright.sync_api import sync_playwright

    binary = require_browser()
    require_japanese_font()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=binary, headless=True, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page()
            page.goto(Path(page_path).resolve().as_uri())
            return bool(page.evaluate(
                """(sample) => {
                    const c = document.createElement('canvas').getContext('2d');
                    c.font = getComputedStyle(document.body).font;
                    const tofu = String.fromCodePoint(0x10FFFD).repeat([...sample].length);
                    return Math.abs(c.measureText(sample).width - c.measureText(tofu).width) > 0.5;
                }""",
                sample,
            ))
        finally:
            browser.close()

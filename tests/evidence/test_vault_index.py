"""vault/index.html: every bag by month, the latest report on top, verification from a cache that
never re-hashes a bag it has already checked, and rewritten after every seal."""

from __future__ import annotations

import json
import logging
import re
import stat
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import files_connector, write_config

import evidence.vault_index as vault_index
from collector.cli import main
from collector.config import load_config
from collector.runner import load_signing_key, new_run_id, open_vault, publish_public_key, run_connector
from evidence.bundle import BundleWriter, PreviousBag
from evidence.vault import Vault
from evidence.vault_index import load_cache, write_vault_index
from evidence.verify import verify_vault

JST = "+09:00"
WHEN = [  # local times (Asia/Tokyo) of the test bags: two months, and days at the edges
    "2025-10-31T23:30:00", "2025-11-01T00:10:00", "2025-11-15T12:00:00", "2025-11-30T23:50:00", "2025-12-01T00:05:00",
]


def at(local: str) -> datetime:
    return datetime.fromisoformat(local + JST).astimezone(timezone.utc)


class Org:
    """A configured vault with a signing key, and ways to seal bags at chosen times."""

    def __init__(self, tmp_path: Path, share: Path, language: str = "ja"):
        from evidence.signing import write_keypair

        keys = tmp_path / "keys"
        keys.mkdir(exist_ok=True)
        write_keypair(keys / "minisign.key", keys / "minisign.pub")
        self.config_path = write_config(tmp_path, connectors={"f.toml": files_connector(share)},
                                        signing_key=keys / "minisign.key")
        if language != "ja":
            text = self.config_path.read_text(encoding="utf-8").replace(
                'timezone = "Asia/Tokyo"\n', f'timezone = "Asia/Tokyo"\nlanguage = "{language}"\n')
            self.config_path.write_text(text, encoding="utf-8")
        self.cfg = load_config(self.config_path)
        self.key = load_signing_key(self.cfg)
        self.vault = open_vault(self.cfg)
        publish_public_key(self.vault, self.key)
        self._last_report: PreviousBag | None = None

    def collect(self, local: str | None = None):
        now = (lambda: at(local)) if local else (lambda: datetime.now(timezone.utc))
        return run_connector(self.cfg, self.cfg.connectors[0], signing_key=self.key, now=now).bag

    def report(self, local: str):
        """A report bag as `shoseki report` seals one: Connector-Type report, data/index.html."""
        w = BundleWriter(self.vault, run_id=new_run_id(), connector_id="report", connector_type="report",
                         started=at(local), tz=self.cfg.tz, organization=self.cfg.main.organization.name,
                         previous=self._last_report)
        (w.data / "index.html").write_text(
            '<!DOCTYPE html><html lang="ja"><head><meta charset="utf-8"><title>報告書</title></head>'
            "<body><h1>監査報告書</h1></body></html>\n", encoding="utf-8")
        bag = w.seal(status="complete", reasons=[], finished=at(local), signing_key=self.key,
                     run_info={"identity": None, "errors": [], "calls": {}})
        self._last_report = PreviousBag(bag.path, bag.digest, bag.run_id)
        return bag

    def write_index(self, **kwargs) -> Path:
        o = self.cfg.main.organization
        return write_vault_index(self.vault, tz=self.cfg.tz, language=o.language, organization=o.name, **kwargs)


@pytest.fixture
def org(tmp_path, small_tree):
    return Org(tmp_path, small_tree)


def rows(html: str) -> dict[str, str]:
    """bag relpath -> verification state, as the page shows them."""
    return dict(re.findall(r'data-bag="([^"]+)" data-check="(\w+)"', html))


def page(vault: Vault) -> str:
    return (vault.root / "index.html").read_text(encoding="utf-8")


def test_every_bag_by_month_newest_first_with_status_time_and_link(org):
    bags = [org.collect(w) for w in WHEN]
    path = org.write_index()
    html = page(org.vault)
    assert path == org.vault.root / "index.html"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert '<html lang="ja">' in html and "証跡保管庫の索引" in html and "Evidence vault index" in html
    assert rows(html) == {b.relpath: "ok" for b in bags}
    months = [m for m in re.findall(r'<h2 id="m-(\d{4}-\d{2})">', html)]
    assert months == ["2025-12", "2025-11", "2025-10"]
    november = html[html.index('id="m-2025-11"'):html.index('id="m-2025-10"')]
    order = [m for m in re.findall(r'data-bag="([^"]+)"', november)]
    assert order == [bags[3].relpath, bags[2].relpath, bags[1].relpath]  # newest first within the month
    assert "2025-11-30 23:50" in november and "files-main" in november and "local_files" in november
    for b in bags:  # each row links the bag's summary, relative to the vault
        assert f'href="{b.relpath.replace("+", "%2B")}/data/summary.html"' in html
    assert html.count('<span class="status complete">complete</span>') == len(bags)
    assert "まだレポートはありません" in html
    assert 'id="ledger-ok"' in html


def test_the_latest_report_is_at_the_top_and_links_its_index(org):
    org.collect(WHEN[0])
    org.report("2025-11-01T09:00:00")
    newest = org.report("2025-11-20T09:00:00")
    org.collect(WHEN[3])
    org.write_index()
    html = page(org.vault)
    top = html[html.index('id="latest-report"'):html.index('id="summary"')]
    assert f'href="{newest.relpath.replace("+", "%2B")}/data/index.html"' in top
    assert "2025-11-20 09:00" in top
    assert html.count("/data/index.html") == 3  # the box, and both reports' rows
    assert verify_vault(org.vault).ok


def test_english_when_the_configuration_says_so(tmp_path, small_tree):
    org = Org(tmp_path, small_tree, language="en")
    org.collect()
    org.write_index()
    html = page(org.vault)
    assert '<html lang="en">' in html and "<h1>Evidence vault index" in html and "No report yet" in html


def test_a_second_write_verifies_nothing_and_a_changed_tag_manifest_is_checked_again(org, monkeypatch):
    bags = [org.collect(w) for w in WHEN[:3]]
    calls: list[str] = []
    real = vault_index.verify_bag
    monkeypatch.setattr(vault_index, "verify_bag", lambda bag, **kw: calls.append(kw["label"]) or real(bag, **kw))
    org.write_index()
    assert sorted(calls) == sorted(b.relpath for b in bags)  # once each, newest first
    assert calls[0] == bags[-1].relpath
    calls.clear()
    org.write_index()
    assert calls == []  # nothing new: nothing hashed
    cache = load_cache(org.vault)
    assert set(cache) == {b.relpath for b in bags}
    assert all(e["ok"] and e["by"] == "index" and e["checked_utc"].endswith("Z") for e in cache.values())

    bag_info = bags[1].path / "bag-info.txt"  # a tag file rewritten (and its tag manifest with it)
    bag_info.write_text(bag_info.read_text() + "Note: added later\n")
    tag = bags[1].path / "tagmanifest-sha256.txt"
    tag.write_text(tag.read_text().replace(tag.read_text()[:64], "0" * 64, 1))
    org.write_index()
    assert calls == [bags[1].relpath]
    html = page(org.vault)
    assert rows(html)[bags[1].relpath] == "failed"
    assert "changed file bag-info.txt" in html
    assert "has digest" in html and 'id="ledger-problems"' in html  # the ledger recorded another digest


def test_a_changed_payload_file_shows_as_failed_after_shoseki_verify(org):
    bags = [org.collect(w) for w in WHEN[:2]]
    org.write_index()
    target = bags[0].path / "data" / "tables" / "grants.csv"
    target.write_bytes(target.read_bytes() + b"x")
    org.write_index()  # the tag manifest is unchanged: the cached result stands until a full verify
    assert rows(page(org.vault))[bags[0].relpath] == "ok"

    result = CliRunner().invoke(main, ["--config", str(org.config_path), "verify"])
    assert result.exit_code == 1 and "changed file data/tables/grants.csv" in result.output
    html = page(org.vault)  # verify rewrote the page with what it found
    assert rows(html) == {bags[0].relpath: "failed", bags[1].relpath: "ok"}
    assert "changed file data/tables/grants.csv" in html and "(shoseki verify)" in html
    entry = load_cache(org.vault)[bags[0].relpath]
    assert entry["ok"] is False and entry["by"] == "verify"
    org.write_index()  # and the next write keeps it
    assert rows(page(org.vault))[bags[0].relpath] == "failed"


def test_a_full_verify_records_only_the_bags_it_checked(org):
    first = org.collect(WHEN[0])
    report = verify_vault(org.vault)
    later = org.collect(WHEN[1])  # sealed after the verify began: it has not been checked by it
    assert vault_index.record_verification(org.vault, report) == 1
    cache = load_cache(org.vault)
    assert cache[first.relpath]["by"] == "verify" and cache[first.relpath]["ok"] is True
    assert later.relpath not in cache or cache[later.relpath]["by"] != "verify"


def test_the_budget_leaves_bags_for_the_next_write(org):
    bags = [org.collect(w) for w in WHEN[:2]]
    org.write_index(verify_budget_s=0)
    html = page(org.vault)
    assert set(rows(html).values()) == {"unchecked"} and "未検証" in html
    org.write_index()
    assert set(rows(page(org.vault)).values()) == {"ok"}
    assert len(load_cache(org.vault)) == len(bags)


def test_ledger_problems_are_visible(org):
    bags = [org.collect(w) for w in WHEN[:3]]
    copy = bags[1].path.parent / bags[1].path.name.replace(bags[1].run_id, "r00000000")
    import shutil

    shutil.copytree(bags[1].path, copy)  # a bag nobody sealed: the ledger does not know it
    shutil.rmtree(bags[2].path)  # a sealed bag removed
    org.write_index()
    html = page(org.vault)
    alert = html[html.index('id="ledger-problems"'):]
    assert "is not recorded in ledger.jsonl" in alert
    assert "the bag this line records is missing from the vault" in alert
    row = html[html.index(f'data-bag="{org.vault.relative(copy)}"'):]
    assert row[:row.index("</tr>")].count('class="status bad"') == 1  # its ledger cell


def test_the_page_and_its_temporary_file_are_not_evidence(org):
    org.collect(WHEN[0])
    org.collect(WHEN[1])
    (org.vault.state / "index.html.99999.tmp").write_text("left by a crash")
    org.write_index()
    assert (org.vault.root / "index.html").exists()
    assert not list(org.vault.root.glob("*.tmp")) and not list(org.vault.root.glob(".index*"))
    report = verify_vault(org.vault)
    assert report.ok, [p.describe() for p in report.problems]
    result = CliRunner().invoke(main, ["--config", str(org.config_path), "reindex"])
    assert result.exit_code == 0 and "catalogue rebuilt: 2 run(s)" in result.output


def test_shoseki_collect_rewrites_the_page(files_config, tmp_path):
    result = CliRunner().invoke(main, ["--config", str(files_config), "collect", "--no-progress"])
    assert result.exit_code == 0, result.output
    vault = Vault(tmp_path / "vault")
    (bag,) = list(vault.iter_bags())
    assert rows(page(vault)) == {vault.relative(bag): "ok"}
    CliRunner().invoke(main, ["--config", str(files_config), "collect", "--no-progress"])
    assert len(rows(page(vault))) == 2


def test_a_page_that_cannot_be_written_never_fails_the_sealed_run(files_config, tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(vault_index, "write_vault_index", broken)
    with caplog.at_level(logging.WARNING, logger="shoseki.runner"):
        result = CliRunner().invoke(main, ["--config", str(files_config), "collect", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "files-main: complete ->" in result.output
    vault = Vault(tmp_path / "vault")
    assert len(list(vault.iter_bags())) == 1 and verify_vault(vault).ok
    assert any("could not update" in r.getMessage() and "No space left on device" in r.getMessage()
               and "the sealed bag is not affected" in r.getMessage() for r in caplog.records)


def test_the_daemon_rewrites_the_page_after_a_seal(tmp_path, small_tree):
    from collector.daemon import Daemon

    path = write_config(tmp_path, main_extra='\n[daemon]\njitter = "0s"\nstop_timeout = "10s"\n',
                        connectors={"f.toml": files_connector(small_tree, extra='schedule = "0 3 29 2 *"\n')})
    cfg = load_config(path)
    daemon = Daemon(cfg)
    daemon.start()  # never collected: overdue, runs at once
    try:
        vault = Vault(cfg.vault_path)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not ((vault.root / "index.html").exists() and list(vault.iter_bags())):
            time.sleep(0.05)
        (bag,) = list(vault.iter_bags())
        while time.monotonic() < deadline and vault.relative(bag) not in rows(page(vault)):
            time.sleep(0.05)
        assert rows(page(vault)) == {vault.relative(bag): "ok"}
    finally:
        assert daemon.stop()
    cache = json.loads((vault.state / "verified.json").read_text(encoding="utf-8"))
    assert cache["format"] == "shoseki-verified/1" and list(cache["bags"]) == [vault.relative(bag)]


def test_the_demo_leaves_a_checked_page_and_says_where(files_config, tmp_path):
    from collector.demo import _collect_and_verify

    printed: list[str] = []
    assert _collect_and_verify(load_config(files_config), printed.append) == 0
    index = tmp_path / "vault" / "index.html"
    assert f"vault index: {index}  (open it in a browser: every bag by month, with its verification)" in printed
    vault = Vault(tmp_path / "vault")
    assert set(rows(page(vault)).values()) == {"ok"}
    assert {e["by"] for e in load_cache(vault).values()} == {"verify"}

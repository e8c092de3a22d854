"""``shoseki report`` end to end: collect, judge, seal, verify; and every way to ask it wrongly.

These run the real judging (evidence.findings) and the packaged control catalogue
(evidence.controls) over local_files bags.
"""

from __future__ import annotations

import json
import os
from datetime import date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from conftest import files_connector, write_config

from collector.cli import main
from evidence.verify import read_bag_info

TOKYO = ZoneInfo("Asia/Tokyo")


def _cli(config: Path, *args: str):
    return CliRunner().invoke(main, ["--config", str(config), *args])


def _today() -> date:
    return datetime.now(TOKYO).date()


def _reports(vault: Path) -> list[Path]:
    """Report bags in the order they were sealed (the ledger's)."""
    from evidence import ledger

    return [vault / e.bag for e in ledger.entries(vault / "ledger.jsonl") if e.connector_id == "report"]


@pytest.fixture
def two_connectors(tmp_path, small_tree, keypair) -> Path:
    """files-main collected once; files-two configured but never collected (so: no evidence)."""
    path = write_config(tmp_path, signing_key=keypair[0], connectors={
        "a.toml": files_connector(small_tree), "b.toml": files_connector(small_tree, "files-two")})
    collected = _cli(path, "collect", "--no-progress", "files-main")
    assert collected.exit_code == 0, collected.output
    return path


def test_report_is_sealed_verified_and_chained_and_findings_are_not_an_error(two_connectors, tmp_path):
    vault = tmp_path / "vault"
    first = _cli(two_connectors, "report")
    assert first.exit_code == 0, first.output
    assert "report sealed and signed: " in first.output
    assert "no current, complete evidence for files-two (missing)" in first.output
    assert "findings: " in first.output and "changes: not counted (no previous report)" in first.output
    index = Path(first.output.strip().splitlines()[-1].removeprefix("open: "))
    assert index.is_file() and index.name == "index.html"
    assert "files-two" in index.read_text(encoding="utf-8")
    body = json.loads((index.parent / "report.json").read_text(encoding="utf-8"))
    assert any(f["rule"] == "collection_missing" and f["connector_id"] == "files-two" for f in body["findings"])
    verified = _cli(two_connectors, "verify")
    assert verified.exit_code == 0 and verified.output.startswith("OK: "), verified.output

    second = _cli(two_connectors, "report")
    assert second.exit_code == 0, second.output
    assert "changes since the previous report" in second.output
    old, new = _reports(vault)
    assert read_bag_info(new)["Previous-Bag-Digest"] == f"sha256:{_digest(old)}"
    assert _cli(two_connectors, "verify").exit_code == 0
    status = _cli(two_connectors, "status")
    assert "latest report: " in status.output and new.name in status.output


def _digest(bag: Path) -> str:
    import hashlib

    return hashlib.sha256((bag / "tagmanifest-sha256.txt").read_bytes()).hexdigest()


@pytest.mark.parametrize("args, message", [
    (["--from", "2026-01-01"], "--from needs --to"),
    (["--to", "2026-01-01"], "--to needs --from (for a single date use --as-of)"),
    (["--from", "2026-02-01", "--to", "2026-01-01"], "--from 2026-02-01 is after --to 2026-01-01"),
    (["--as-of", "2026-01-01", "--from", "2025-12-01", "--to", "2025-12-31"], "--as-of cannot be combined with --from/--to"),
    (["--as-of", "2026/01/01"], "does not match the format '%Y-%m-%d'"),
])
def test_bad_dates_exit_2_and_write_nothing(two_connectors, tmp_path, args, message):
    result = _cli(two_connectors, "report", *args)
    assert result.exit_code == 2 and message in result.output, result.output
    assert _reports(tmp_path / "vault") == []


def test_a_date_after_today_is_refused(two_connectors, tmp_path):
    tomorrow = (_today() + timedelta(days=1)).isoformat()
    result = _cli(two_connectors, "report", "--as-of", tomorrow)
    assert result.exit_code == 2 and f"{tomorrow} is after today" in result.output
    assert _reports(tmp_path / "vault") == []


def test_as_of_a_day_before_any_collection_judges_nothing_and_says_so(two_connectors, tmp_path):
    yesterday = (_today() - timedelta(days=1)).isoformat()
    result = _cli(two_connectors, "report", "--as-of", yesterday)
    assert result.exit_code == 0, result.output
    assert f"as of {yesterday} 23:59:59 +09:00 (Asia/Tokyo)" in result.output
    assert "no current, complete evidence for files-main (missing)" in result.output
    info = read_bag_info(_reports(tmp_path / "vault")[0])
    assert "Judged-Bag-Digest" not in info and info["Report-As-Of-UTC"].startswith(
        (datetime.fromisoformat(f"{yesterday}T23:59:59+09:00") - timedelta(hours=9)).strftime("%Y-%m-%dT%H:%M:%S"))


def test_a_period_counts_changes_from_the_end_of_its_first_day(two_connectors, tmp_path):
    yesterday, today = (_today() - timedelta(days=1)).isoformat(), _today().isoformat()
    result = _cli(two_connectors, "report", "--from", yesterday, "--to", today)
    assert result.exit_code == 0, result.output
    assert "changes during the period" in result.output
    data = _reports(tmp_path / "vault")[0] / "data"
    run = json.loads((data / "run.json").read_text(encoding="utf-8"))
    assert run["period"]["from"] == yesterday and run["period"]["to"] == today
    body = json.loads((data / "report.json").read_text(encoding="utf-8"))
    assert body["baseline"]["kind"] == "period"
    assert {c["connector_id"]: c["state"] for c in body["changes"]} == {"files-main": "no_bag", "files-two": "no_bag"}
    assert read_bag_info(data.parent)["Report-Period"] == f"{yesterday}/{today}"


def test_configuration_problems_exit_2(tmp_path, small_tree):
    empty = write_config(tmp_path / "empty")
    result = _cli(empty, "report")
    assert result.exit_code == 2 and "no connectors configured" in result.output

    reserved = write_config(tmp_path / "reserved", connectors={"a.toml": files_connector(small_tree, "report")})
    result = _cli(reserved, "report")
    assert result.exit_code == 2 and "'report' is reserved for the report bundles" in result.output

    broken = write_config(tmp_path / "broken", connectors={"a.toml": files_connector(small_tree)})
    (broken.parent / "contractors.toml").write_text('[[contractor]]\nname = "x"\nnope = 1\n', encoding="utf-8")
    result = _cli(broken, "report")
    assert result.exit_code == 2 and "contractors.toml" in result.output and "configuration error" in result.output

    bad_key = tmp_path / "bad.key"
    bad_key.write_text("untrusted comment: x\nnot base64!\n")
    keyed = write_config(tmp_path / "keyed", connectors={"a.toml": files_connector(small_tree)}, signing_key=bad_key)
    result = _cli(keyed, "report")
    assert result.exit_code == 2 and "signing key:" in result.output


def test_evidence_changed_after_sealing_is_not_judged(two_connectors, tmp_path):
    bag = next((tmp_path / "vault").glob("2*/2*/*_files-main_*"))
    records = bag / "data" / "records" / "grants.jsonl.gz"
    os.chmod(records, 0o640)
    records.write_bytes(b"tampered")
    result = _cli(two_connectors, "report")
    assert result.exit_code == 1 and "cannot judge the evidence" in result.output
    assert "shoseki verify" in result.output
    assert _reports(tmp_path / "vault") == []

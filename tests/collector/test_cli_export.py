"""`shoseki export --from DATE --to DATE OUT.zip`: what it prints, and its exit codes."""

from __future__ import annotations

import stat
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).parents[1] / "evidence"))
from test_vault_index import WHEN, Org  # noqa: E402

from collector.cli import main  # noqa: E402


@pytest.fixture
def org(tmp_path, small_tree):
    org = Org(tmp_path, small_tree)
    org.bags = [org.collect(w) for w in WHEN]
    return org


def shoseki(org: Org, *args: str):
    return CliRunner().invoke(main, ["--config", str(org.config_path), "export", *args])


def test_export_writes_the_zip_and_says_what_is_in_it(org, tmp_path):
    out = tmp_path / "audit" / "nov.zip"
    out.parent.mkdir()
    result = shoseki(org, "--from", "2025-11-01", "--to", "2025-11-30", str(out))
    assert result.exit_code == 0, result.output
    assert f"wrote {out}: 3 bag(s) sealed 2025-11-01 to 2025-11-30 (Asia/Tokyo)" in result.output
    assert "shoseki-export_2025-11-01_2025-11-30/README.txt explains how to verify it offline" in result.output
    assert "SHA-256 of the last ledger line exported: " in result.output
    with zipfile.ZipFile(out) as zf:
        bags = {n.split("/")[3] for n in zf.namelist() if n.endswith("/bagit.txt")}
    assert bags == {b.path.name for b in org.bags[1:4]}
    assert list(out.parent.iterdir()) == [out]  # no temporary file left beside it
    assert stat.S_IMODE(out.stat().st_mode) == 0o640


def test_one_day(org, tmp_path):
    result = shoseki(org, "--from", "2025-12-01", "--to", "2025-12-01", str(tmp_path / "d.zip"))
    assert result.exit_code == 0 and "1 bag(s)" in result.output, result.output


@pytest.mark.parametrize("args, code, message", [
    (["--from", "2025-12-01", "--to", "2025-11-01"], 2, "error: --from 2025-12-01 is after --to 2025-11-01"),
    (["--from", "2025/11/01", "--to", "2025-11-30"], 2, "Invalid value for '--from'"),
    (["--to", "2025-11-30"], 2, "Missing option '--from'"),
    (["--from", "2024-01-01", "--to", "2024-12-31"], 1,
     "error: nothing to export: no bag was sealed from 2024-01-01 to 2024-12-31 (Asia/Tokyo); "
     "the vault holds bags sealed from 2025-10-31 to 2025-12-01"),
])
def test_refusals(org, tmp_path, args, code, message):
    out = tmp_path / "x.zip"
    result = shoseki(org, *args, str(out))
    assert result.exit_code == code and message in result.output, result.output
    assert not out.exists()


def test_a_missing_folder_is_named(org, tmp_path):
    out = tmp_path / "no-such-folder" / "nov.zip"
    result = shoseki(org, "--from", "2025-11-01", "--to", "2025-11-30", str(out))
    assert result.exit_code == 1, result.output
    assert f"error: {out.parent}: no such folder; create it first, or choose another place for the zip" in result.output


def test_an_existing_file_is_kept_unless_forced(org, tmp_path):
    out = tmp_path / "nov.zip"
    out.write_bytes(b"an earlier export")
    result = shoseki(org, "--from", "2025-11-01", "--to", "2025-11-30", str(out))
    assert result.exit_code == 2 and f"error: {out} already exists; choose another name, or add --force" in result.output
    assert out.read_bytes() == b"an earlier export"
    result = shoseki(org, "--from", "2025-11-01", "--to", "2025-11-30", "--force", str(out))
    assert result.exit_code == 0 and zipfile.is_zipfile(out), result.output


def test_problems_the_vault_shows_are_printed_and_exit_1(org, tmp_path):
    import shutil

    shutil.rmtree(org.bags[2].path)
    result = shoseki(org, "--from", "2025-11-01", "--to", "2025-11-30", str(tmp_path / "nov.zip"))
    assert result.exit_code == 1, result.output
    assert f"PROBLEM  {org.bags[2].relpath}: the ledger records this bag, but it is missing from the vault" in result.output
    assert "2 bag(s)" in result.output

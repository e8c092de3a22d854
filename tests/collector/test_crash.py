"""Kill -9 in the middle of a collection loses the run in progress and nothing sealed."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import files_connector, write_config

from collector.state import Catalogue
from evidence.verify import verify_vault
from evidence.vault import Vault


def _make_tree(root, dirs=200, files_per_dir=250):
    for d in range(dirs):
        sub = root / f"d{d:04d}"
        sub.mkdir(parents=True)
        for f in range(files_per_dir):
            (sub / f"f{f:04d}.txt").touch()


def _collect(config):
    return subprocess.run(
        [sys.executable, "-m", "collector.cli", "--config", str(config), "collect", "--no-progress"],
        capture_output=True, text=True, timeout=300,
    )


@pytest.mark.slow
def test_sigkill_mid_collection_then_next_run_recovers(tmp_path):
    root = tmp_path / "share"
    _make_tree(root)
    config = write_config(tmp_path, connectors={"files.toml": files_connector(root)})
    vault = Vault(tmp_path / "vault")
    # one good bag first, so there is sealed evidence that must survive
    assert _collect(config).returncode == 0
    sealed_before = list(vault.iter_bags())
    assert len(sealed_before) == 1

    proc = subprocess.Popen(
        [sys.executable, "-m", "collector.cli", "--config", str(config), "collect", "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    leftover = None
    while time.monotonic() < deadline and leftover is None:
        runs = [p for p in vault.partial.iterdir() if p.is_dir()] if vault.partial.exists() else []
        grants = [r / "data" / "records" / "grants.jsonl.gz" for r in runs]
        if any(g.exists() and g.stat().st_size > 0 for g in grants):
            leftover = runs[0]
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert leftover is not None, "the collection finished before it could be killed; make the tree larger"
    # nothing half-sealed in the dated tree; the sealed bag is intact
    assert list(vault.iter_bags()) == sealed_before
    assert verify_vault(vault).ok
    assert leftover.exists()

    result = _collect(config)
    assert result.returncode == 0, result.stderr
    assert "moved to .aborted" in result.stderr
    assert not leftover.exists()
    aborted = vault.aborted / leftover.name
    assert json.loads((aborted / "aborted.json").read_text())["status"] == "aborted"
    rows = {r["run_id"]: r for r in Catalogue(vault).runs("files-main")}
    assert rows[leftover.name]["status"] == "aborted"
    bags = list(vault.iter_bags())
    assert len(bags) == 2
    report = verify_vault(vault)
    assert report.ok, [p.describe() for p in report.problems]

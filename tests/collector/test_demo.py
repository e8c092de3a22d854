"""The newcomer's first command, end to end, checked by tools shoseki did not write."""

import re
import shutil
import subprocess
import sys

import bagit
import pytest


@pytest.fixture
def demo_run(tmp_path):
    def run():
        return subprocess.run(
            [sys.executable, "-m", "collector.cli", "demo"], cwd=tmp_path, capture_output=True, text=True, timeout=300
        )
    return tmp_path, run


def test_demo_leaves_a_vault_that_verifies_everywhere(demo_run):
    cwd, run = demo_run
    first = run()
    assert first.returncode == 0, first.stdout + first.stderr
    collected = re.findall(r"^collected ([a-z0-9-]+): (\w+)$", first.stdout, re.M)
    # the sample share, and every connector the sandbox has a template for
    assert {"files-demo", "google-directory", "google-drive", "entra-id", "m365-files"} <= {c for c, _ in collected}
    assert all(status == "complete" for _, status in collected), first.stdout
    assert "verify: OK" in first.stdout
    second = run()  # a second bag per connector, chained to the first (incremental where the connector can)
    assert second.returncode == 0, second.stdout + second.stderr
    vault = cwd / "vault"
    all_bags = sorted(p for p in vault.glob("2*/2*/*") if p.is_dir())
    reports = [b for b in all_bags if "_report_" in b.name]
    assert len(all_bags) == 2 * len(collected) + len(reports) and len(reports) == 2  # a report after each run
    assert re.search(r"^  findings: \d+ \(critical \d+", first.stdout, re.M)
    assert "changes since the previous report" in second.stdout
    # the sample share's salary folder is in the demo's register; every local account reaching it is drift
    findings = (reports[-1] / "data" / "findings.csv").read_text(encoding="utf-8-sig")
    assert re.search(r"^F-\w+,high,[^,]*,register_drift,[^,]*,files-demo,files-demo:[^,]*人事部,[^,]*,anyone-local,", findings, re.M)
    bags = [b for b in all_bags if "_files-demo_" in b.name]
    assert len(bags) == 2
    for bag in all_bags:
        bagit.Bag(str(bag)).validate()
    verify = subprocess.run(
        [sys.executable, "-m", "collector.cli", "--config", "shoseki-demo/config/shoseki.toml", "verify"],
        cwd=cwd, capture_output=True, text=True,
    )
    assert verify.returncode == 0, verify.stdout
    summary = (bags[0] / "data" / "summary.html").read_text(encoding="utf-8")
    assert "complete" in summary and "files-demo" in summary
    grants = (bags[0] / "data" / "tables" / "grants.csv").read_text(encoding="utf-8-sig")
    assert "給与明細_2026-10.csv" in grants and "anyone-local" in grants
    if shutil.which("minisign"):
        for bag in bags:
            out = subprocess.run(
                ["minisign", "-V", "-p", str(vault / "minisign.pub"), "-m", str(bag / "tagmanifest-sha256.txt")],
                capture_output=True, text=True, stdin=subprocess.DEVNULL,
            )
            assert out.returncode == 0, out.stderr

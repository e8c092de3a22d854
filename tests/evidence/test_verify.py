"""Tampering an auditor must see: each kind of change is named with its path."""

import shutil
import subprocess

import bagit
import pytest
from click.testing import CliRunner
from conftest import fake_connector, write_config

from collector.cli import main
from collector.config import load_config
from collector.runner import load_signing_key, publish_public_key, run_connector, open_vault
from evidence.verify import (
    BadSignature, BrokenChain, ChangedFile, LedgerMismatch, MissingFile, UnexpectedFile, UnledgeredBag, verify_vault,
)
from evidence.vault import Vault


@pytest.fixture
def vault_with_bags(tmp_path, fake_registered, keypair):
    path = write_config(tmp_path, connectors={"f.toml": fake_connector(records=50)}, signing_key=keypair[0])
    cfg = load_config(path)
    key = load_signing_key(cfg)
    publish_public_key(open_vault(cfg), key)
    bags = [run_connector(cfg, cfg.connectors[0], signing_key=key).bag for _ in range(3)]
    return path, Vault(cfg.vault_path), bags


def _verify_cli(config_path):
    return CliRunner().invoke(main, ["--config", str(config_path), "verify"])


def test_clean_vault_verifies_with_shoseki_bagit_and_sha256sum(vault_with_bags):
    path, vault, bags = vault_with_bags
    result = _verify_cli(path)
    assert result.exit_code == 0, result.output
    assert "OK: 3 bag(s)" in result.output
    for bag in bags:
        bagit.Bag(str(bag.path)).validate()
        for manifest in ("manifest-sha256.txt", "tagmanifest-sha256.txt"):
            subprocess.run(["sha256sum", "--quiet", "-c", manifest], cwd=bag.path, check=True)


@pytest.mark.skipif(shutil.which("minisign") is None, reason="the minisign binary is not installed (CI installs it)")
def test_signature_passes_the_real_minisign(vault_with_bags):
    _, vault, bags = vault_with_bags
    for bag in bags:
        out = subprocess.run(
            ["minisign", "-V", "-p", str(vault.public_key), "-m", str(bag.path / "tagmanifest-sha256.txt")],
            capture_output=True, text=True, stdin=subprocess.DEVNULL,
        )
        assert out.returncode == 0, out.stderr
        assert f"tagmanifest-sha256={bag.digest}" in out.stdout
        key_id = next(l for l in (bag.path / "bag-info.txt").read_text().splitlines() if l.startswith("Signing-Key-Id:"))
        assert key_id.split(": ")[1] in vault.public_key.read_text()  # the id minisign shows for the key


def test_flipped_byte_in_payload_is_a_changed_file(vault_with_bags):
    path, vault, bags = vault_with_bags
    target = bags[1].path / "data" / "tables" / "principals.csv"
    data = bytearray(target.read_bytes())
    data[10] ^= 0x01
    target.write_bytes(bytes(data))
    report = verify_vault(vault)
    assert [type(p) for p in report.problems] == [ChangedFile]
    assert report.problems[0].path == "data/tables/principals.csv"
    assert report.problems[0].bag == bags[1].relpath
    result = _verify_cli(path)
    assert result.exit_code == 1
    assert f"{bags[1].relpath}: changed file data/tables/principals.csv" in result.output


def test_deleted_payload_file_is_missing(vault_with_bags):
    path, vault, bags = vault_with_bags
    (bags[0].path / "data" / "run.json").unlink()
    report = verify_vault(vault)
    assert [(type(p), p.path) for p in report.problems] == [(MissingFile, "data/run.json")]
    assert "missing file data/run.json" in _verify_cli(path).output


def test_added_file_is_unexpected(vault_with_bags):
    path, vault, bags = vault_with_bags
    (bags[2].path / "data" / "tables" / "extra.csv").write_text("x")
    report = verify_vault(vault)
    assert [(type(p), p.path) for p in report.problems] == [(UnexpectedFile, "data/tables/extra.csv")]
    assert "unexpected file data/tables/extra.csv" in _verify_cli(path).output


def test_deleted_earlier_bag_breaks_ledger_and_chain(vault_with_bags):
    path, vault, bags = vault_with_bags
    shutil.rmtree(bags[1].path)
    report = verify_vault(vault)
    kinds = {type(p) for p in report.problems}
    assert kinds == {LedgerMismatch, BrokenChain}
    assert any(isinstance(p, LedgerMismatch) and p.bag == bags[1].relpath and "missing" in p.describe() for p in report.problems)
    chain = [p for p in report.problems if isinstance(p, BrokenChain)][0]
    assert chain.bag == bags[2].relpath and bags[1].relpath in chain.describe()
    result = _verify_cli(path)
    assert result.exit_code == 1 and "broken chain" in result.output


def test_bag_deleted_with_its_ledger_line_breaks_the_ledger_chain(vault_with_bags):
    _, vault, bags = vault_with_bags
    shutil.rmtree(bags[1].path)
    lines = vault.ledger.read_text().splitlines()
    vault.ledger.write_text("\n".join([lines[0], lines[2]]) + "\n")
    report = verify_vault(vault)
    assert any(isinstance(p, LedgerMismatch) and "chain is broken" in p.message for p in report.problems)
    assert any(isinstance(p, BrokenChain) for p in report.problems)


def test_rewritten_bag_info_is_caught_by_tag_manifest(vault_with_bags):
    _, vault, bags = vault_with_bags
    info = bags[0].path / "bag-info.txt"
    info.write_text(info.read_text().replace("Collection-Status: complete", "Collection-Status: partial"))
    report = verify_vault(vault)
    assert [(type(p), p.path) for p in report.problems] == [(ChangedFile, "bag-info.txt")]


def test_forged_tag_manifest_fails_signature_and_ledger(vault_with_bags):
    _, vault, bags = vault_with_bags
    (bags[0].path / "data" / "run.json").write_text("{}")
    # a forger recomputes the manifests, but cannot re-sign or rewrite the ledger consistently
    import hashlib
    bag = bags[0].path
    lines = []
    for line in (bag / "manifest-sha256.txt").read_text().splitlines():
        digest, rel = line.split("  ", 1)
        if rel == "data/run.json":
            digest = hashlib.sha256(b"{}").hexdigest()
        lines.append(f"{digest}  {rel}")
    (bag / "manifest-sha256.txt").write_text("\n".join(lines) + "\n")
    tags = []
    for name in ("bag-info.txt", "bagit.txt", "manifest-sha256.txt"):
        tags.append(f"{hashlib.sha256((bag / name).read_bytes()).hexdigest()}  {name}")
    (bag / "tagmanifest-sha256.txt").write_text("\n".join(tags) + "\n")
    report = verify_vault(vault)
    kinds = {type(p) for p in report.problems}
    assert BadSignature in kinds and LedgerMismatch in kinds and BrokenChain in kinds
    sig = [p for p in report.problems if isinstance(p, BadSignature)][0]
    assert "does not match" in sig.reason


def test_unledgered_bag_is_reported(vault_with_bags):
    _, vault, bags = vault_with_bags
    copy = bags[2].path.parent / (bags[2].path.name + "x")
    shutil.copytree(bags[2].path, copy)
    report = verify_vault(vault)
    assert any(isinstance(p, UnledgeredBag) and p.bag.endswith("x") for p in report.problems)


def test_single_bag_verify_uses_the_vault_public_key(vault_with_bags):
    _, vault, bags = vault_with_bags
    result = CliRunner().invoke(main, ["verify", str(bags[0].path)])
    assert result.exit_code == 0, result.output
    (bags[0].path / "tagmanifest-sha256.txt.minisig").unlink()
    result = CliRunner().invoke(main, ["verify", str(bags[0].path)])
    assert result.exit_code == 1
    assert "signature file is missing" in result.output


def test_verify_waits_for_a_seal_in_progress_instead_of_calling_its_bag_unledgered(vault_with_bags):
    """A seal renames the bag into the dated tree, then writes its ledger line, under the ledger
    lock; verify lists the bags and reads the ledger under the same lock."""
    import threading

    from evidence import ledger

    _, vault, bags = vault_with_bags
    entry = next(e for e in ledger.entries(vault.ledger) if e.bag == bags[2].relpath)
    last_line = vault.ledger.read_bytes().splitlines(keepends=True)[-1]
    done: list = []
    with vault.lock("ledger"):  # the seal of bags[2] is half done: renamed, not yet recorded
        vault.ledger.write_bytes(b"".join(vault.ledger.read_bytes().splitlines(keepends=True)[:-1]))
        worker = threading.Thread(target=lambda: done.append(verify_vault(vault)))
        worker.start()
        worker.join(0.5)
        assert worker.is_alive() and not done  # waiting for the seal to finish
        vault.ledger.write_bytes(vault.ledger.read_bytes() + last_line)
    worker.join(30)
    assert entry.seq == 3 and done and done[0].ok, [p.describe() for p in done[0].problems]


def test_verifying_a_copy_of_a_vault_writes_nothing_into_it(vault_with_bags, tmp_path):
    _, vault, _ = vault_with_bags
    copy = tmp_path / "auditor-copy"
    shutil.copytree(vault.root, copy, ignore=shutil.ignore_patterns(".state"))
    before = sorted(p.relative_to(copy) for p in copy.rglob("*"))
    report = verify_vault(Vault(copy))
    assert report.ok and report.bags == 3, [p.describe() for p in report.problems]
    assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == before

"""evidence.reader: a sealed bag is read back (as an incremental run's base, or to be judged) only
after it is checked against the digest the ledger recorded, through its tag manifest and manifest."""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import files_connector, write_config

from collector.config import load_config
from collector.runner import run_connector
from evidence.reader import BaseBundle, BaseBundleProblem


@pytest.fixture
def sealed(tmp_path, small_tree):
    cfg = load_config(write_config(tmp_path, connectors={"files.toml": files_connector(small_tree)}))
    out = run_connector(cfg, cfg.connector("files-main"))
    assert out.status == "complete", out.reasons
    for p in out.bag.path.rglob("*"):
        p.chmod(0o750 if p.is_dir() else 0o640)  # sealed read-only; the tests play the tamperer
    return BaseBundle(out.bag.path, out.bag.digest, out.run_id, relpath=out.bag.relpath)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _rewrite_manifest_line(bag: BaseBundle, rel: str) -> None:
    """What a careful tamperer does after changing ``rel``: give the manifest its new digest."""
    manifest = bag.path / "manifest-sha256.txt"
    lines = manifest.read_text(encoding="utf-8").splitlines()
    new = _sha256((bag.path / rel).read_bytes())
    manifest.write_text("".join(f"{new}  {rel}\n" if line.endswith(f"  {rel}") else f"{line}\n" for line in lines),
                        encoding="utf-8")


def test_an_intact_bag_verifies_and_reads(sealed):
    sealed.verify()
    assert sealed.run_info()["run_id"] == sealed.run_id
    assert sum(1 for _ in sealed.records("grants")) > 0


def test_a_changed_record_file_is_refused(sealed):
    records = sealed.path / "data" / "records" / "grants.jsonl.gz"
    records.write_bytes(records.read_bytes() + b"\x00")
    with pytest.raises(BaseBundleProblem, match="data/records/grants.jsonl.gz changed since it was sealed"):
        sealed.verify()


def test_a_record_file_changed_together_with_the_manifest_is_refused(sealed):
    records = sealed.path / "data" / "records" / "grants.jsonl.gz"
    records.write_bytes(records.read_bytes() + b"\x00")
    _rewrite_manifest_line(sealed, "data/records/grants.jsonl.gz")
    with pytest.raises(BaseBundleProblem, match="manifest-sha256.txt changed since it was sealed"):
        sealed.verify()


def test_a_changed_run_json_is_refused(sealed):
    run = sealed.path / "data" / "run.json"
    info = json.loads(run.read_text(encoding="utf-8"))
    run.write_text(json.dumps({**info, "finished_utc": "2099-01-01T00:00:00Z"}), encoding="utf-8")
    with pytest.raises(BaseBundleProblem, match="data/run.json changed since it was sealed"):
        sealed.verify()


def test_a_changed_tag_manifest_is_refused(sealed):
    tag = sealed.path / "tagmanifest-sha256.txt"
    tag.write_text(tag.read_text(encoding="utf-8") + "\n", encoding="utf-8")
    with pytest.raises(BaseBundleProblem, match="its tag manifest changed since it was sealed"):
        sealed.verify()


def test_a_record_file_the_manifest_does_not_list_is_refused(tmp_path):
    """A bag sealed without a stream, which then gains one: the reader would read it, so it is refused."""
    bag = tmp_path / "bag"
    (bag / "data" / "records").mkdir(parents=True)
    (bag / "data" / "run.json").write_text('{"run_id": "r1"}', encoding="utf-8")
    manifest = f"{_sha256((bag / 'data' / 'run.json').read_bytes())}  data/run.json\n"
    (bag / "manifest-sha256.txt").write_text(manifest, encoding="utf-8")
    tag = f"{_sha256(manifest.encode())}  manifest-sha256.txt\n"
    (bag / "tagmanifest-sha256.txt").write_text(tag, encoding="utf-8")
    base = BaseBundle(bag, _sha256(tag.encode()), "r1", relpath="bag")
    base.verify()
    assert list(base.records("grants")) == []
    (bag / "data" / "records" / "grants.jsonl.gz").write_bytes(b"")
    with pytest.raises(BaseBundleProblem, match="bag: data/records/grants.jsonl.gz is not in its manifest"):
        base.verify()

import gzip
import json
import threading

from conftest import fake_connector, write_config

from collector.config import load_config
from collector.runner import recover, run_connector
from collector.state import Catalogue
from evidence.bundle import finish_interrupted_seals
from evidence.verify import verify_vault
from evidence.vault import Vault


def _run(tmp_path, behaviour, records=5, cancel=None):
    cfg = load_config(write_config(tmp_path, connectors={"f.toml": fake_connector(behaviour=behaviour, records=records)}))
    return cfg, run_connector(cfg, cfg.connectors[0], cancel_event=cancel)


def _run_json(outcome):
    return json.loads((outcome.bag.path / "data" / "run.json").read_text(encoding="utf-8"))


def test_complete_run_commits_cursor_and_records_everything(tmp_path, fake_registered):
    cfg, out = _run(tmp_path, "ok")
    assert out.status == "complete"
    run = _run_json(out)
    assert run["counts"]["principals"] == 5
    assert run["calls"] == {"users.list": 5}
    assert run["raw_pages"] == {"users.list": 5}
    assert run["identity"] == "fake-identity"
    assert run["cursor"] == {"before": None, "after": {"token": "t5"}, "committed": True}
    cat = Catalogue(Vault(cfg.vault_path))
    assert cat.cursor("fake-1") == {"token": "t5"}
    assert cat.last_run("fake-1")["status"] == "complete"
    raw = gzip.decompress((out.bag.path / "data/raw/users.list.jsonl.gz").read_bytes()).decode().splitlines()
    assert json.loads(raw[0])["response"] == {"users": ["u0"]}
    # the next run sees the committed cursor
    out2 = run_connector(cfg, cfg.connectors[0])
    assert _run_json(out2)["cursor"]["before"] == {"token": "t5"}
    assert _run_json(out2)["changes_since_previous"]["principals"] == {"added": 0, "removed": 0, "changed": 0}
    # only the newest bag's record hashes stay in .state/keys
    assert sorted(p.name for p in (Vault(cfg.vault_path).state / "keys").iterdir()) == [out2.run_id]
    assert verify_vault(Vault(cfg.vault_path)).ok


def test_error_midway_seals_partial_and_keeps_cursor(tmp_path, fake_registered):
    cfg, first = _run(tmp_path, "ok")
    cfg2 = load_config(write_config(tmp_path, connectors={"f.toml": fake_connector(behaviour="raise_midway")}))
    out = run_connector(cfg2, cfg2.connectors[0])
    assert out.status == "partial"
    assert any("page token expired" in r for r in out.reasons)
    run = _run_json(out)
    assert run["status"] == "partial" and run["cursor"]["committed"] is False
    assert "Collection-Status: partial" in (out.bag.path / "bag-info.txt").read_text()
    assert Catalogue(Vault(cfg.vault_path)).cursor("fake-1") == {"token": "t5"}


def test_error_before_any_record_seals_failed(tmp_path, fake_registered):
    _, out = _run(tmp_path, "raise_first")
    assert out.status == "failed"
    assert "503" in " ".join(out.reasons)
    assert "users.list" in (out.bag.path / "data" / "summary.html").read_text(encoding="utf-8")


def test_recorded_error_makes_partial_and_names_the_place(tmp_path, fake_registered):
    _, out = _run(tmp_path, "report_error")
    assert out.status == "partial"
    run = _run_json(out)
    assert run["errors"] == [{"where": "users/u1", "message": "permission denied reading this user", "kind": "error"}]
    assert "users/u1" in " ".join(out.reasons)


def test_cancel_seals_partial_interrupted(tmp_path, fake_registered):
    cancel = threading.Event()
    cancel.set()
    _, out = _run(tmp_path, "ok", cancel=cancel)
    assert out.status == "partial"
    assert out.reasons[0].startswith("interrupted")


def test_recover_moves_dead_partial_runs_to_aborted(tmp_path, fake_registered):
    cfg, _ = _run(tmp_path, "ok")
    vault = Vault(cfg.vault_path)
    dead = vault.partial / "rdeadbeef"
    (dead / "data").mkdir(parents=True)
    (vault.partial / "rdeadbeef.json").write_text(json.dumps({"connector_id": "fake-1", "connector_type": "fake", "started_utc": "2026-11-26T00:00:00Z"}))
    done = recover(vault)
    assert done == [{"run_id": "rdeadbeef", "action": "moved to .aborted", "connector_id": "fake-1"}]
    assert (vault.aborted / "rdeadbeef" / "aborted.json").exists()
    assert not dead.exists()
    row = [r for r in Catalogue(vault).runs("fake-1") if r["run_id"] == "rdeadbeef"][0]
    assert row["status"] == "aborted"
    assert verify_vault(vault).ok  # nothing sealed was touched


def test_a_seal_cut_between_rename_and_ledger_is_finished(tmp_path, fake_registered):
    cfg, out = _run(tmp_path, "ok")
    vault = Vault(cfg.vault_path)
    # simulate the crash window: drop the ledger line, leave the .sealing note
    lines = vault.ledger.read_bytes().splitlines()
    entry = json.loads(lines[-1])
    vault.ledger.write_bytes(b"\n".join(lines[:-1]) + (b"\n" if lines[:-1] else b""))
    fields = {k: entry[k] for k in ("bag", "connector_id", "connector_type", "run_id", "status", "sealed_utc", "tagmanifest_sha256")}
    (vault.partial / f"{out.run_id}.sealing").write_text(json.dumps({"source": out.run_id, **fields}))
    assert not verify_vault(vault).ok
    assert finish_interrupted_seals(vault) == [entry["bag"]]
    assert verify_vault(vault).ok

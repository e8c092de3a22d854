"""Status: states and exit codes (fresh / stale / partial / failing), the table, status.json,
and the Prometheus text of /metrics checked by a strict parser."""

import json
import os
import re
import socket
from datetime import datetime, timedelta, timezone

from click.testing import CliRunner
from conftest import fake_connector, files_connector, write_config

from collector.cli import main
from collector.config import load_config
from collector.runner import run_connector
from collector.state import Catalogue
from collector.status import (
    Counters,
    connector_statuses,
    daemon_alive,
    exit_code,
    metrics_text,
    read_runs,
    read_status_file,
    render_text,
    write_status_file,
)
from evidence.vault import Vault

# -- a strict parser of the Prometheus text exposition format (0.0.4) -------------------------

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL = r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"'
_LABEL_NC = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE = re.compile(rf"^(?P<name>{_NAME})(?:\{{(?P<labels>{_LABEL_NC}(?:,{_LABEL_NC})*)?\}})? (?P<value>\S+)(?: -?\d+)?$")
_VALUE = re.compile(r"^(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?Inf|NaN)$")


def parse_prometheus(text: str) -> dict[str, dict]:
    """``{family: {"type", "help", "samples": {frozenset(labels): value}}}``; raises AssertionError
    on anything a Prometheus server would reject or that breaks the conventions (TYPE before
    samples, one block per family, no duplicate series, newline at the end)."""
    assert text.endswith("\n"), "the exposition must end with a newline"
    families: dict[str, dict] = {}
    current = None
    for n, line in enumerate(text.splitlines(), 1):
        assert line.strip(), f"line {n}: empty line"
        if line.startswith("#"):
            m = re.match(rf"^# (HELP|TYPE) ({_NAME}) (.+)$", line)
            assert m, f"line {n}: bad comment {line!r}"
            kind, name, rest = m.groups()
            fam = families.setdefault(name, {"type": None, "help": None, "samples": {}})
            assert not fam["samples"], f"line {n}: {kind} for {name} after its samples"
            if kind == "TYPE":
                assert rest in ("counter", "gauge", "histogram", "summary", "untyped"), f"line {n}: type {rest}"
                assert fam["type"] is None, f"line {n}: second TYPE for {name}"
                fam["type"] = rest
            else:
                assert fam["help"] is None, f"line {n}: second HELP for {name}"
                fam["help"] = rest
            current = name
            continue
        m = _SAMPLE.match(line)
        assert m, f"line {n}: not a sample {line!r}"
        name, labels_text, value = m.group("name"), m.group("labels"), m.group("value")
        assert name == current, f"line {n}: sample {name} outside its family block ({current})"
        assert families[name]["type"], f"line {n}: {name} has no TYPE"
        assert _VALUE.match(value), f"line {n}: bad value {value!r}"
        labels = dict(re.findall(_LABEL, labels_text or ""))
        assert len(labels) == len(re.findall(_LABEL, labels_text or "")), f"line {n}: repeated label"
        key = frozenset(labels.items())
        assert key not in families[name]["samples"], f"line {n}: duplicate series"
        number = float(value.replace("Inf", "inf").replace("NaN", "nan"))
        if families[name]["type"] == "counter":
            assert name.endswith("_total") and number >= 0, f"line {n}: counter {name}"
        families[name]["samples"][key] = number
    return families


def sample(families, name, **labels):
    return families[name]["samples"].get(frozenset(labels.items()))


# -- states and exit codes --------------------------------------------------------------------


def _four(tmp_path):
    connectors = {
        "a.toml": fake_connector("fresh"),
        "b.toml": fake_connector("partly", behaviour="report_error"),
        "c.toml": fake_connector("failing", behaviour="raise_first"),
        "d.toml": fake_connector("never") + 'max_age = "2h"\n',
        "e.toml": fake_connector("off") + "enabled = false\n",
    }
    cfg = load_config(write_config(tmp_path, connectors=connectors))
    for cid in ("fresh", "partly", "failing"):
        run_connector(cfg, cfg.connector(cid))
    return cfg


def test_each_state_and_its_level(tmp_path, fake_registered):
    cfg = _four(tmp_path)
    statuses = {s.id: s for s in connector_statuses(cfg, read_runs(Vault(cfg.vault_path)))}
    assert (statuses["fresh"].state, statuses["fresh"].level, statuses["fresh"].stale) == ("ok", 0, False)
    assert statuses["fresh"].evidence_age_s < 60 and statuses["fresh"].last_error is None
    assert (statuses["partly"].state, statuses["partly"].level) == ("partial", 1)
    assert "users/u1" in statuses["partly"].last_error
    assert (statuses["failing"].state, statuses["failing"].level) == ("failing", 2)
    assert "503" in statuses["failing"].last_error and statuses["failing"].stale
    assert (statuses["never"].state, statuses["never"].level, statuses["never"].evidence_age_s) == ("never run", 1, None)
    assert (statuses["off"].state, statuses["off"].next_run_utc) == ("disabled", None)
    assert statuses["fresh"].next_run_utc.endswith("T18:00:00Z")  # 03:00 in Tokyo, the default schedule
    # a day and a half later the fresh one is stale (default max_age 26h)
    later = datetime.now(timezone.utc) + timedelta(hours=36)
    stale = {s.id: s for s in connector_statuses(cfg, read_runs(Vault(cfg.vault_path)), now=later)}["fresh"]
    assert (stale.state, stale.level, stale.stale) == ("stale", 1, True)
    # a daemon error newer than the last sealed run makes a connector failing
    err = {"fresh": {"at_utc": "2999-01-01T00:00:00Z", "message": "OSError: disk full"}}
    failing = {s.id: s for s in connector_statuses(cfg, read_runs(Vault(cfg.vault_path)), errors=err)}["fresh"]
    assert (failing.state, failing.last_error) == ("failing", "OSError: disk full")
    text = render_text(list(statuses.values()), cfg.tz, None)
    assert "daemon: not running" in text and "overall: failing (exit 2)" in text
    assert "failing: last error:" in text and "STALE" in text


def _status(path, *args):
    return CliRunner().invoke(main, ["--config", str(path), "status", *args])


def test_status_exit_codes_fresh_stale_partial_failing_broken(tmp_path, small_tree, fake_registered):
    path = write_config(tmp_path, connectors={"a.toml": files_connector(small_tree)})
    cfg = load_config(path)
    assert _status(path).exit_code == 1  # never collected: stale
    run_connector(cfg, cfg.connectors[0])
    result = _status(path)
    assert result.exit_code == 0, result.output
    assert "files-main  ok" in result.output and "overall: ok (exit 0)" in result.output
    # stale: the catalogue says the last complete bundle is two days old
    vault = Vault(cfg.vault_path)
    catalogue = Catalogue(vault)
    rows = catalogue.runs("files-main")
    old = (datetime.now(timezone.utc) - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    catalogue.replace_all([{**r, "started_utc": old, "finished_utc": old} for r in rows], [])
    result = _status(path)
    assert result.exit_code == 1 and "STALE" in result.output
    body = json.loads(_status(path, "--json").output)
    assert body["exit_code"] == 1 and body["connectors"][0]["stale"] is True
    # partial (fresh again, but not complete)
    (tmp_path / "config" / "connectors" / "b.toml").write_text(fake_connector("partly", behaviour="report_error"))
    catalogue.replace_all([], [])
    run_connector(cfg, cfg.connectors[0])
    cfg2 = load_config(path)
    run_connector(cfg2, cfg2.connector("partly"))
    assert _status(path).exit_code == 1
    # failing
    (tmp_path / "config" / "connectors" / "c.toml").write_text(fake_connector("failing", behaviour="raise_first"))
    cfg3 = load_config(path)
    run_connector(cfg3, cfg3.connector("failing"))
    result = _status(path)
    assert result.exit_code == 2 and "FAILING" in result.output
    # a broken config: 2, with the precise problem
    (tmp_path / "config" / "connectors" / "c.toml").write_text(fake_connector("failing") + 'schedule = "every 0s"\n')
    result = _status(path)
    assert result.exit_code == 2
    assert "c.toml:6: connector[0].schedule: 'every 0s': the interval must be at least 1s" in result.output


def test_status_does_not_create_a_vault(tmp_path, small_tree):
    path = write_config(tmp_path, connectors={"a.toml": files_connector(small_tree)})
    assert _status(path).exit_code == 1
    assert not (tmp_path / "vault").exists()


def test_status_file_is_replaced_whole_and_names_a_live_daemon(tmp_path):
    vault = Vault(tmp_path / "vault").ensure()
    payload = {"daemon": {"pid": os.getpid(), "host": socket.gethostname(), "state": "running"}, "connectors": []}
    write_status_file(vault, payload)
    assert read_status_file(vault) == payload
    assert oct(os.stat(vault.state / "status.json").st_mode & 0o777) == "0o640"
    assert [p.name for p in vault.state.iterdir() if p.name.endswith(".tmp")] == []
    assert daemon_alive(payload)
    assert not daemon_alive({"daemon": {**payload["daemon"], "state": "stopped"}})
    assert not daemon_alive({"daemon": {**payload["daemon"], "host": "elsewhere"}})
    assert not daemon_alive({"daemon": {**payload["daemon"], "pid": 2**22 + 12345}})


def test_metrics_text_is_strict_prometheus(tmp_path, fake_registered):
    cfg = _four(tmp_path)
    statuses = connector_statuses(cfg, read_runs(Vault(cfg.vault_path)))
    counters = Counters()
    counters.runs[("fresh", "complete")] += 2
    counters.runs[('we"ird\\id\n', "partial")] += 1  # label values are escaped
    counters.records["fresh"] += 10
    counters.throttle_wait_s["fresh"] += 1.25
    families = parse_prometheus(metrics_text(statuses, counters, started=1.5, config_error=False))
    assert families["shoseki_runs_total"]["type"] == "counter"
    assert sample(families, "shoseki_runs_total", connector="fresh", status="complete") == 2
    assert sample(families, "shoseki_runs_total", connector='we\\"ird\\\\id\\n', status="partial") == 1
    assert sample(families, "shoseki_records_total", connector="fresh") == 10
    assert sample(families, "shoseki_throttle_wait_seconds_total", connector="fresh") == 1.25
    assert sample(families, "shoseki_evidence_age_seconds", connector="fresh") < 60
    assert sample(families, "shoseki_evidence_age_seconds", connector="never") is None
    assert sample(families, "shoseki_evidence_stale", connector="never") == 1
    assert sample(families, "shoseki_connector_health", connector="failing") == 2
    assert sample(families, "shoseki_connector_health", connector="off") is None  # disabled: not exposed
    assert sample(families, "shoseki_up") == 1
    assert exit_code(statuses) == 2

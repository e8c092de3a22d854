"""The daemon (`shoseki run`) as a real subprocess: schedules, catch-up, signals, reload, status,
/healthz + /metrics, and no secret anywhere.

The subprocess registers tests/support/fakes.py:FakeConnector as type "fake" before the CLI
starts (see LAUNCH): a test-only registration that exists only in these processes, so production
code carries no hook for it. "slow" fakes sleep 50 ms a record and check for cancellation at
every record (a page boundary), which makes a long collection that a signal can interrupt.
"""

import gzip
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import fake_connector, files_connector, write_config

from collector.config import ConfigError, load_config
from collector.daemon import Daemon
from collector.runner import run_connector
from collector.state import Catalogue
from collector.status import read_runs, read_status_file
from evidence.model import parse_utc
from evidence.verify import verify_vault
from evidence.vault import AlreadyRunning, Vault

sys.path.insert(0, str(Path(__file__).parent))
from test_status import parse_prometheus, sample  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SUPPORT = REPO / "tests" / "support"
LAUNCH = (
    f"import sys; sys.path.insert(0, {str(SUPPORT)!r}); import connectors; "
    "connectors.REGISTRY['fake'] = 'fakes:FakeConnector'; "
    "from collector.cli import main; main(prog_name='shoseki')"
)
NEVER = "0 3 29 2 *"  # a crontab that will not fire during a test (03:00 on 29 February)
DAEMON = '\n[daemon]\njitter = "0s"\nstop_timeout = "10s"\n'


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str, proc=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.proc.poll() is not None:
            raise AssertionError(f"the daemon exited ({proc.proc.returncode}) while waiting for {what}:\n{proc.text()}")
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f":\n{proc.text()[-4000:]}" if proc else ""))


class DaemonProcess:
    def __init__(self, config: Path, log: Path, *args: str, log_format: str = "json"):
        self.log = log
        self.log_format = log_format
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", LAUNCH, "--config", str(config), "--log-format", log_format, "run", *args],
                cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
            )

    def text(self) -> str:
        return self.log.read_text(encoding="utf-8") if self.log.exists() else ""

    def events(self) -> list[dict]:
        """Every complete line, each of which must be one JSON object (one line per event)."""
        text = self.text()
        lines = text.split("\n")[:-1]  # the last piece may be a line being written
        return [json.loads(line) for line in lines]

    def has(self, event: str, connector: str | None = None, contains: str = "") -> bool:
        return any(
            e.get("event") == event and (connector is None or e.get("connector") == connector) and contains in e["message"]
            for e in self.events()
        )

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15) -> tuple[int, float]:
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout)
        return rc, time.monotonic() - t0


@pytest.fixture
def daemons():
    started: list[DaemonProcess] = []

    def start(*args, **kwargs) -> DaemonProcess:
        d = DaemonProcess(*args, **kwargs)
        started.append(d)
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def _runs(vault: Vault, cid: str, status: str | None = None) -> list[dict]:
    return [r for r in read_runs(vault) if r.get("connector_id") == cid and (status is None or r.get("status") == status)]


def _intervals_do_not_overlap(rows: list[dict]) -> None:
    spans = sorted((parse_utc(r["started_utc"]), parse_utc(r["finished_utc"])) for r in rows if r.get("finished_utc"))
    for (s1, f1), (s2, f2) in zip(spans, spans[1:]):
        assert f1 <= s2, f"two runs overlap: {s1}..{f1} and {s2}..{f2}"


def _get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, r.headers["Content-Type"], r.read().decode("utf-8")


def _shoseki(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", LAUNCH, "--config", str(config), *args],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


# -- in-process: config and concurrency ------------------------------------------------------------


def test_schedule_forms_and_daemon_section_are_validated(tmp_path, fake_registered):
    path = write_config(tmp_path, connectors={"f.toml": fake_connector() + 'schedule = "every 5s"\n'},
                        main_extra='\n[daemon]\njitter = "30s"\nmax_concurrent = 3\n')
    cfg = load_config(path)
    assert cfg.connectors[0].schedule == "every 5s"
    assert (cfg.main.daemon.seconds("jitter"), cfg.main.daemon.max_concurrent, cfg.main.daemon.seconds("stop_timeout")) == (30, 3, 120)
    f = tmp_path / "config" / "connectors" / "f.toml"
    for bad, message in (
        ("every 0s", "'every 0s': the interval must be at least 1s"),
        ("every now", "'every now' is not a valid interval: write every <n><unit>, e.g. every 10m or every 30s"),
        ("0 25 * * *", "'0 25 * * *' is not a valid crontab expression"),
    ):
        f.write_text(fake_connector() + f'schedule = "{bad}"\n')
        with pytest.raises(ConfigError) as exc:
            load_config(path)
        assert any(str(p).startswith(f"{f}:6: connector[0].schedule: {message}") for p in exc.value.problems), exc.value
    f.write_text(fake_connector())
    path.write_text(path.read_text().replace("max_concurrent = 3", 'max_concurrent = 0\nstop_timeout = "soon"'))
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    text = str(exc.value)
    assert f"{path}:11: daemon.max_concurrent: Input should be greater than or equal to 1" in text
    assert f"{path}:12: daemon.stop_timeout: 'soon' is not a duration" in text


def test_max_concurrent_bounds_collections_across_connectors(tmp_path, fake_registered):
    connectors = {f"{c}.toml": fake_connector(c, behaviour="slow", records=12) + f'schedule = "{NEVER}"\n' for c in ("s-a", "s-b", "s-c")}
    cfg = load_config(write_config(tmp_path, connectors=connectors, main_extra=DAEMON + "max_concurrent = 1\n"))
    daemon = Daemon(cfg)
    daemon.start()  # all three are overdue (never collected): due at once, one at a time
    try:
        vault = Vault(cfg.vault_path)
        _wait(lambda: len([r for r in read_runs(vault) if r["status"] == "complete"]) == 3, 20, "three runs")
        _intervals_do_not_overlap(read_runs(vault))
        assert {j.id for j in daemon.scheduler.get_jobs()} == {"s-a", "s-b", "s-c"}
    finally:
        assert daemon.stop()
    payload = read_status_file(Vault(cfg.vault_path))
    assert payload["daemon"]["state"] == "stopped" and payload["overall"]["exit_code"] == 0


# -- the daemon as a process ----------------------------------------------------------------------


def test_scheduled_runs_never_overlap_and_status_health_metrics_report_them(tmp_path, small_tree, daemons):
    port = _free_port()
    config = write_config(tmp_path, main_extra=DAEMON + "max_concurrent = 3\n", connectors={
        # each run takes ~1.5 s and a start is due every second: starts must be skipped, never doubled
        "fake.toml": fake_connector("fake-1", behaviour="slow", records=30) + 'schedule = "every 1s"\n',
        "files.toml": files_connector(small_tree, extra='schedule = "every 2s"\n'),
        # one long collection (~200 s, overdue at start) that is certainly still running when the
        # manual collection below starts, however slowly the machine starts a Python process
        "long.toml": fake_connector("fake-long", behaviour="slow", records=4000) + f'schedule = "{NEVER}"\n',
    })
    vault = Vault(tmp_path / "vault")
    d = daemons(config, tmp_path / "daemon.log", "--health-port", str(port))
    _wait(lambda: len(_runs(vault, "fake-1", "complete")) >= 1, 20, "a first run", d)
    # a manual collection while the daemon works: the connector lock keeps it to one at a time
    _wait(lambda: (read_status_file(vault) or {}).get("overall") and any(
        c["id"] == "fake-long" and c["running"] for c in read_status_file(vault)["connectors"]), 10, "fake-long running", d)
    manual = _shoseki(config, "collect", "--no-progress", "fake-long")
    assert manual.returncode == 1 and "already running" in manual.stderr, manual.stderr
    _wait(lambda: len(_runs(vault, "fake-1", "complete")) >= 3 and len(_runs(vault, "files-main", "complete")) >= 2, 25, "more runs", d)
    _intervals_do_not_overlap(_runs(vault, "fake-1"))
    assert d.has("run_skipped", "fake-1", "still running; the start due at"), "no start was skipped"
    assert not d.has("run_error")

    status, ctype, body = _get(f"http://127.0.0.1:{port}/healthz")
    health = json.loads(body)
    assert status == 200 and ctype == "application/json"
    assert health["daemon"]["state"] == "running" and set(health["connectors"]) == {"fake-1", "files-main", "fake-long"}
    status, ctype, text = _get(f"http://127.0.0.1:{port}/metrics")
    assert ctype.startswith("text/plain; version=0.0.4")
    families = parse_prometheus(text)
    assert sample(families, "shoseki_runs_total", connector="fake-1", status="complete") >= 3
    assert sample(families, "shoseki_records_total", connector="fake-1") >= 90
    assert sample(families, "shoseki_calls_total", connector="fake-1") >= 90
    assert sample(families, "shoseki_throttles_total", connector="files-main") == 0
    assert 0 <= sample(families, "shoseki_evidence_age_seconds", connector="files-main") < 30
    assert read_status_file(vault)["daemon"]["health"] == f"http://127.0.0.1:{port}"

    result = _shoseki(config, "status")
    # fake-long has no complete bundle yet, so the overall state asks for attention, and says why
    assert result.returncode == 1, result.stdout + result.stderr
    assert "daemon: running" in result.stdout and "fake-1" in result.stdout
    assert "NEVER RUN (running:" in result.stdout and "overall: attention (exit 1)" in result.stdout

    rc, took = d.stop()
    assert rc == 0 and took < 10, d.text()
    assert read_status_file(vault)["daemon"]["state"] == "stopped"
    assert verify_vault(vault).ok


def test_overdue_connectors_run_at_once_after_downtime_once_each(tmp_path, small_tree, daemons):
    config = write_config(tmp_path, main_extra=DAEMON, connectors={
        "a.toml": files_connector(small_tree, "files-a", f'schedule = "{NEVER}"\nmax_age = "2s"\n'),
        "b.toml": files_connector(small_tree, "files-b", f'schedule = "{NEVER}"\nmax_age = "1h"\n'),
    })
    vault = Vault(tmp_path / "vault")
    first = daemons(config, tmp_path / "first.log")
    _wait(lambda: _runs(vault, "files-a", "complete") and _runs(vault, "files-b", "complete"), 20, "both first runs", first)
    assert first.stop()[0] == 0
    finished = parse_utc(_runs(vault, "files-a")[0]["finished_utc"])
    time.sleep(max(0.0, 2.3 - (time.time() - finished.timestamp())))  # down for longer than files-a's max_age

    second = daemons(config, tmp_path / "second.log")
    _wait(lambda: len(_runs(vault, "files-a", "complete")) == 2, 20, "the overdue run", second)
    assert second.has("scheduled", "files-a", "overdue: last complete bundle")
    assert second.has("scheduled", "files-b") and not second.has("scheduled", "files-b", "overdue")
    time.sleep(1.0)  # nothing more comes: once each, and the fresh one not at all
    assert len(_runs(vault, "files-a")) == 2 and len(_runs(vault, "files-b")) == 1
    assert second.stop()[0] == 0


def test_sigterm_mid_collection_seals_partial_interrupted_within_the_bound(tmp_path, fake_registered, daemons):
    files = tmp_path / "config" / "connectors"
    config = write_config(tmp_path, main_extra=DAEMON, connectors={"fake.toml": fake_connector("fake-1", records=3)})
    cfg = load_config(config)
    assert run_connector(cfg, cfg.connectors[0]).status == "complete"  # commits the cursor t3
    vault = Vault(cfg.vault_path)
    # now a long collection (~200 s), overdue at start
    (files / "fake.toml").write_text(fake_connector("fake-1", behaviour="slow", records=4000) + f'schedule = "{NEVER}"\nmax_age = "1s"\n')
    time.sleep(1.1)
    d = daemons(config, tmp_path / "daemon.log")
    _wait(lambda: any(e["logger"] == "shoseki.progress" for e in d.events()), 20, "the long collection to be under way", d)
    rc, took = d.stop()
    assert rc == 0, d.text()
    assert took < 10, f"took {took:.1f}s, more than stop_timeout"
    assert d.has("cancel", contains="fake-1")
    last = Catalogue(vault).last_run("fake-1")
    assert last["status"] == "partial" and last["reasons"][0].startswith("interrupted"), last
    assert Catalogue(vault).cursor("fake-1") == {"token": "t3"}  # the cursor did not move
    run = json.loads((vault.root / last["bag"] / "data" / "run.json").read_text(encoding="utf-8"))
    assert run["cursor"]["committed"] is False
    assert "Collection-Status: partial" in (vault.root / last["bag"] / "bag-info.txt").read_text(encoding="utf-8")
    assert not [p for p in vault.partial.iterdir()]  # nothing left in progress
    report = verify_vault(vault)
    assert report.ok, [p.describe() for p in report.problems]


def test_sigkill_mid_collection_then_restart_recovers_and_collects(tmp_path, daemons):
    files = tmp_path / "config" / "connectors"
    config = write_config(tmp_path, main_extra=DAEMON, connectors={
        "fake.toml": fake_connector("fake-1", behaviour="slow", records=4000) + f'schedule = "{NEVER}"\n'})
    vault = Vault(tmp_path / "vault")
    d = daemons(config, tmp_path / "first.log")
    leftover = _wait(lambda: next((p for p in vault.partial.iterdir() if p.is_dir()), None) if vault.partial.exists() else None,
                     20, "a run in progress", d)
    time.sleep(0.3)
    d.signal(signal.SIGKILL)
    d.proc.wait(10)
    assert leftover.exists() and not list(vault.iter_bags())

    (files / "fake.toml").write_text(fake_connector("fake-1", behaviour="slow", records=10) + f'schedule = "{NEVER}"\n')
    again = daemons(config, tmp_path / "second.log")
    _wait(lambda: _runs(vault, "fake-1", "complete"), 20, "the collection after recovery", again)
    assert again.has("recovered", contains="moved to .aborted")
    assert not leftover.exists()
    aborted = json.loads((vault.aborted / leftover.name / "aborted.json").read_text(encoding="utf-8"))
    assert aborted["status"] == "aborted" and aborted["connector_id"] == "fake-1"
    assert {r["run_id"]: r["status"] for r in _runs(vault, "fake-1")}[leftover.name] == "aborted"
    assert again.stop()[0] == 0
    assert verify_vault(vault).ok


def test_sighup_keeps_the_old_config_when_the_new_is_broken_and_applies_a_good_one(tmp_path, small_tree, daemons):
    files = tmp_path / "config" / "connectors"
    config = write_config(tmp_path, main_extra=DAEMON, connectors={"a.toml": files_connector(small_tree, "files-a", f'schedule = "{NEVER}"\n')})
    vault = Vault(tmp_path / "vault")
    d = daemons(config, tmp_path / "daemon.log")
    _wait(lambda: _runs(vault, "files-a", "complete"), 20, "files-a's first run", d)

    (files / "b.toml").write_text(files_connector(small_tree, "files-b", 'schedule = "every 0s"\ncolour = "red"\n'))
    d.signal(signal.SIGHUP)
    _wait(lambda: d.has("reload_refused", contains="reload refused"), 10, "the refusal", d)
    assert d.has("reload_refused", contains=f"{files / 'b.toml'}:5: connector[0].schedule: 'every 0s': the interval must be at least 1s")
    assert d.has("reload_refused", contains=f"{files / 'b.toml'}:6: connector[0].colour: unknown key")
    assert d.proc.poll() is None
    assert read_status_file(vault)["daemon"]["config_error"]
    broken = _shoseki(config, "status")
    assert broken.returncode == 2 and "every 0s" in broken.stderr

    # a good config: files-b added (never collected: runs at once), files-a rescheduled to every second
    (files / "b.toml").write_text(files_connector(small_tree, "files-b", f'schedule = "{NEVER}"\n'))
    (files / "a.toml").write_text(files_connector(small_tree, "files-a", 'schedule = "every 1s"\n'))
    d.signal(signal.SIGHUP)
    _wait(lambda: _runs(vault, "files-b", "complete"), 15, "the added connector's run", d)
    _wait(lambda: len(_runs(vault, "files-a", "complete")) >= 3, 15, "files-a on its new schedule", d)
    assert d.has("added", "files-b") and d.has("rescheduled", "files-a", "every 1s")
    assert read_status_file(vault)["daemon"]["config_error"] is None

    (files / "b.toml").unlink()
    d.signal(signal.SIGHUP)
    _wait(lambda: d.has("unscheduled", "files-b"), 10, "files-b removed", d)
    assert d.stop()[0] == 0


def test_no_secret_reaches_the_vault_the_logs_or_status(tmp_path, small_tree, daemons):
    from sandbox.env import SandboxEnv

    port = _free_port()
    with SandboxEnv(tmp_path / "sandbox", google=True, microsoft=False, aws=False) as env:
        google = env.endpoints["google"]
        key_info = json.loads(Path(google["service_account_key_file"]).read_text(encoding="utf-8"))
        pem_lines = [line for line in key_info["private_key"].splitlines() if "PRIVATE KEY" not in line]
        secrets = [key_info["private_key"], key_info["private_key_id"], *[line for line in pem_lines if len(line) >= 32]]
        config = write_config(tmp_path, main_extra=DAEMON, connectors={
            "google.toml": (
                '[[connector]]\nid = "google-directory"\ntype = "google_directory"\n'
                f'schedule = "every 3s"\nservice_account_key_file = "{google["service_account_key_file"]}"\n'
                f'admin_subject = "{google["admin_subject"]}"\nroot_url = "{google["root_url"]}"\n'
            ),
            "files.toml": files_connector(small_tree),
        })
        vault = Vault(tmp_path / "vault")
        d = daemons(config, tmp_path / "daemon.log", "--health-port", str(port), log_format="text")
        _wait(lambda: len(_runs(vault, "google-directory", "complete")) >= 2 and _runs(vault, "files-main", "complete"), 30, "runs", d)
        extra = [_get(f"http://127.0.0.1:{port}{p}")[2] for p in ("/healthz", "/metrics")]
        status = _shoseki(config, "status", "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        extra += [status.stdout, status.stderr]
        assert d.stop()[0] == 0

    scanned = 0
    blobs = [(f"endpoint/status output {i}", text.encode()) for i, text in enumerate(extra)]
    blobs.append(("daemon log", d.log.read_bytes()))
    for path in sorted(vault.root.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            blobs.append((str(path), gzip.decompress(data) if path.suffix == ".gz" else data))
    for where, data in blobs:
        scanned += len(data)
        for secret in secrets:
            for form in {secret, json.dumps(secret)[1:-1]}:  # also as escaped inside JSON
                assert form.encode() not in data, f"a secret appears in {where}"
    assert (vault.state / "status.json").exists() and scanned > 10_000
    assert verify_vault(vault).ok


def test_a_collection_that_ignores_the_stop_is_abandoned_after_stop_timeout(tmp_path, fake_registered, monkeypatch):
    import collector.daemon as daemon_module

    release = __import__("threading").Event()

    def stuck(config, entry, **kwargs):  # a source call that never returns to a page boundary
        release.wait(10)
        raise AlreadyRunning(entry.id)  # ends the thread quietly once the test is over

    monkeypatch.setattr(daemon_module, "run_connector", stuck)
    cfg = load_config(write_config(tmp_path, connectors={"f.toml": fake_connector() + f'schedule = "{NEVER}"\n'},
                                   main_extra='\n[daemon]\nstop_timeout = "1s"\n'))
    daemon = Daemon(cfg)
    daemon.start()
    vault = Vault(cfg.vault_path)
    _wait(lambda: any(c["running"] for c in (read_status_file(vault) or {}).get("connectors", [])), 10, "the run to start")
    t0 = time.monotonic()
    assert daemon.stop() is False  # run_daemon then ends the process with exit code 1
    assert 0.9 < time.monotonic() - t0 < 3
    release.set()


def test_a_taken_health_port_or_a_broken_config_stops_the_start_with_2(tmp_path, small_tree):
    config = write_config(tmp_path, connectors={"a.toml": files_connector(small_tree, extra=f'schedule = "{NEVER}"\n')})
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = _shoseki(config, "--log-format", "json", "run", "--health-port", str(taken.getsockname()[1]))
    assert result.returncode == 2
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert any("cannot go on: OSError" in e["message"] and "Address already in use" in e["message"] for e in lines), result.stderr
    (tmp_path / "config" / "connectors" / "a.toml").write_text(files_connector(small_tree, extra='schedule = "every 0s"\n'))
    result = _shoseki(config, "--log-format", "json", "run")
    assert result.returncode == 2
    assert [json.loads(line)["message"] for line in result.stderr.splitlines()] == [
        f"configuration error: {tmp_path / 'config' / 'connectors' / 'a.toml'}:5: connector[0].schedule: 'every 0s': the interval must be at least 1s"
    ]


# -- the scheduled report ([daemon] report_schedule) ----------------------------------------------


def _report_bags(vault: Vault) -> list[Path]:
    """Report bags in the order they were sealed (the ledger's)."""
    from evidence import ledger

    return [vault.root / e.bag for e in ledger.entries(vault.ledger) if e.connector_id == "report"]


@pytest.mark.parametrize("key", ["report_schedule", "verify_schedule"])
def test_task_schedules_are_validated_and_off_by_default(tmp_path, small_tree, key):
    path = write_config(tmp_path, connectors={"a.toml": files_connector(small_tree)}, main_extra=DAEMON)
    assert getattr(load_config(path).main.daemon, key) == ""
    for good in ("every 2s", "0 7 * * mon", "  "):
        path.write_text(path.read_text(encoding="utf-8").split("\n[daemon]")[0] + DAEMON + f'{key} = "{good}"\n', encoding="utf-8")
        assert getattr(load_config(path).main.daemon, key) == good.strip()
    for bad, message in (
        ("every 0s", "'every 0s': the interval must be at least 1s"),
        ("weekly", "'weekly' is not a valid crontab expression"),
        ("every week", "'every week' is not a valid interval"),
        ("0 25 * * *", "'0 25 * * *' is not a valid crontab expression"),
    ):
        path.write_text(path.read_text(encoding="utf-8").split("\n[daemon]")[0] + DAEMON + f'{key} = "{bad}"\n', encoding="utf-8")
        with pytest.raises(ConfigError) as exc:
            load_config(path)
        assert any(str(p).startswith(f"{path}:12: daemon.{key}: {message}") for p in exc.value.problems), exc.value


def test_slots_the_report_waits_for_running_collections_and_holds_off_new_ones():
    import threading

    from collector.daemon import Slots

    slots, stop, order = Slots(2), threading.Event(), []
    assert slots.acquire(stop)  # a collection runs
    report = threading.Thread(target=lambda: (slots.acquire_all(stop), order.append("report"), slots.release_all()))
    report.start()
    _wait(lambda: slots.exclusive, 5, "the report to ask for every slot")
    late = threading.Thread(target=lambda: (slots.acquire(stop), order.append("late collection"), slots.release()))
    late.start()
    time.sleep(0.3)
    assert order == [] and slots.busy()  # a free slot, but the report is waiting: nothing starts
    slots.release()  # the running collection ends
    report.join(5)
    late.join(5)
    assert order == ["report", "late collection"] and not slots.exclusive and slots.used == 0
    stop.set()
    assert not slots.acquire_all(stop) and not slots.exclusive  # a stop gives up, and leaves nothing held


def test_a_reload_makes_the_report_follow_the_new_schedule(tmp_path, small_tree):
    path = write_config(tmp_path, connectors={"a.toml": files_connector(small_tree, extra=f'schedule = "{NEVER}"\n')},
                        main_extra=DAEMON + f'report_schedule = "{NEVER}"\n')
    daemon = Daemon(load_config(path))
    daemon.start()
    base = path.read_text(encoding="utf-8")
    try:
        job = daemon.scheduler.get_job("report")
        assert job is not None and (job.next_run_time.month, job.next_run_time.day) == (2, 29)
        assert read_status_file(Vault(tmp_path / "vault"))["daemon"]["report"]["schedule"] == NEVER
        path.write_text(base.replace(NEVER, "0 7 * * mon"), encoding="utf-8")
        assert daemon.reload()
        job = daemon.scheduler.get_job("report")
        assert job.next_run_time.astimezone(daemon.config.tz).strftime("%a %H:%M") == "Mon 07:00"
        path.write_text(base.replace(NEVER, "every 0s"), encoding="utf-8")
        assert not daemon.reload()  # refused: the previous schedule keeps running
        assert any("daemon.report_schedule: 'every 0s'" in p for p in daemon.config_error)
        assert daemon.scheduler.get_job("report").next_run_time == job.next_run_time
        path.write_text(base.replace(f'report_schedule = "{NEVER}"\n', ""), encoding="utf-8")
        assert daemon.reload()
        assert daemon.scheduler.get_job("report") is None and {j.id for j in daemon.scheduler.get_jobs()} == {"files-main"}
        assert daemon.daemon_info()["report"] is None
    finally:
        assert daemon.stop()


def test_the_daemon_seals_scheduled_reports_that_verify_and_chain(tmp_path, small_tree, keypair, daemons):
    port = _free_port()
    config = write_config(tmp_path, signing_key=keypair[0], main_extra=DAEMON + 'report_schedule = "every 2s"\n', connectors={
        "files.toml": files_connector(small_tree, extra='schedule = "every 1s"\n')})
    vault = Vault(tmp_path / "vault")
    d = daemons(config, tmp_path / "daemon.log", "--health-port", str(port))
    # a report is counted, then logged, after its bag is in the vault: wait for the log lines
    _wait(lambda: sum(e.get("event") == "report_end" for e in d.events()) >= 2, 15, "two scheduled reports", d)
    assert len(_report_bags(vault)) >= 2
    assert d.has("report_scheduled", contains="report: scheduled (every 2s)")
    sealed = [e for e in d.events() if e.get("event") == "report_end"]
    assert sealed and all(e["message"].startswith("report sealed: ") and " finding(s) (" in e["message"] for e in sealed)
    assert Path(sealed[0]["message"].removeprefix("report sealed: ").split(";")[0]).is_file()  # where it is
    assert not d.has("report_error") and not d.has("run_error")
    last = read_status_file(vault)["daemon"]["report"]["last"]
    assert (vault.root / last["bag"] / "data" / "index.html").is_file() and last["findings"] >= 0
    families = parse_prometheus(_get(f"http://127.0.0.1:{port}/metrics")[2])
    assert sample(families, "shoseki_reports_total", result="ok") >= 2
    assert sample(families, "shoseki_reports_total", result="failed") == 0
    assert sample(families, "shoseki_last_report_timestamp_seconds") > time.time() - 60
    rc, _ = d.stop()
    assert rc == 0, d.text()

    from evidence.verify import read_bag_info

    reports = _report_bags(vault)
    for old, new in zip(reports, reports[1:]):  # each chained to the one before
        digest = __import__("hashlib").sha256((old / "tagmanifest-sha256.txt").read_bytes()).hexdigest()
        assert read_bag_info(new)["Previous-Bag-Digest"] == f"sha256:{digest}"
    assert all((r / "tagmanifest-sha256.txt.minisig").is_file() for r in reports)
    assert len(_runs(vault, "files-main", "complete")) >= 2
    # the report takes every slot: no collection ran while a report was being made
    _intervals_do_not_overlap(_runs(vault, "files-main") + _runs(vault, "report"))
    result = verify_vault(vault)
    assert result.ok, [p.describe() for p in result.problems]


def test_a_broken_context_file_fails_the_report_with_its_reason_and_collections_go_on(tmp_path, small_tree, daemons):
    config = write_config(tmp_path, main_extra=DAEMON + 'report_schedule = "every 2s"\n', connectors={
        "files.toml": files_connector(small_tree, extra='schedule = "every 1s"\n')})
    vault = Vault(tmp_path / "vault")
    d = daemons(config, tmp_path / "daemon.log")
    _wait(lambda: _runs(vault, "files-main", "complete"), 10, "a first collection", d)
    roster = tmp_path / "config" / "roster.csv"
    roster.write_text("email,name,status\nyamada@example.co.jp,山田,active\nnot-an-email,鈴木,active\n", encoding="utf-8")
    reason = f"report: could not be made: configuration error: {roster}:3: email: 'not-an-email' is not an email address"
    _wait(lambda: d.has("report_error", contains=reason), 10, "the report to fail", d)
    failed = len(_runs(vault, "files-main", "complete"))
    _wait(lambda: len(_runs(vault, "files-main", "complete")) >= failed + 2, 10, "collections after the failure", d)
    status = read_status_file(vault)["daemon"]["report"]
    assert status["schedule"] == "every 2s" and status["last_error"]["message"] == reason.removeprefix("report: could not be made: ")
    assert [e for e in d.events() if e.get("event") == "report_error"][0]["level"] == "error"
    assert d.proc.poll() is None and not d.has("run_error")
    rc, _ = d.stop()
    assert rc == 0, d.text()
    assert verify_vault(vault).ok


# -- the scheduled verification ([daemon] verify_schedule) ----------------------------------------


def test_the_daemon_verifies_the_vault_on_schedule_and_reports_changed_evidence(tmp_path, small_tree, keypair, daemons):
    port = _free_port()
    config = write_config(tmp_path, signing_key=keypair[0], main_extra=DAEMON + 'verify_schedule = "every 1s"\n', connectors={
        "files.toml": files_connector(small_tree, extra=f'schedule = "{NEVER}"\n')})
    vault = Vault(tmp_path / "vault")
    d = daemons(config, tmp_path / "daemon.log", "--health-port", str(port))
    _wait(lambda: _runs(vault, "files-main", "complete"), 20, "the catch-up collection", d)
    _wait(lambda: d.has("verify_end", contains="verify: OK: 1 bag(s)"), 15, "a verification that saw the bag", d)
    assert d.has("verify_scheduled", contains="verify: scheduled (every 1s)")
    families = parse_prometheus(_get(f"http://127.0.0.1:{port}/metrics")[2])
    assert sample(families, "shoseki_verifications_total", result="ok") >= 1
    assert sample(families, "shoseki_bags_with_problems") == 0
    assert sample(families, "shoseki_last_full_verify_timestamp_seconds") > time.time() - 60

    bag = vault.root / _runs(vault, "files-main", "complete")[0]["bag"]
    grants = bag / "data" / "tables" / "grants.csv"
    grants.chmod(0o640)
    grants.write_bytes(grants.read_bytes() + b"x")  # evidence changed after it was sealed
    _wait(lambda: d.has("verify_end", contains="verify: FAILED: "), 15, "a verification that sees the change", d)
    assert d.has("verify_problem", contains="changed file data/tables/grants.csv")
    assert [e for e in d.events() if e.get("event") == "verify_problem"][0]["level"] == "error"
    families = parse_prometheus(_get(f"http://127.0.0.1:{port}/metrics")[2])
    assert sample(families, "shoseki_verifications_total", result="problems") >= 1
    assert sample(families, "shoseki_bags_with_problems") == 1
    health = json.loads(_get(f"http://127.0.0.1:{port}/healthz")[2])
    assert health["status"] == "failing" and health["verification"]["with_problems"] == [bag.relative_to(vault.root).as_posix()]
    info = read_status_file(vault)["daemon"]["verify"]
    assert info["schedule"] == "every 1s" and info["last"]["ok"] is False and info["last"]["problems"] >= 1
    assert 'data-check="failed"' in (vault.root / "index.html").read_text(encoding="utf-8")
    shown = _shoseki(config, "status")
    assert shown.returncode == 2, shown.stdout + shown.stderr
    assert "PROBLEMS at the last check of 1 bag(s)" in shown.stdout and bag.name in shown.stdout
    assert "overall: failing (exit 2)" in shown.stdout
    assert not d.has("verify_error") and not d.has("run_error")
    rc, _ = d.stop()
    assert rc == 0, d.text()


def test_a_verification_stops_between_bags_when_asked(tmp_path, small_tree):
    from evidence.verify import VerifyStopped

    cfg = load_config(write_config(tmp_path, connectors={"a.toml": files_connector(small_tree)}))
    for _ in range(2):
        assert run_connector(cfg, cfg.connectors[0]).status == "complete"
    asked = []
    with pytest.raises(VerifyStopped, match="stopped after 1 of 2 bag"):
        verify_vault(Vault(cfg.vault_path), stop=lambda: asked.append(1) or len(asked) > 1)


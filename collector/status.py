"""How each connector stands: last run, evidence age, stale or not, next run, last error.

One computation, three readers: ``shoseki status`` (a table, or ``--json``; exit 0 when every
enabled connector is fresh and complete, 1 when something is stale or partial, 2 when a connector
is failing), the daemon's ``vault/.state/status.json`` (rewritten after every event and every
few seconds), and ``/healthz`` + ``/metrics`` (Prometheus text format 0.0.4).

Evidence age is measured from the end of the last *complete* collection (when its bag was
sealed); it is stale when older than the connector's ``max_age``, or when there is none.
Nothing here holds a secret: connector settings are not copied, only ids, times and reasons.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from collector.config import LoadedConfig, schedule_trigger
from evidence.model import parse_utc, utc_iso
from evidence.vault import FILE_MODE, Vault

OK, ATTENTION, FAILING = 0, 1, 2
LEVEL_NAMES = {OK: "ok", ATTENTION: "attention", FAILING: "failing"}
STATUS_FILE = "status.json"


# -- the catalogue, read without writing ----------------------------------------------------


def _read_catalogue_file(path: Path, table: str = "runs") -> list[dict[str, Any]]:
    """TinyDB rewrites the file in place, so a read can meet a half-written file: try again."""
    for _ in range(40):
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        try:
            data = json.loads(text) if text.strip() else {}
        except ValueError:
            time.sleep(0.05)
            continue
        return [dict(r) for r in (data.get(table) or {}).values()]
    raise RuntimeError(f"{path} could not be read as JSON (is another program writing it?)")


def read_runs(vault: Vault) -> list[dict[str, Any]]:
    """Every run row of the catalogue; creates nothing (a monitoring user may only read)."""
    path = vault.state / "catalog.json"
    if not path.exists():
        return []
    try:
        with vault.lock("catalog"):
            return _read_catalogue_file(path)
    except PermissionError:  # no write access to the lock file: read between writes
        return _read_catalogue_file(path)


def upload_status(config: LoadedConfig) -> dict[str, Any] | None:
    """The WORM copy (``[vault] s3``): bags sealed but not yet copied, and the last upload error.
    None when no S3 copy is configured. Reads only."""
    s3 = config.main.vault.s3
    if s3 is None:
        return None
    from evidence import ledger

    vault = Vault(config.vault_path)
    path = vault.state / "catalog.json"
    rows = {r.get("bag"): r for r in (_read_catalogue_file(path, "uploads") if path.exists() else [])}
    waiting = [(e.bag, rows.get(e.bag)) for e in ledger.entries(vault.ledger)
               if (rows.get(e.bag) or {}).get("status") != "uploaded" and (vault.root / e.bag).is_dir()]
    errors = sorted((r for _, r in waiting if r and r.get("last_error")), key=lambda r: r.get("updated_utc") or "")
    last = errors[-1] if errors else {}
    return {
        "bucket": s3.bucket, "prefix": s3.prefix, "not_copied": len(waiting),
        "bags_not_copied": [b for b, _ in waiting], "last_error": last.get("last_error"),
        "last_error_bag": last.get("bag"), "last_error_utc": last.get("updated_utc"),
    }


def render_uploads(summary: dict[str, Any] | None, tz: ZoneInfo) -> str:
    if summary is None:
        return ""
    where = f"s3://{summary['bucket']}/{summary['prefix']}"
    if not summary["not_copied"]:
        return f"worm copy: {where}: every sealed bag copied\n"
    lines = [f"worm copy: {where}: {summary['not_copied']} bag(s) NOT COPIED yet (retried at the next collection)"]
    lines += [f"  not copied: {b}" for b in summary["bags_not_copied"][:10]]
    if summary["last_error"]:
        lines.append(f"  last upload error ({_local(summary['last_error_utc'], tz)}, {summary['last_error_bag']}): {summary['last_error']}")
    return "\n".join(lines) + "\n"


def _run_time(row: dict[str, Any]) -> datetime:
    return (
        parse_utc(row.get("started_utc")) or parse_utc(row.get("detected_utc")) or datetime.min.replace(tzinfo=timezone.utc)
    )


# -- per connector ----------------------------------------------------------------------------


@dataclass
class ConnectorStatus:
    id: str
    type: str
    enabled: bool
    schedule: str
    max_age_s: float
    state: str = "ok"          # failing | partial | aborted | stale | never run | ok | disabled (first that applies)
    level: int = OK
    last_run: dict[str, Any] | None = None
    last_complete_utc: str | None = None
    evidence_age_s: float | None = None
    stale: bool = False
    next_run_utc: str | None = None
    running: dict[str, Any] | None = None
    last_error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def next_fire_utc(schedule: str, tz: str, now: datetime) -> str | None:
    try:
        fire = schedule_trigger(schedule, tz).get_next_fire_time(None, now.astimezone(ZoneInfo(tz)))
    except ValueError:
        return None
    return utc_iso(fire.replace(microsecond=0)) if fire else None


def connector_statuses(
    config: LoadedConfig,
    runs: Iterable[dict[str, Any]],
    *,
    now: datetime | None = None,
    next_runs: dict[str, str | None] | None = None,
    running: dict[str, dict[str, Any]] | None = None,
    errors: dict[str, dict[str, Any]] | None = None,
) -> list[ConnectorStatus]:
    """``next_runs``, ``running`` and ``errors`` come from a live daemon when there is one;
    ``errors`` are failures outside a sealed run (``{"at_utc", "message"}``)."""
    now = now or datetime.now(timezone.utc)
    by_connector: dict[str, list[dict[str, Any]]] = {}
    for row in runs:
        by_connector.setdefault(row.get("connector_id") or "", []).append(row)
    tz = config.main.organization.timezone
    out = []
    for entry in config.connectors:
        rows = sorted(by_connector.get(entry.id, []), key=lambda r: (_run_time(r), r.get("run_id") or ""))
        s = ConnectorStatus(entry.id, entry.type, entry.enabled, entry.schedule, entry.max_age.total_seconds())
        last = rows[-1] if rows else None
        if last is not None:
            s.last_run = {k: last.get(k) for k in ("run_id", "status", "started_utc", "finished_utc", "bag", "reasons")}
            if last.get("status") != "complete" and last.get("reasons"):
                s.last_error = str(last["reasons"][0])
        complete = [parse_utc(r.get("finished_utc")) or _run_time(r) for r in rows if r.get("status") == "complete"]
        if complete:
            finished = max(complete)
            s.last_complete_utc = utc_iso(finished)
            s.evidence_age_s = max(0.0, round((now - finished).total_seconds(), 3))
        s.stale = s.evidence_age_s is None or s.evidence_age_s > s.max_age_s
        error = (errors or {}).get(entry.id)
        error_is_newer = error is not None and (
            last is None or (parse_utc(error.get("at_utc")) or now) >= (parse_utc(last.get("finished_utc")) or _run_time(last))
        )
        if error_is_newer:
            s.last_error = error["message"]
        if entry.enabled:
            s.next_run_utc = (next_runs or {}).get(entry.id) if next_runs is not None else next_fire_utc(entry.schedule, tz, now)
            s.running = (running or {}).get(entry.id)
        last_status = last.get("status") if last else None
        if not entry.enabled:
            s.state, s.level = "disabled", OK
        elif last_status == "failed" or error_is_newer:
            s.state, s.level = "failing", FAILING
        elif last_status in ("partial", "aborted"):
            s.state, s.level = last_status, ATTENTION
        elif s.stale:
            s.state, s.level = ("never run" if last is None else "stale"), ATTENTION
        else:
            s.state, s.level = "ok", OK
        out.append(s)
    return out


def exit_code(statuses: Iterable[ConnectorStatus]) -> int:
    return max((s.level for s in statuses if s.enabled), default=OK)


# -- status.json --------------------------------------------------------------------------------


def status_path(vault: Vault) -> Path:
    return vault.state / STATUS_FILE


def write_status_file(vault: Vault, payload: dict[str, Any]) -> None:
    """Replace ``status.json`` atomically (a reader never sees half a file)."""
    path = status_path(vault)
    tmp = path.with_name(f".{STATUS_FILE}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(payload, f, ensure_ascii=False, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def read_status_file(vault: Vault) -> dict[str, Any] | None:
    try:
        return json.loads(status_path(vault).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def daemon_alive(payload: dict[str, Any] | None) -> bool:
    """The daemon that wrote ``payload`` is still running (same host, its pid alive)."""
    daemon = (payload or {}).get("daemon") or {}
    if daemon.get("state") not in ("running", "stopping") or daemon.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(daemon["pid"]), 0)
    except PermissionError:
        return True
    except (OSError, KeyError, TypeError, ValueError):
        return False
    return True


def snapshot(config: LoadedConfig, *, now: datetime | None = None) -> tuple[list[ConnectorStatus], dict[str, Any] | None]:
    """What ``shoseki status`` shows: the catalogue, plus the live daemon's view when it runs."""
    vault = Vault(config.vault_path)
    payload = read_status_file(vault)
    live = daemon_alive(payload)
    if live:
        daemon = {c["id"]: c for c in payload.get("connectors", [])}
        statuses = connector_statuses(
            config, read_runs(vault), now=now,
            next_runs={cid: c.get("next_run_utc") for cid, c in daemon.items()},
            running={cid: c["running"] for cid, c in daemon.items() if c.get("running")},
            errors=payload.get("errors") or {},
        )
    else:
        statuses = connector_statuses(config, read_runs(vault), now=now)
    return statuses, (payload.get("daemon") if live else None)


# -- text for people ----------------------------------------------------------------------------


def human_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"


def latest_report(runs: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest report bag of the run catalogue (``shoseki report`` makes them), or None."""
    reports = [r for r in runs if r.get("connector_id") == "report" and r.get("bag")]
    last = max(reports, key=lambda r: (r.get("finished_utc") or "", r.get("run_id") or ""), default=None)
    return {k: last.get(k) for k in ("run_id", "bag", "finished_utc")} if last else None


# -- the vault's verification ---------------------------------------------------------------------

SHOWN_BAGS = 10
_memo: dict[Path, tuple[tuple[int, int], dict[str, Any]]] = {}


def verification_state(vault: Vault) -> dict[str, Any]:
    """What the latest check of each bag found (``.state/verified.json``, kept by ``shoseki
    verify``, the daemon's ``verify_schedule`` and the vault index), and when the whole vault was
    last verified file by file. Read again only when the file changed (the daemon asks often)."""
    from evidence.vault_index import cache_path, load_cache

    path = cache_path(vault)
    try:
        st = path.stat()
        stamp = (st.st_mtime_ns, st.st_size)
    except OSError:
        stamp = (0, -1)
    memo = _memo.get(path)
    if memo is not None and memo[0] == stamp:
        return memo[1]
    cache = load_cache(vault)
    full = [e["checked_utc"] for e in cache.values() if e.get("by") == "verify" and e.get("checked_utc")]
    state = {
        "bags_checked": len(cache),
        "with_problems": sorted(rel for rel, e in cache.items() if e.get("ok") is False),
        "last_full_utc": max(full) if full else None,
    }
    _memo[path] = (stamp, state)
    return state


def verification_level(state: dict[str, Any]) -> int:
    """Evidence that changed after it was sealed is failing: the auditor would see it."""
    return FAILING if state["with_problems"] else OK


def render_verification(state: dict[str, Any], tz: ZoneInfo) -> str:
    last = _local(state["last_full_utc"], tz) if state["last_full_utc"] else \
        "never (run shoseki verify, or set [daemon] verify_schedule)"
    lines = [f"verification: {state['bags_checked']} bag(s) checked; last full verify {last}"]
    bad = state["with_problems"]
    if bad:
        lines.append(f"  PROBLEMS at the last check of {len(bad)} bag(s): changed or unreadable since sealed "
                     "(shoseki verify names each one):")
        lines += [f"    {rel}" for rel in bad[:SHOWN_BAGS]]
        if len(bad) > SHOWN_BAGS:
            lines.append(f"    ... and {len(bad) - SHOWN_BAGS} more")
    return "\n".join(lines) + "\n"


def render_report(report: dict[str, Any], tz: ZoneInfo) -> str:
    return f"latest report: {_local(report['finished_utc'], tz)}: {report['bag']}/data/index.html\n"


def _local(text: str | None, tz: ZoneInfo) -> str:
    value = parse_utc(text)
    return value.astimezone(tz).strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def render_text(statuses: list[ConnectorStatus], tz: ZoneInfo, daemon: dict[str, Any] | None) -> str:
    lines = []
    if daemon:
        lines.append(f"daemon: {daemon.get('state')} (pid {daemon.get('pid')}, since {_local(daemon.get('started_utc'), tz)})")
        if daemon.get("config_error"):
            lines.append("  the last reload was refused; it keeps running the previous configuration:")
            lines += [f"    {p}" for p in daemon["config_error"]]
    else:
        lines.append("daemon: not running (next runs are when its schedule would start them)")
    header = ("CONNECTOR", "STATE", "LAST RUN", "STATUS", "EVIDENCE AGE", "NEXT RUN")
    rows = []
    for s in statuses:
        last = s.last_run or {}
        age = human_age(s.evidence_age_s) + (" STALE" if s.stale and s.enabled else "")
        state = s.state.upper() if s.level else s.state
        if s.running:
            state += f" (running: {s.running.get('records', 0):,} records)"
        rows.append((s.id, state, _local(last.get("started_utc"), tz), last.get("status") or "-", age, _local(s.next_run_utc, tz)))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    for s in statuses:
        if s.last_error and s.level:
            lines.append(f"  {s.id}: last error: {s.last_error}")
    code = exit_code(statuses)
    lines.append(f"overall: {LEVEL_NAMES[code]} (exit {code})")
    return "\n".join(lines) + "\n"


# -- Prometheus text ------------------------------------------------------------------------------


@dataclass
class Counters:
    """Counted by the daemon since it started (Prometheus counters may reset on restart)."""

    runs: Counter = field(default_factory=Counter)         # (connector, status) -> n
    records: Counter = field(default_factory=Counter)      # connector -> n
    calls: Counter = field(default_factory=Counter)
    throttles: Counter = field(default_factory=Counter)
    throttle_wait_s: Counter = field(default_factory=Counter)
    reloads: Counter = field(default_factory=Counter)      # "ok" | "refused" -> n


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(round(value, 3))


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[tuple[dict[str, str], float]]) -> None:
        self.lines.append(f"# HELP {name} {help_text}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            label_text = ",".join(f'{k}="{_escape(str(v))}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{label_text}}} {_number(value)}" if label_text else f"{name} {_number(value)}")


def metrics_text(statuses: list[ConnectorStatus], counters: Counters, *, started: float, config_error: bool) -> str:
    enabled = [s for s in statuses if s.enabled]
    ids = [s.id for s in enabled]
    run_keys = {(cid, st) for cid in ids for st in ("complete", "partial", "failed")} | set(counters.runs)
    e = _Exposition()
    e.family("shoseki_up", "gauge", "1 while the shoseki daemon runs.", [({}, 1)])
    e.family("shoseki_start_time_seconds", "gauge", "When the daemon started (Unix time).", [({}, round(started, 3))])
    e.family("shoseki_runs_total", "counter", "Collections finished since the daemon started, by connector and status.",
             [({"connector": c, "status": st}, counters.runs[(c, st)]) for c, st in sorted(run_keys)])
    for name, counter, help_text in (
        ("shoseki_records_total", counters.records, "Records collected since the daemon started."),
        ("shoseki_calls_total", counters.calls, "Source API calls made since the daemon started."),
        ("shoseki_throttles_total", counters.throttles, "Times a source throttled a collection since the daemon started."),
        ("shoseki_throttle_wait_seconds_total", counters.throttle_wait_s, "Seconds spent waiting on throttling since the daemon started."),
    ):
        keys = sorted(set(ids) | set(counter))
        e.family(name, "counter", help_text, [({"connector": c}, counter[c]) for c in keys])
    e.family("shoseki_evidence_age_seconds", "gauge", "Age of the last complete bundle (absent when there is none).",
             [({"connector": s.id}, s.evidence_age_s) for s in enabled if s.evidence_age_s is not None])
    e.family("shoseki_evidence_max_age_seconds", "gauge", "The configured max_age: evidence older than this is stale.",
             [({"connector": s.id}, s.max_age_s) for s in enabled])
    e.family("shoseki_evidence_stale", "gauge", "1 when the evidence is stale (older than max_age, or none).",
             [({"connector": s.id}, int(s.stale)) for s in enabled])
    e.family("shoseki_connector_health", "gauge", "0 fresh and complete, 1 stale or partial, 2 failing.",
             [({"connector": s.id}, s.level) for s in enabled])
    e.family("shoseki_running", "gauge", "1 while a collection of the connector runs.",
             [({"connector": s.id}, int(bool(s.running))) for s in enabled])
    e.family("shoseki_last_complete_timestamp_seconds", "gauge", "When the last complete bundle was sealed (Unix time).",
             [({"connector": s.id}, parse_utc(s.last_complete_utc).timestamp()) for s in enabled if s.last_complete_utc])
    e.family("shoseki_next_run_timestamp_seconds", "gauge", "When the next collection is due (Unix time).",
             [({"connector": s.id}, parse_utc(s.next_run_utc).timestamp()) for s in enabled if s.next_run_utc])
    e.family("shoseki_config_reloads_total", "counter", "SIGHUP reloads, by result.",
             [({"result": r}, counters.reloads[r]) for r in sorted({"ok", "refused"} | set(counters.reloads))])
    e.family("shoseki_config_error", "gauge", "1 when the last reload was refused (the previous config keeps running).",
             [({}, int(config_error))])
    return "\n".join(e.lines) + "\n"

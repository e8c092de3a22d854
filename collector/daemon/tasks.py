"""The daemon's scheduled vault tasks: the report (``[daemon] report_schedule``) and the full
verification (``[daemon] verify_schedule``).

Each is a :class:`VaultTask`: what it is called in log lines and events, its job id and
``[daemon]`` key, its texts, and ``work(config, signing_key, stop) -> TaskDone``. The daemon
(``collector.daemon``) schedules them, runs each with every collection slot held, counts and logs
the outcome, and shows them in status.json and /metrics; the work itself is here.

``work`` ends in one of three ways: a :class:`TaskDone` (``ok``, or what it found: ``problems``),
:class:`TaskFailed` (a reason one log line says, no traceback), or another exception (logged with
its traceback). ``AlreadyRunning`` (another process holds the vault's lock) and
``VerifyStopped`` (the daemon is stopping) are taken by the daemon as "skipped" and "stopped".
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from collector.config import ConfigError, LoadedConfig
from collector.runner import refresh_vault_index
from evidence.findings import SEVERITIES, JudgeError
from evidence.model import utc_iso
from evidence.report import ReportError, ReportInputError, ReportResult, build_report
from evidence.vault import Vault
from evidence.verify import verify_vault

log = logging.getLogger("shoseki.daemon")
REPORT_JOB = "report"    # the report's job id: reserved, so no connector has it (config.RESERVED_IDS)
VERIFY_JOB = "@verify"   # the verification's: '@' is in no connector id
SHOWN_PROBLEMS = 50      # verification problems logged one by one; the rest are counted


class TaskFailed(Exception):
    """A scheduled vault task could not do its work, for a reason one log line says (no traceback)."""


@dataclass
class TaskDone:
    result: str                       # "ok", or what the task found ("problems")
    line: str                         # the log line that says so
    level: int = logging.INFO
    extra: dict[str, Any] = field(default_factory=dict)
    last: dict[str, Any] | None = None  # what it found, for status.json


@dataclass
class VaultTask:
    """A scheduled job over the whole vault, and what the daemon knows of its runs."""

    label: str                        # log lines and events: "report: …", "report_end"
    job_id: str                       # never a connector id
    setting: str                      # its [daemon] key
    start_text: str
    stop_text: str                    # logged on SIGTERM while it runs (%s: stop_timeout)
    fail_text: str
    work: Callable[[LoadedConfig, Any, Callable[[], bool]], TaskDone]
    spec: tuple[Any, ...] | None = None
    since: str | None = None                    # running since (UTC)
    error: dict[str, Any] | None = None         # the last failure, until a run succeeds
    last: dict[str, Any] | None = None          # what the last run found
    results: Counter = field(default_factory=Counter)  # result -> n since the daemon started


def vault_tasks() -> dict[str, VaultTask]:
    return {
        "report": VaultTask("report", REPORT_JOB, "report_schedule", "report: judging the sealed evidence",
                            "a report is being made: waiting up to %s for it to be sealed",
                            "report: could not be made: %s", report_work),
        "verify": VaultTask("verify", VERIFY_JOB, "verify_schedule",
                            "verify: checking every bag, chain and the ledger, file by file",
                            "the verification stops after the bag it is checking (waiting up to %s); nothing is recorded",
                            "verify: could not run: %s", verify_work),
    }


def _now() -> str:
    return utc_iso(datetime.now(timezone.utc))


def report_work(config: LoadedConfig, key: Any, stop: Callable[[], bool]) -> TaskDone:
    """As ``shoseki report`` (as of now). Once begun it is finished: ``stop`` is not asked."""
    if not config.connectors:
        raise TaskFailed(f"no connector configured (add a file under {config.path.parent / 'connectors'})")
    try:
        made = build_report(config, signing_key=key)
    except ConfigError as exc:  # a context file (roster.csv …) or controls.toml
        raise TaskFailed("configuration error: " + "; ".join(str(p) for p in exc.problems)) from None
    except JudgeError as exc:  # a judged bundle changed or went missing since it was sealed
        raise TaskFailed(f"cannot judge the evidence: {exc} (run shoseki verify)") from None
    except (ReportError, ReportInputError) as exc:
        raise TaskFailed(str(exc)) from None
    return TaskDone("ok", report_line(made), extra={"run_id": made.sealed.run_id, "status": "complete"},
                    last={"finished_utc": _now(), "bag": made.sealed.relpath, "findings": len(made.assessment.findings)})


def verify_work(config: LoadedConfig, key: Any, stop: Callable[[], bool]) -> TaskDone:
    """As ``shoseki verify``: every bag file by file, the chains and the ledger; the results go
    to ``.state/verified.json`` and ``vault/index.html``, each problem to the log."""
    from evidence.vault_index import record_verification

    vault = Vault(config.vault_path)
    report = verify_vault(vault, stop=stop)
    record_verification(vault, report)
    refresh_vault_index(config, vault)
    for p in report.problems[:SHOWN_PROBLEMS]:
        log.error("verify: PROBLEM %s", p.describe(), extra={"event": "verify_problem"})
    if len(report.problems) > SHOWN_PROBLEMS:
        log.error("verify: and %d more problem(s) (shoseki verify lists them all)", len(report.problems) - SHOWN_PROBLEMS,
                  extra={"event": "verify_problem"})
    last = {"finished_utc": _now(), "ok": report.ok, "bags": report.bags, "files": report.files,
            "bytes": report.bytes, "problems": len(report.problems)}
    checked = report.summary
    if report.ok:
        return TaskDone("ok", f"verify: OK: {checked}; no problems found", extra={"status": "ok"}, last=last)
    return TaskDone("problems", f"verify: FAILED: {len(report.problems)} problem(s) in {checked} "
                                "(evidence changed or missing since it was sealed)", logging.ERROR,
                    {"status": "problems"}, last)


def report_line(made: ReportResult) -> str:
    """One log line per sealed report: where it is, its findings by severity, what it could not see."""
    findings = made.assessment.findings
    severities = Counter(f.severity for f in findings)
    by_severity = ", ".join(f"{s} {severities[s]}" for s in SEVERITIES if severities[s]) or "none"
    line = f"report sealed: {made.index}; {len(findings)} finding(s) ({by_severity})"
    unseen = [b.connector_id for b in made.assessment.bundles if b.freshness != "ok"]
    if unseen:
        line += f"; no current, complete evidence for {', '.join(unseen)} (no finding there means no data)"
    return line

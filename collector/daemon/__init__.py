"""The daemon (``shoseki run``): every enabled connector collected on its schedule, all year.

Threads::

    main          signals (through a wakeup pipe: the handlers themselves do nothing), reloads,
                  status.json every few seconds, the orderly stop
    apscheduler   BackgroundScheduler: computes start times, hands due jobs to its pool
    pool workers  one per due collection; each waits for a slot (``[daemon] max_concurrent``),
                  then calls ``runner.run_connector`` (which starts the bag writer's helper process);
                  and one for a due vault task (``[daemon] report_schedule``, ``verify_schedule``),
                  which takes every slot
    health        optional: /healthz and /metrics on 127.0.0.1 (``--health-port``; ``health.py``)

One APScheduler job per connector id, ``max_instances=1`` and ``coalesce``: a start that comes
due while the previous run of the same connector is still going is skipped (and logged); the
vault's ``connector-<id>`` lock keeps other processes (a manual ``shoseki collect``, a second
daemon) from running it at the same time too. The catalogue, not a job store, remembers what ran:
at start (and for connectors a reload adds) every connector whose evidence is stale — its last
complete bundle older than ``max_age``, or none — runs at once; then each follows its schedule.

With ``[daemon] report_schedule``, one more job (id ``report``, a reserved connector id) makes the
report as ``shoseki report`` does (``evidence.report.build_report``, as of now). It takes every
slot: from the moment it is due no collection starts, it waits for the running ones to end, and
the collections that came due meanwhile start once it is sealed — so it judges a vault this
daemon is not writing to. A failure (a broken context file, evidence changed since it was
sealed) is logged with its reason and counted; another report in progress (the vault's
``report`` lock) makes it skipped. ``/metrics`` counts them (``shoseki_reports_total``).

With ``[daemon] verify_schedule``, the job ``@verify`` verifies the whole vault as ``shoseki
verify`` does, the same way (every slot held), records the result for ``vault/index.html``
(``.state/verified.json``) and logs each problem; a bag whose latest check found a problem makes
the overall state failing (status.json, /healthz, ``shoseki status``). Both are a
:class:`VaultTask` (``tasks.py``, where their work is): one scheduling, slot-holding, counting
and logging path here for the two.

SIGTERM / SIGINT: no new work; running collections are cancelled (``RunContext`` raises
``Cancelled`` at the next page boundary) and the runner seals them ``partial`` ("interrupted")
without moving the cursor; the process exits 0 once they are sealed, or 1 after
``[daemon] stop_timeout`` if one did not stop (its leftover goes to ``.aborted/`` at the next start).
A report being made cannot be cancelled: the stop waits for it to be sealed, within the same bound;
a verification stops after the bag it is checking and records nothing.
SIGHUP: the config is loaded and validated again; a broken one is logged problem by problem and
the running one kept; a good one adds, removes and reschedules jobs (the report's too).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from collector.config import ConfigError, ConnectorEntry, LoadedConfig, load_config, schedule_trigger
from collector.daemon.health import HealthServer
from collector.daemon.tasks import TaskDone, TaskFailed, VaultTask, vault_tasks
from collector.progress import ProgressPrinter
from collector.runner import (
    Progress, RunOutcome, load_signing_key, prepare, publish_public_key, refresh_vault_index, run_connector,
)
from collector.status import (
    LEVEL_NAMES,
    Counters,
    connector_statuses,
    exit_code,
    human_age,
    latest_report,
    metrics_text,
    read_runs,
    verification_level,
    verification_state,
    write_status_file,
)
from evidence.model import parse_utc, utc_iso
from evidence.vault import AlreadyRunning, Vault
from evidence.verify import VerifyStopped

log = logging.getLogger("shoseki.daemon")
POOL_THREADS = 64        # pool threads are made on demand; each due job holds one while it waits for a slot
STATUS_EVERY_S = 5.0     # status.json is also rewritten after every event


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Slots:
    """At most ``limit`` collections at once; the limit can change on reload.

    The scheduled report takes all of them (``acquire_all``): from the moment it asks, no
    collection starts; it waits for the running ones to end, and the waiting ones start after it."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self.exclusive = False   # the report holds, or waits for, every slot
        self._cond = threading.Condition()

    def busy(self) -> bool:
        return self.used >= self.limit or self.exclusive

    def acquire(self, stop: threading.Event) -> bool:
        with self._cond:
            while self.busy() and not stop.is_set():
                self._cond.wait(0.5)
            if stop.is_set():
                return False
            self.used += 1
            return True

    def release(self) -> None:
        with self._cond:
            self.used -= 1
            self._cond.notify_all()

    def acquire_all(self, stop: threading.Event) -> bool:
        """Every slot, for one holder at a time (the report job has ``max_instances=1``)."""
        with self._cond:
            self.exclusive = True
            while self.used and not stop.is_set():
                self._cond.wait(0.5)
            if stop.is_set():
                self.exclusive = False
                self._cond.notify_all()
                return False
            return True

    def release_all(self) -> None:
        with self._cond:
            self.exclusive = False
            self._cond.notify_all()

    def set_limit(self, limit: int) -> None:
        with self._cond:
            self.limit = limit
            self._cond.notify_all()

    def wake(self) -> None:
        with self._cond:
            self._cond.notify_all()


@dataclass
class _Running:
    cancel: threading.Event
    since_utc: str
    reason: str
    progress: Progress | None = None

    def as_dict(self) -> dict[str, Any]:
        p = self.progress
        return {
            "since_utc": self.since_utc, "reason": self.reason,
            "records": p.records if p else 0, "pages": p.pages if p else 0,
            "throttle_wait_s": round(p.throttle_wait_s, 3) if p else 0.0,
        }


class _QuietScheduler(logging.Filter):
    """APScheduler's own lines for skipped and missed starts are replaced by ours (see _on_event)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "maximum number of running instances" not in message and "was missed by" not in message


class Daemon:
    def __init__(self, config: LoadedConfig, *, signing_key: Any = None, health_port: int | None = None):
        self.config = config
        self.signing_key = signing_key
        self.vault = Vault(config.vault_path)
        self.health_port = config.main.daemon.health_port if health_port is None else health_port
        self.stopping = threading.Event()
        self.counters = Counters()
        self.config_error: list[str] | None = None
        self.started = time.time()
        self.state = "starting"
        self.slots = Slots(config.main.daemon.max_concurrent)
        self._cond = threading.Condition()  # guards the fields below; notified when a run ends
        self._running: dict[str, _Running] = {}
        self._errors: dict[str, dict[str, Any]] = {}
        self._catch_up: set[str] = set()
        self._specs: dict[str, tuple[Any, ...]] = {}
        self.tasks = vault_tasks()
        self._status_lock = threading.Lock()
        self._health: HealthServer | None = None
        self.scheduler = BackgroundScheduler(
            timezone=config.tz,
            executors={"default": ThreadPoolExecutor(POOL_THREADS)},
            job_defaults={"coalesce": True, "max_instances": 1},
        )
        self.scheduler.add_listener(self._on_event, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        for name in ("apscheduler.scheduler", "apscheduler.executors.default"):
            logger = logging.getLogger(name)
            if not any(isinstance(f, _QuietScheduler) for f in logger.filters):
                logger.addFilter(_QuietScheduler())

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        self.vault.ensure()
        if self.health_port:
            self._health = HealthServer(self, self.health_port)  # a taken port stops us here
        self.scheduler.start()
        self._apply(None, self.config)
        self.state = "running"
        if not self._specs:
            log.warning("no enabled connector: add a file under %s and reload (SIGHUP)", self.config.path.parent / "connectors")
        log.info(
            "daemon started: %d connector(s) scheduled, vault %s, max_concurrent %d%s%s",
            len(self._specs), self.vault.root, self.slots.limit,
            "".join(f", {t.label} {t.spec[0]}" for t in self.tasks.values() if t.spec),
            f", health on {self._health.url}" if self._health else "", extra={"event": "daemon_start"},
        )
        self.write_status()

    def serve(self) -> int:
        """Run until SIGTERM or SIGINT (main thread only). Returns the exit code."""
        rfd, wfd = os.pipe()
        os.set_blocking(rfd, False)
        os.set_blocking(wfd, False)
        previous_fd = signal.set_wakeup_fd(wfd)
        watched = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
        previous = {sig: signal.signal(sig, lambda *_: None) for sig in watched}
        try:
            self.start()
            stop_signal = None
            while stop_signal is None:
                ready, _, _ = select.select([rfd], [], [], STATUS_EVERY_S)
                if ready:
                    for signum in os.read(rfd, 64):
                        if signum in (signal.SIGTERM, signal.SIGINT):
                            stop_signal = signum
                            break
                        if signum == signal.SIGHUP:
                            try:
                                self.reload()
                            except Exception as exc:  # the running schedule stays as it was
                                log.error("reload failed: %s: %s", type(exc).__name__, exc, exc_info=True, extra={"event": "reload_refused"})
                self.write_status()
            log.info("%s received: stopping", signal.Signals(stop_signal).name, extra={"event": "stopping"})
            return 0 if self.stop() else 1
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(previous_fd)
            os.close(rfd)
            os.close(wfd)

    def stop(self) -> bool:
        """Stop taking work, cancel what runs, wait up to ``stop_timeout`` for it to seal."""
        timeout = self.config.main.daemon.seconds("stop_timeout")
        self.stopping.set()
        self.state = "stopping"
        try:
            self.scheduler.shutdown(wait=False)
        except Exception:  # not started
            pass
        self.slots.wake()
        with self._cond:
            running = sorted(self._running)
            for run in self._running.values():
                run.cancel.set()
            busy = self._busy_tasks()
        if running:
            log.info(
                "asking %s to stop at the next page boundary and seal as partial (waiting up to %s)",
                ", ".join(running), human_age(timeout), extra={"event": "cancel"},
            )
        for task in busy:
            log.info(task.stop_text, human_age(timeout), extra={"event": "cancel"})
        self.write_status()
        deadline = time.monotonic() + timeout
        with self._cond:
            while (self._running or self._busy_tasks()) and deadline - time.monotonic() > 0:
                self._cond.wait(min(deadline - time.monotonic(), 0.5))
            left = sorted(self._running) + [f"the {task.label}" for task in self._busy_tasks()]
        self.state = "stopped"
        if self._health is not None:
            self._health.close()
        self.write_status()
        if left:
            log.error(
                "%s did not stop within stop_timeout (%s); exiting anyway: the next start moves what it left to .aborted/",
                ", ".join(left), human_age(timeout), extra={"event": "stopped"},
            )
            return False
        log.info("stopped", extra={"event": "stopped"})
        return True

    def _busy_tasks(self) -> list[VaultTask]:
        """The vault tasks running now (callers hold ``_cond``)."""
        return [t for t in self.tasks.values() if t.since]

    # -- schedule ---------------------------------------------------------------------------------
    @staticmethod
    def _spec(entry: ConnectorEntry, config: LoadedConfig) -> tuple[Any, ...]:
        d = config.main.daemon
        return (entry.schedule, config.main.organization.timezone, d.seconds("jitter"), d.seconds("misfire_grace"))

    def _apply(self, old: LoadedConfig | None, new: LoadedConfig) -> None:
        """Make the jobs match ``new``: add, remove, reschedule; stale newcomers run at once."""
        want = {e.id: e for e in new.connectors if e.enabled}
        for cid in sorted(set(self._specs) - set(want)):
            self.scheduler.remove_job(cid)
            del self._specs[cid]
            log.info("%s: removed from the schedule (a collection in progress finishes)", cid, extra={"connector": cid, "event": "unscheduled"})
        newcomers = [cid for cid in want if cid not in self._specs]
        stale = {}
        if newcomers:
            for s in connector_statuses(new, read_runs(self.vault)):
                if s.stale:
                    stale[s.id] = (f"last complete bundle {human_age(s.evidence_age_s)} old, max_age {human_age(s.max_age_s)}"
                                   if s.evidence_age_s is not None else "no complete bundle yet")
        for cid, entry in want.items():
            spec = self._spec(entry, new)
            if self._specs.get(cid) == spec:
                continue
            _, tz, jitter, misfire = spec
            kwargs: dict[str, Any] = {}
            if cid not in self._specs and cid in stale:
                kwargs["next_run_time"] = datetime.now(new.tz)
                with self._cond:
                    self._catch_up.add(cid)
            what = "scheduled" if old is None else ("added" if cid not in self._specs else "rescheduled")
            job = self.scheduler.add_job(
                self._job, schedule_trigger(entry.schedule, tz, jitter_s=jitter), args=[cid], id=cid, name=cid,
                replace_existing=True, coalesce=True, max_instances=1, misfire_grace_time=max(1, int(misfire)), **kwargs,
            )
            self._specs[cid] = spec
            log.info(
                "%s: %s (%s); next run %s%s", cid, what, entry.schedule, _local(job.next_run_time, new),
                f"; overdue: {stale[cid]}" if "next_run_time" in kwargs else "", extra={"connector": cid, "event": what},
            )
        for task in self.tasks.values():
            self._apply_task(task, new)

    def _apply_task(self, task: VaultTask, new: LoadedConfig) -> None:
        """A vault task follows its ``[daemon]`` schedule ("" = none). No catch-up at start: it
        takes the vault as it is, whenever it runs, so the next start is the schedule's."""
        d = new.main.daemon
        schedule = getattr(d, task.setting)
        spec = (schedule, new.main.organization.timezone, d.seconds("misfire_grace")) if schedule else None
        if spec == task.spec:
            return
        if spec is None:
            self.scheduler.remove_job(task.job_id)
            task.spec = None
            log.info("%s: removed from the schedule (one in progress is finished)", task.label,
                     extra={"event": f"{task.label}_unscheduled"})
            return
        what = "scheduled" if task.spec is None else "rescheduled"
        _, tz, misfire = spec
        job = self.scheduler.add_job(
            self._task_job, schedule_trigger(schedule, tz), args=[task], id=task.job_id, name=task.label,
            replace_existing=True, coalesce=True, max_instances=1, misfire_grace_time=max(1, int(misfire)),
        )
        task.spec = spec
        log.info("%s: %s (%s); next run %s", task.label, what, schedule, _local(job.next_run_time, new),
                 extra={"event": f"{task.label}_{what}"})

    def _on_event(self, event: Any) -> None:
        due = ", ".join(_local(t, self.config) for t in getattr(event, "scheduled_run_times", [])[:3])
        task = next((t for t in self.tasks.values() if t.job_id == event.job_id), None)
        if task is not None:
            if event.code == EVENT_JOB_MAX_INSTANCES:
                with self._cond:
                    task.results["skipped"] += 1
                log.info("%s: the previous one is still running (or waiting); the start due at %s is skipped",
                         task.label, due, extra={"event": f"{task.label}_skipped"})
            elif event.code == EVENT_JOB_MISSED:
                log.warning("%s: the start due at %s was missed by more than misfire_grace; the next one follows the schedule",
                            task.label, due, extra={"event": f"{task.label}_missed"})
            return
        if event.code == EVENT_JOB_MAX_INSTANCES:
            log.info("%s: still running; the start due at %s is skipped", event.job_id, due, extra={"connector": event.job_id, "event": "run_skipped"})
        elif event.code == EVENT_JOB_MISSED:
            log.warning(
                "%s: the start due at %s was missed by more than misfire_grace; the next one follows the schedule",
                event.job_id, due, extra={"connector": event.job_id, "event": "run_missed"},
            )

    # -- one collection -----------------------------------------------------------------------------
    def _job(self, cid: str) -> None:
        if self.stopping.is_set():
            return
        with self._cond:
            entry = next((e for e in self.config.connectors if e.id == cid and e.enabled), None)
            reason = "catch-up" if cid in self._catch_up else "schedule"
            self._catch_up.discard(cid)
        if entry is None:  # removed by a reload after this start was handed to the pool
            return
        if self.slots.exclusive:
            log.info("%s: due; waiting for the scheduled report to be made", cid, extra={"connector": cid, "event": "run_waiting"})
        elif self.slots.used >= self.slots.limit:
            log.info("%s: due; waiting for a free slot (max_concurrent %d)", cid, self.slots.limit, extra={"connector": cid, "event": "run_waiting"})
        if not self.slots.acquire(self.stopping):
            return
        try:
            self._collect(entry, reason)
        finally:
            self.slots.release()

    def _collect(self, entry: ConnectorEntry, reason: str) -> None:
        cid = entry.id
        with self._cond:
            if self.stopping.is_set():
                return
            config, key = self.config, self.signing_key
            run = self._running[cid] = _Running(threading.Event(), utc_iso(_now()), reason)
        extra = {"connector": cid}
        log.info("%s: collecting (%s, %s)", cid, entry.type, reason, extra={**extra, "event": "run_start"})
        self.write_status()
        printer = ProgressPrinter(sys.stderr, live=False, log_every=60.0)

        def progress(p: Progress) -> None:
            run.progress = p
            if not p.done:
                printer.update(p)

        sealed = False
        try:
            outcome = run_connector(config, entry, cancel_event=run.cancel, progress=progress, signing_key=key)
            sealed = outcome.bag is not None
        except AlreadyRunning:
            with self._cond:
                self.counters.runs[(cid, "skipped")] += 1
            log.warning("%s: skipped: a collection of it is already running in another process", cid, extra={**extra, "event": "run_skipped"})
        except Exception as exc:  # the daemon outlives any one collection
            message = f"{type(exc).__name__}: {exc}"
            with self._cond:
                self.counters.runs[(cid, "error")] += 1
                self._errors[cid] = {"at_utc": utc_iso(_now()), "message": message}
            log.error("%s: the collection could not run: %s", cid, message, exc_info=True, extra={**extra, "event": "run_error"})
        else:
            with self._cond:
                self._errors.pop(cid, None)
            self._count(outcome)
            level = logging.INFO if outcome.status == "complete" else logging.WARNING
            records = sum((outcome.bag.counts or {}).values()) if outcome.bag else 0
            log.log(
                level, "%s: %s, %d records%s -> %s", cid, outcome.status, records,
                f" ({outcome.reasons[0]})" if outcome.reasons else "", outcome.bag.relpath if outcome.bag else "-",
                extra={**extra, "event": "run_end", "run_id": outcome.run_id, "status": outcome.status},
            )
        finally:
            with self._cond:
                self._running.pop(cid, None)
                self._cond.notify_all()
            self.write_status()
        if sealed:  # the run is over and counted; the page follows (never raises)
            refresh_vault_index(config, self.vault)

    def _count(self, outcome: RunOutcome) -> None:
        """Counters for /metrics, from the sealed run.json (the run's own completeness record)."""
        cid = outcome.connector_id
        run: dict[str, Any] = {}
        if outcome.bag is not None:
            try:
                run = json.loads((outcome.bag.path / "data" / "run.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                pass
        with self._cond:
            c = self.counters
            c.runs[(cid, outcome.status)] += 1
            c.records[cid] += sum((run.get("counts") or {}).values())
            c.calls[cid] += sum((run.get("calls") or {}).values())
            c.throttles[cid] += sum((run.get("throttled") or {}).values())
            c.throttle_wait_s[cid] += float(run.get("throttle_wait_s") or 0.0)

    # -- the scheduled vault tasks: the report, the verification --------------------------------------
    def _task_job(self, task: VaultTask) -> None:
        """Run ``task`` with every slot held, so no collection of this daemon runs meanwhile (see :class:`Slots`)."""
        if self.stopping.is_set():
            return
        if self.slots.used:
            log.info(
                "%s: due; waiting for %d running collection(s) to end (collections due meanwhile wait for it)",
                task.label, self.slots.used, extra={"event": f"{task.label}_waiting"},
            )
        if not self.slots.acquire_all(self.stopping):
            return
        try:
            self._run_task(task)
        finally:
            self.slots.release_all()

    def _run_task(self, task: VaultTask) -> None:
        with self._cond:
            if self.stopping.is_set():
                return
            config, key = self.config, self.signing_key
            task.since = utc_iso(_now())
        log.info(task.start_text, extra={"event": f"{task.label}_start"})
        self.write_status()
        done, reason, trace = None, "", None
        try:
            done = task.work(config, key, self.stopping.is_set)
        except AlreadyRunning:
            done = TaskDone("skipped", f"{task.label}: skipped: one is already running in another process", logging.WARNING)
        except VerifyStopped as exc:
            done = TaskDone("stopped", f"{task.label}: {exc}, as the daemon stops; nothing recorded")
        except TaskFailed as exc:
            reason = str(exc)
        except Exception as exc:  # the daemon outlives any one task
            reason, trace = f"{type(exc).__name__}: {exc}", sys.exc_info()
        finally:
            with self._cond:
                task.since = None
                task.results[done.result if done else "failed"] += 1
                if done is None:
                    task.error = {"at_utc": utc_iso(_now()), "message": reason}
                elif done.result not in ("skipped", "stopped"):
                    task.error = None
                    task.last = done.last
                self._cond.notify_all()
        if done is None:
            log.error(task.fail_text, reason, exc_info=trace, extra={"event": f"{task.label}_error"})
        else:
            log.log(done.level, "%s", done.line, extra={"event": f"{task.label}_end", **done.extra})
        self.write_status()

    # -- reload -----------------------------------------------------------------------------------
    def reload(self) -> bool:
        path = self.config.path
        log.info("SIGHUP: reloading the configuration from %s", path, extra={"event": "reload"})
        problems: list[str] = []
        try:
            new = load_config(path)
            if new.vault_path != self.config.vault_path:
                problems.append(f"{path}: vault.path: changed from {self.config.vault_path} to {new.vault_path}; restart the daemon to change vaults")
            key = load_signing_key(new)
        except ConfigError as exc:
            problems += [str(p) for p in exc.problems]
        except Exception as exc:  # an unreadable or encrypted signing key
            problems.append(f"{path}: vault.signing_key: {exc}")
        if problems:
            with self._cond:
                self.counters.reloads["refused"] += 1
            for p in problems:
                log.error("configuration error: %s", p, extra={"event": "reload_refused"})
            log.error("reload refused: still running the previous configuration (%d problem(s))", len(problems), extra={"event": "reload_refused"})
            self.config_error = problems
            self.write_status()
            return False
        publish_public_key(self.vault, key)
        old = self.config
        with self._cond:
            self.config, self.signing_key, self.config_error = new, key, None
        self.slots.set_limit(new.main.daemon.max_concurrent)
        if new.main.daemon.health_port != old.main.daemon.health_port:
            log.warning("daemon.health_port changed: it takes effect at the next start", extra={"event": "reload"})
        self._apply(old, new)
        with self._cond:
            self.counters.reloads["ok"] += 1
        log.info("configuration reloaded: %d connector(s) scheduled", len(self._specs), extra={"event": "reloaded"})
        self.write_status()
        return True

    # -- status, health, metrics ------------------------------------------------------------------
    def statuses(self):
        with self._cond:
            config = self.config
            running = {cid: r.as_dict() for cid, r in self._running.items()}
            errors = dict(self._errors)
        next_runs = {}
        if self.state == "running":
            next_runs = {job.id: utc_iso(job.next_run_time.replace(microsecond=0)) for job in self.scheduler.get_jobs() if job.next_run_time}
        return config, connector_statuses(config, read_runs(self.vault), next_runs=next_runs, running=running, errors=errors), errors

    def daemon_info(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(), "host": socket.gethostname(), "state": self.state,
            "started_utc": utc_iso(datetime.fromtimestamp(self.started, timezone.utc).replace(microsecond=0)),
            "config": str(self.config.path), "config_error": self.config_error,
            "max_concurrent": self.slots.limit, "health": self._health.url if self._health else None,
            **{label: self._task_info(task) for label, task in self.tasks.items()},
        }

    def _task_info(self, task: VaultTask) -> dict[str, Any] | None:
        """A scheduled vault task, for status.json and /healthz (None when its schedule is off)."""
        if task.spec is None:
            return None
        job = self.scheduler.get_job(task.job_id) if self.state == "running" else None
        with self._cond:
            return {
                "schedule": task.spec[0],
                "next_run_utc": utc_iso(job.next_run_time.replace(microsecond=0)) if job and job.next_run_time else None,
                "running_since_utc": task.since, "last_error": task.error, "last": task.last,
            }

    def status_payload(self) -> dict[str, Any]:
        _, statuses, errors = self.statuses()
        verification = verification_state(self.vault)
        code = max(exit_code(statuses), verification_level(verification))
        return {
            "version": 1, "generated_utc": utc_iso(_now()), "daemon": self.daemon_info(),
            "overall": {"state": LEVEL_NAMES[code], "exit_code": code},
            "connectors": [s.as_dict() for s in statuses], "errors": errors, "verification": verification,
        }

    def write_status(self) -> None:
        with self._status_lock:
            try:
                write_status_file(self.vault, self.status_payload())
            except Exception as exc:  # status is a convenience; collections go on
                log.warning("could not write status.json: %s: %s", type(exc).__name__, exc)

    def health(self) -> dict[str, Any]:
        payload = self.status_payload()
        return {
            "status": payload["overall"]["state"], "exit_code": payload["overall"]["exit_code"], "daemon": payload["daemon"],
            "connectors": {
                c["id"]: {k: c[k] for k in ("state", "stale", "evidence_age_s", "next_run_utc", "last_error")}
                | {"last_status": (c["last_run"] or {}).get("status"), "running": bool(c["running"])}
                for c in payload["connectors"] if c["enabled"]
            },
            "verification": payload["verification"],
        }

    def metrics(self) -> str:
        _, statuses, _ = self.statuses()
        with self._cond:
            counters = copy.deepcopy(self.counters)
            reports = Counter(self.tasks["report"].results)
            verifies = Counter(self.tasks["verify"].results)
        last = latest_report(read_runs(self.vault))
        verification = verification_state(self.vault)
        lines = [
            "# HELP shoseki_reports_total Scheduled reports since the daemon started, by result (skipped: another was being made).",
            "# TYPE shoseki_reports_total counter",
            *(f'shoseki_reports_total{{result="{r}"}} {reports[r]}' for r in sorted({"ok", "failed", "skipped"} | set(reports))),
            "# HELP shoseki_last_report_timestamp_seconds When the latest report was sealed, by the daemon or shoseki report (Unix time).",
            "# TYPE shoseki_last_report_timestamp_seconds gauge",
        ]
        finished = parse_utc(last.get("finished_utc")) if last else None
        if finished is not None:
            lines.append(f"shoseki_last_report_timestamp_seconds {round(finished.timestamp(), 3)!r}")
        lines += [
            "# HELP shoseki_verifications_total Scheduled full verifications since the daemon started, by result "
            "(problems: evidence changed or missing; stopped: cut short by a stop).",
            "# TYPE shoseki_verifications_total counter",
            *(f'shoseki_verifications_total{{result="{r}"}} {verifies[r]}'
              for r in sorted({"ok", "problems", "failed", "skipped"} | set(verifies))),
            "# HELP shoseki_bags_with_problems Bags whose latest check (verify, or the vault index) found a problem.",
            "# TYPE shoseki_bags_with_problems gauge",
            f"shoseki_bags_with_problems {len(verification['with_problems'])}",
            "# HELP shoseki_last_full_verify_timestamp_seconds When the vault was last verified file by file, "
            "by the daemon or shoseki verify (Unix time).",
            "# TYPE shoseki_last_full_verify_timestamp_seconds gauge",
        ]
        verified = parse_utc(verification["last_full_utc"])
        if verified is not None:
            lines.append(f"shoseki_last_full_verify_timestamp_seconds {round(verified.timestamp(), 3)!r}")
        text = metrics_text(statuses, counters, started=self.started, config_error=bool(self.config_error))
        return text + "\n".join(lines) + "\n"


def _local(value: datetime | None, config: LoadedConfig) -> str:
    return value.astimezone(config.tz).strftime("%Y-%m-%d %H:%M:%S %z") if value else "none"


def run_daemon(config: LoadedConfig, *, health_port: int | None = None) -> int:
    """``shoseki run``: recover, then serve until stopped. Returns 0 after a clean stop; ends
    the process here with 1 when a collection did not stop in time, 2 when it cannot start."""
    from evidence.signing import SigningError

    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.captureWarnings(True)  # Python warnings become log lines too (one line per event)
    threading.excepthook = lambda a: log.error(
        "thread %s crashed: %s: %s", a.thread.name if a.thread else "?", a.exc_type.__name__, a.exc_value,
        exc_info=(a.exc_type, a.exc_value, a.exc_traceback),
    )
    try:
        _, signing_key, recovered = prepare(config)
    except SigningError as exc:
        log.error("signing key: %s", exc)
        return 2
    except OSError as exc:  # the vault cannot be created or written
        log.error("cannot start: vault %s: %s", config.vault_path, exc)
        return 2
    daemon = Daemon(config, signing_key=signing_key, health_port=health_port)
    for r in recovered:
        if r.get("action") == "moved to .aborted":
            daemon.counters.runs[(r.get("connector_id") or "?", "aborted")] += 1
        log.warning("recovered at start: %s", ", ".join(f"{k} {v}" for k, v in r.items()), extra={"event": "recovered"})
    try:
        code = daemon.serve()
    except Exception as exc:  # the health port is taken, the vault is not writable, the catalogue unreadable …
        log.error("cannot go on: %s: %s", type(exc).__name__, exc, exc_info=not isinstance(exc, OSError))
        daemon.stop()
        code = 2
    if code != 0:
        logging.shutdown()
        os._exit(code)  # a collection thread may still be inside a source call: do not wait for it
    return code

"""One collection: a connector's snapshot streamed into a bag, sealed with an honest status.

Status rules (DESIGN.md, "Honest completeness"):

* ``complete``  the snapshot ended normally and nothing was reported through ``ctx.error``;
* ``partial``   records were written, but the snapshot raised, was interrupted, or reported
                places it could not read — the reasons are in run.json and bag-info;
* ``failed``    it raised before yielding a single record (bad credential, source down).

The cursor is committed only after a ``complete`` seal. Every run, whatever its status, is
sealed: a failed collection is evidence too.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from collector.config import ConnectorEntry, LoadedConfig
from collector.state import Catalogue, run_row_from_bag
from connectors.base import Cancelled, ConnectorError, RunContext
from evidence import ledger
from evidence.bundle import BundleWriter, PreviousBag, SealedBag, collector_version, finish_interrupted_seals
from evidence.model import RawPage, Record, utc_iso
from evidence.reader import BaseBundle
from evidence.verify import tagmanifest_digest
from evidence.vault import AlreadyRunning, Vault

log = logging.getLogger("shoseki.runner")
MAX_ERRORS_IN_RUN_JSON = 10_000


@dataclass
class Progress:
    """What a progress display shows; updated by the runner, read by the CLI or the daemon."""

    connector_id: str
    started: float = field(default_factory=time.monotonic)
    records: int = 0
    pages: int = 0
    errors: int = 0
    throttles: int = 0
    throttle_wait_s: float = 0.0
    done: bool = False
    status: str | None = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def rate(self) -> float:
        elapsed = self.elapsed
        return self.records / elapsed if elapsed > 0 else 0.0


@dataclass(frozen=True)
class RunOutcome:
    connector_id: str
    run_id: str
    status: str
    reasons: list[str]
    bag: SealedBag | None


def new_run_id() -> str:
    return "r" + secrets.token_hex(4)


def open_vault(config: LoadedConfig) -> Vault:
    return Vault(config.vault_path).ensure()


def load_signing_key(config: LoadedConfig):
    if config.main.vault.signing_key is None:
        return None
    from evidence.signing import SecretKey

    return SecretKey.load(config.main.vault.signing_key)


def publish_public_key(vault: Vault, signing_key) -> None:
    """Keep ``vault/minisign.pub`` equal to the key bags are signed with."""
    if signing_key is None:
        return
    text = signing_key.public_key().to_text()
    if not vault.public_key.exists() or vault.public_key.read_text(encoding="utf-8") != text:
        vault.public_key.write_text(text, encoding="utf-8")
        vault.public_key.chmod(0o644)


def prepare(config: LoadedConfig) -> tuple[Vault, Any, list[dict[str, Any]]]:
    """Before collecting: load the signing key (a bad key stops here, nothing written), open the
    vault, recover what a crash left, publish the public key. Returns (vault, key, recovered)."""
    signing_key = load_signing_key(config)
    vault = open_vault(config)
    recovered = recover(vault)
    publish_public_key(vault, signing_key)
    if config.main.vault.s3 is not None:  # bags a failed upload left behind (never raises)
        from evidence.remote import retry_pending

        retry_pending(config, vault=vault)
    return vault, signing_key, recovered


def recover(vault: Vault) -> list[dict[str, Any]]:
    """At start: finish interrupted seals, move dead runs' leftovers to ``.aborted/``, record both."""
    catalogue = Catalogue(vault)
    recovered: list[dict[str, Any]] = []
    for rel in finish_interrupted_seals(vault):
        bag = vault.root / rel
        catalogue.record_run(run_row_from_bag(vault, bag, tagmanifest_digest(bag)))
        recovered.append({"bag": rel, "action": "seal finished"})
    if not vault.partial.is_dir():
        return recovered
    for leftover in sorted(p for p in vault.partial.iterdir() if p.is_dir()):
        run_id = leftover.name
        try:
            with vault.lock(f"run-{run_id}", wait=False):
                note = vault.partial / f"{run_id}.json"
                meta = json.loads(note.read_text(encoding="utf-8")) if note.exists() else {}
                target = vault.aborted / run_id
                leftover.rename(target)
                row = {
                    "run_id": run_id,
                    "connector_id": meta.get("connector_id"),
                    "connector_type": meta.get("connector_type"),
                    "status": "aborted",
                    "started_utc": meta.get("started_utc"),
                    "finished_utc": None,
                    "detected_utc": utc_iso(datetime.now(timezone.utc)),
                    "reasons": ["the process ended before the run was sealed (crash, kill or power loss)"],
                    "bag": None,
                    "aborted_path": vault.relative(target),
                }
                (target / "aborted.json").write_text(json.dumps(row, ensure_ascii=False, indent=2), encoding="utf-8")
                note.unlink(missing_ok=True)
                catalogue.record_run(row)
                recovered.append({"run_id": run_id, "action": "moved to .aborted", "connector_id": row["connector_id"]})
                log.warning("run %s of %s was interrupted before sealing; moved to %s", run_id, row["connector_id"], target)
        except AlreadyRunning:  # another live process owns it
            continue
    return recovered


def run_connector(
    config: LoadedConfig,
    entry: ConnectorEntry,
    *,
    clients: Any = None,
    cancel_event: threading.Event | None = None,
    progress: Callable[[Progress], None] | None = None,
    progress_interval: float = 0.5,
    signing_key: Any = None,
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
) -> RunOutcome:
    """Run one connector once and seal its bag. Raises ``AlreadyRunning`` if it is running elsewhere."""
    vault = open_vault(config)
    catalogue = Catalogue(vault)
    with vault.lock(f"connector-{entry.id}", wait=False):
        run_id = new_run_id()
        with vault.lock(f"run-{run_id}"):
            started = now()
            note = vault.partial / f"{run_id}.json"
            note.write_text(
                json.dumps({"connector_id": entry.id, "connector_type": entry.type, "started_utc": utc_iso(started)}),
                encoding="utf-8",
            )
            last = ledger.last_for_connector(vault.ledger, entry.id)
            previous = PreviousBag(vault.root / last.bag, last.tagmanifest_sha256, last.run_id) if last else None
            writer = BundleWriter(
                vault, run_id=run_id, connector_id=entry.id, connector_type=entry.type, started=started,
                tz=config.tz, organization=config.main.organization.name, previous=previous,
            )
            cursor_before, cursor_run = catalogue.cursor_entry(entry.id)
            ctx = RunContext(
                run_id=run_id, connector_id=entry.id, started=started, organization=config.organization,
                cursor=cursor_before, cancel_event=cancel_event, raw_sink=writer.write_raw,
                base=_base_bundle(vault, catalogue, cursor_run),
            )
            outcome = _collect(entry, ctx, writer, clients, progress, progress_interval)
            fatal, reasons = outcome
            records = sum(writer.counts.values())
            if fatal and records == 0 and not isinstance(fatal, Cancelled):
                status = "failed"
            elif fatal or ctx.errors:
                status = "partial"
            else:
                status = "complete"
            if ctx.errors:
                first = ctx.errors[0]
                reasons.append(
                    f"{len(ctx.errors)} place(s) could not be read, e.g. {first.where}: {first.message} (all listed under errors in run.json)"
                )
            committed = status == "complete" and ctx.cursor_set
            run_info = {
                "mode": ctx.notes.pop("mode", "full"),
                "connector": {"settings": entry.settings(), "config_digest": entry.digest(), "schedule": entry.schedule},
                "identity": ctx.identity,
                "sources": ctx.sources,
                "calls": dict(sorted(ctx.calls.items())),
                "units": dict(sorted(ctx.units.items())),
                "pages": dict(sorted(ctx.pages.items())),
                "retries": dict(sorted(ctx.retries.items())),
                "throttled": dict(sorted(ctx.throttled.items())),
                "throttle_wait_s": round(ctx.throttle_wait_s, 3),
                "errors": [e.as_dict() for e in ctx.errors[:MAX_ERRORS_IN_RUN_JSON]],
                "errors_total": len(ctx.errors),
                "cursor": {"before": cursor_before, "after": ctx.pending_cursor if committed else None, "committed": committed},
                "notes": ctx.notes,
            }
            sealed = writer.seal(status=status, reasons=reasons, finished=now(), run_info=run_info, signing_key=signing_key)
            catalogue.record_run(
                {
                    "run_id": run_id, "connector_id": entry.id, "connector_type": entry.type,
                    "status": sealed.status, "started_utc": utc_iso(started), "finished_utc": utc_iso(now()),
                    "bag": sealed.relpath, "digest": sealed.digest, "counts": sealed.counts,
                    "reasons": reasons, "mode": run_info["mode"],
                }
            )
            if committed:
                catalogue.commit_cursor(entry.id, ctx.pending_cursor, run_id)
            note.unlink(missing_ok=True)
            log.info("sealed %s: %s, %s", entry.id, sealed.status, sealed.relpath)
            result = RunOutcome(entry.id, run_id, sealed.status, reasons, sealed)
    if config.main.vault.s3 is not None:  # the WORM copy: never raises, never touches the bag
        from evidence.remote import after_seal

        after_seal(config, vault, sealed.relpath)
    return result


def refresh_vault_index(config: LoadedConfig, vault: Vault) -> Path | None:
    """Rewrite ``vault/index.html``; called after each seal by ``shoseki collect`` and the daemon,
    once the run is over and counted. Never raises: the sealed bag is what matters, and the page
    is rewritten again after the next seal. Returns its path, or None."""
    try:
        from evidence.vault_index import write_vault_index

        o = config.main.organization
        return write_vault_index(vault, tz=config.tz, language=o.language, organization=o.name)
    except Exception as exc:
        log.warning(
            "could not update %s: %s: %s (the sealed bag is not affected; the page is rewritten after the next seal)",
            vault.root / "index.html", type(exc).__name__, exc, exc_info=True,
        )
        return None


def _base_bundle(vault: Vault, catalogue: Catalogue, run_id: str | None) -> BaseBundle | None:
    """The complete bag whose cursor is the committed one: what an incremental run builds on."""
    if run_id is None:
        return None
    row = catalogue.run(run_id)
    if not row or row.get("status") != "complete" or not row.get("bag") or not row.get("digest"):
        return None
    return BaseBundle(vault.root / row["bag"], row["digest"], run_id, row["bag"])


def _collect(entry, ctx, writer, clients, progress, interval) -> tuple[BaseException | None, list[str]]:
    state = Progress(entry.id)
    next_tick = time.monotonic() + interval
    try:
        cls = entry.cls
        if clients is None:
            clients = cls.make_clients(entry.config)
        connector = cls(entry.config, clients)
        for item in connector.snapshot(ctx):
            if isinstance(item, Record):
                writer.write(item)
                state.records += 1
            elif isinstance(item, RawPage):
                ctx.raw(item)
            else:
                raise TypeError(f"{cls.__name__}.snapshot yielded {type(item).__name__}, not a Record or RawPage")
            if progress is not None and time.monotonic() >= next_tick:
                _tick(state, ctx, progress)
                next_tick = time.monotonic() + interval
        return None, []
    except Cancelled as exc:
        return exc, [f"interrupted: the collection was stopped before it finished ({exc.where or 'between pages'})"]
    except ConnectorError as exc:
        return exc, [f"{type(exc).__name__}: {exc}"]
    except Exception as exc:
        log.error("connector %s crashed:\n%s", entry.id, traceback.format_exc())
        return exc, [f"unexpected error in the connector: {type(exc).__name__}: {exc}"]
    finally:
        if progress is not None:
            state.done = True
            _tick(state, ctx, progress)


def _tick(state: Progress, ctx: RunContext, progress: Callable[[Progress], None]) -> None:
    state.pages = sum(ctx.calls.values()) or sum(ctx.pages.values())
    state.errors = len(ctx.errors)
    state.throttles = sum(ctx.throttled.values())
    state.throttle_wait_s = ctx.throttle_wait_s
    progress(state)


__all__ = ["run_connector", "prepare", "recover", "refresh_vault_index", "RunOutcome", "Progress", "collector_version"]

"""The instant a report judges, and the baseline its changes are counted from.

A report judges the bags sealed last at or before one instant (:func:`resolve_period`). Its
changes are counted against a :class:`Baseline`: the bags the previous report judged
(:func:`previous_report_baseline`), or, for a period (``--from`` / ``--to``), the bags as of
the end of its first day (:func:`period_baseline`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Mapping, Sequence
from zoneinfo import ZoneInfo

from evidence import ledger
from evidence.findings.model import JudgedBundle
from evidence.model import parse_utc, utc_iso
from evidence.report.base import REPORT, ReportInputError
from evidence.vault import Vault

# -- the instant judged ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    """The instant judged, and for ``--from`` / ``--to`` the instant changes are counted from."""

    as_of: datetime                      # aware, UTC
    date_from: date | None = None
    date_to: date | None = None
    baseline_as_of: datetime | None = None


def end_of_day(day: date, tz: ZoneInfo) -> datetime:
    """The last instant of local day ``day`` in ``tz``, in UTC."""
    next_midnight = datetime.combine(day + timedelta(days=1), time(0), tzinfo=tz)
    return (next_midnight - timedelta(microseconds=1)).astimezone(timezone.utc)


def instant_for_date(day: date, tz: ZoneInfo, now: datetime) -> datetime:
    """The end of local day ``day``; ``now`` when it is today. A day after today is refused."""
    today = now.astimezone(tz).date()
    if day > today:
        raise ReportInputError(f"{day.isoformat()} is after today ({today.isoformat()} in {tz.key}): "
                               "a report can only judge evidence that already exists")
    return now.astimezone(timezone.utc) if day == today else end_of_day(day, tz)


def resolve_period(tz: ZoneInfo, *, as_of: datetime | None = None, date_from: date | None = None,
                   date_to: date | None = None, now: datetime) -> Period:
    """Check the options together and turn them into instants (local dates in ``tz``)."""
    if date_from is not None and date_to is None:
        raise ReportInputError("--from needs --to (the last day of the period)")
    if date_to is not None and date_from is None:
        raise ReportInputError("--to needs --from (for a single date use --as-of)")
    if date_from is not None and date_to is not None:
        if as_of is not None:
            raise ReportInputError("--as-of cannot be combined with --from/--to: the period is judged as of the end of --to")
        if date_from > date_to:
            raise ReportInputError(f"--from {date_from.isoformat()} is after --to {date_to.isoformat()}")
        return Period(as_of=instant_for_date(date_to, tz, now), date_from=date_from, date_to=date_to,
                      baseline_as_of=instant_for_date(date_from, tz, now))
    if as_of is None:
        return Period(as_of=now.astimezone(timezone.utc))
    if as_of.tzinfo is None:
        raise ReportInputError(f"as-of {as_of.isoformat()} has no time zone")
    if as_of > now:
        raise ReportInputError(f"as-of {utc_iso(as_of)} is in the future: a report can only judge evidence that already exists")
    return Period(as_of=as_of.astimezone(timezone.utc))


# -- the baseline changes are counted from --------------------------------------------------------


@dataclass(frozen=True)
class BaselineBag:
    bag: str | None
    digest: str | None


@dataclass(frozen=True)
class Baseline:
    """What changes are counted from: ``previous_report``, ``period``, ``none`` or ``unavailable``."""

    kind: str
    bags: Mapping[str, BaselineBag] = field(default_factory=dict)   # connector id -> bag judged then
    as_of_utc: str | None = None
    report_bag: str | None = None
    report_digest: str | None = None
    note: str = ""


def _verified_run_json(vault: Vault, entry: ledger.LedgerEntry) -> dict[str, Any] | None:
    """A sealed bag's run.json, when its tag manifest and run.json are as they were sealed."""
    bag = vault.root / entry.bag
    try:
        tags = (bag / "tagmanifest-sha256.txt").read_bytes()
        manifest = (bag / "manifest-sha256.txt").read_bytes()
        raw = (bag / "data" / "run.json").read_bytes()
    except OSError:
        return None
    intact = (
        hashlib.sha256(tags).hexdigest() == entry.tagmanifest_sha256
        and f"{hashlib.sha256(manifest).hexdigest()}  manifest-sha256.txt".encode() in tags.splitlines()
        and f"{hashlib.sha256(raw).hexdigest()}  data/run.json".encode() in manifest.splitlines()
    )
    try:
        return json.loads(raw) if intact else None
    except ValueError:
        return None


def previous_report_baseline(vault: Vault, as_of: datetime) -> Baseline:
    """The bags judged by the latest sealed report whose as-of is not after ``as_of``."""
    best: tuple[datetime, ledger.LedgerEntry, dict[str, Any]] | None = None
    broken: list[str] = []
    for entry in ledger.entries(vault.ledger):
        if entry.connector_id != REPORT:
            continue
        run = _verified_run_json(vault, entry)
        when = parse_utc(run.get("as_of_utc")) if run else None
        if when is None:
            broken.append(entry.bag)
        elif when <= as_of and (best is None or when >= best[0]):
            best = (when, entry, run)
    if best is None:
        note = f"earlier report(s) could not be read as sealed: {', '.join(broken)}" if broken else ""
        return Baseline("unavailable" if broken else "none", note=note)
    when, entry, run = best
    bags = {j["connector_id"]: BaselineBag(j.get("bag"), j.get("digest")) for j in run.get("judged", [])}
    return Baseline("previous_report", bags, utc_iso(when), entry.bag, entry.tagmanifest_sha256)


def period_baseline(bundles: Sequence[JudgedBundle], as_of: datetime) -> Baseline:
    return Baseline("period", {b.connector_id: BaselineBag(b.bag, b.digest) for b in bundles}, utc_iso(as_of))

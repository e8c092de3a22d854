"""report.json and run.json, and building the report: judging, writing, sealing, publishing."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence
from zoneinfo import ZoneInfo

from collector.config import LoadedConfig
from evidence import ledger
from evidence.bundle import SealedBag, collector_version, seal_bag, write_text_file
from evidence.findings.model import (
    SEVERITIES,
    SEVERITY_LABELS,
    STATUS_LABELS,
    Assessment,
    EvidenceRef,
    Finding,
    JudgedBundle,
)
from evidence.model import utc_iso
from evidence.report.base import FORMAT, REPORT
from evidence.report.changes import CHANGE_COLUMNS, ConnectorChanges, compare_bundles
from evidence.report.csvs import (
    ACCOUNT_SPEC,
    FINDING_COLUMNS,
    PRIVILEGED_COLUMNS,
    SHARING_SPEC,
    CsvFile,
    finding_row,
    write_columns_csv,
)
from evidence.report.page import PageInput, local_text, render_index
from evidence.report.period import (
    Baseline,
    Period,
    period_baseline,
    previous_report_baseline,
    resolve_period,
)
from evidence.vault import Vault, bag_name, makedirs

# -- machine-readable files ------------------------------------------------------------------------------


def _ref_json(ref: EvidenceRef) -> dict[str, Any]:
    return {"bag": ref.bag, "digest": ref.digest, "stream": ref.stream, "key": ref.key, "anchor": ref.anchor}


def _judged_json(b: JudgedBundle) -> dict[str, Any]:
    return {
        "connector_id": b.connector_id, "connector_type": b.connector_type, "bag": b.bag, "digest": b.digest,
        "status": b.status, "freshness": b.freshness, "sealed_utc": b.sealed_utc, "collected_to_utc": b.collected_to_utc,
        "age_s": b.age_s, "max_age_s": b.max_age_s, "stale": b.stale, "reasons": list(b.reasons),
    }


def _finding_json(f: Finding) -> dict[str, Any]:
    return {
        "id": f.id, "rule": f.rule, "severity": f.severity, "status": f.status, "connector_id": f.connector_id,
        "resource": f.resource, "resource_name": f.resource_name, "principal": f.principal,
        "principal_email": f.principal_email, "detail": dict(f.detail), "controls": list(f.controls),
        "exception": f.exception, "exception_until": f.exception_until.isoformat() if f.exception_until else None,
        "evidence": [_ref_json(r) for r in f.evidence],
    }


def _changes_json(changes: Sequence[ConnectorChanges]) -> list[dict[str, Any]]:
    return [{
        "connector_id": c.connector_id, "state": c.state, "from_bag": c.old_bag, "to_bag": c.new_bag, "total": c.total,
        "counts": {f"{s}.{k}": n for (s, k), n in sorted(c.counts.items())}, "flags": dict(sorted(c.flags.items())),
    } for c in changes]


def _baseline_json(baseline: Baseline) -> dict[str, Any]:
    return {"kind": baseline.kind, "as_of_utc": baseline.as_of_utc, "report_bag": baseline.report_bag,
            "report_digest": baseline.report_digest, "note": baseline.note,
            "bags": {cid: {"bag": b.bag, "digest": b.digest} for cid, b in sorted(baseline.bags.items())}}


def report_json(assessment: Assessment, run: Mapping[str, Any], baseline: Baseline,
                changes: Sequence[ConnectorChanges]) -> dict[str, Any]:
    return {
        "format": FORMAT, "run_id": run["run_id"], "organization": assessment.organization,
        "as_of_utc": run["as_of_utc"], "period": run["period"], "settings": dict(assessment.settings),
        "judged": [_judged_json(b) for b in assessment.bundles], "baseline": _baseline_json(baseline),
        "changes": _changes_json(changes), "counts": run["findings"],
        "findings": [_finding_json(f) for f in assessment.findings],
        "privileged": [{
            "connector_id": h.connector_id, "principal": h.principal, "email": h.email, "display_name": h.display_name,
            "roles": list(h.roles), "top": h.top, "enabled": h.enabled, "mfa": h.mfa, "evidence": _ref_json(h.evidence),
        } for h in assessment.privileged],
        "register": [{
            "name": e.name, "responsible": e.responsible, "locations": list(e.locations), "allowed": list(e.allowed),
            "resources": e.resources, "accessors": [{
                "principal": a.principal, "email": a.email, "role": a.role, "allowed": a.allowed, "via": a.via,
                "resource": a.resource, "evidence": _ref_json(a.evidence),
            } for a in e.accessors],
        } for e in assessment.register],
    }


def _dump(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=True, default=str) + "\n"


# -- building it -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReportResult:
    sealed: SealedBag
    index: Path                     # data/index.html of the sealed report
    assessment: Assessment
    baseline: Baseline
    changes: tuple[ConnectorChanges, ...]


def _run_json(run_id: str, config: LoadedConfig, period: Period, assessment: Assessment, started: datetime,
              previous: ledger.LedgerEntry | None) -> dict[str, Any]:
    findings = assessment.findings
    return {
        "format": FORMAT, "run_id": run_id, "connector_id": REPORT, "connector_type": REPORT,
        "collector_version": collector_version(), "organization": assessment.organization,
        "language": config.main.organization.language, "timezone": config.tz.key,
        "status": "complete", "reasons": [], "started_utc": utc_iso(started),
        "as_of_utc": utc_iso(period.as_of),
        "period": ({"from": period.date_from.isoformat(), "to": period.date_to.isoformat(),
                    "from_end_utc": utc_iso(period.baseline_as_of)} if period.date_from else None),
        "counts": {"findings": len(findings), "bags_judged": sum(b.bag is not None for b in assessment.bundles)},
        "findings": {
            "total": len(findings),
            "by_severity": {s: sum(f.severity == s for f in findings) for s in SEVERITIES},
            "by_status": {s: sum(f.status == s for f in findings) for s in STATUS_LABELS},
        },
        "judged": [_judged_json(b) for b in assessment.bundles],
        "previous_bag": ({"path": previous.bag, "tagmanifest_sha256": previous.tagmanifest_sha256} if previous else None),
    }


def _bag_info(period: Period, assessment: Assessment, previous: ledger.LedgerEntry | None) -> list[tuple[str, str]]:
    info = [
        ("Previous-Bag-Digest", f"sha256:{previous.tagmanifest_sha256}" if previous else "none"),
        ("Report-As-Of-UTC", utc_iso(period.as_of)),
    ]
    if period.date_from is not None:
        info.append(("Report-Period", f"{period.date_from.isoformat()}/{period.date_to.isoformat()}"))
    info += [("Judged-Bag-Digest", f"sha256:{b.digest} {b.bag}") for b in assessment.bundles if b.bag]
    return info


def _write_csvs(data: Path, config: LoadedConfig, vault: Vault, assessment: Assessment, context: Any) -> None:
    from evidence.findings import iter_accounts, iter_sharing

    tz, lang, domains = config.tz, config.main.organization.language, config.main.organization.domains
    with CsvFile(data / "findings.csv", FINDING_COLUMNS, tz) as out:
        for f in assessment.findings:
            out.write(finding_row(f, lang))
    with CsvFile(data / "privileged.csv", PRIVILEGED_COLUMNS, tz) as out:
        for h in assessment.privileged:
            out.write({"connector_id": h.connector_id, "principal": h.principal, "email": h.email,
                       "display_name": h.display_name, "roles": list(h.roles), "top": h.top, "enabled": h.enabled,
                       "mfa": h.mfa, "evidence_bag": h.evidence.bag, "evidence_key": h.evidence.key})
    with CsvFile(data / "accounts.csv", ACCOUNT_SPEC, tz) as out:
        for row in iter_accounts(vault, assessment.bundles, context):
            out.write(row)
    with CsvFile(data / "sharing.csv", SHARING_SPEC, tz) as out:
        for row in iter_sharing(vault, assessment.bundles, context, as_of=assessment.as_of, domains=domains):
            out.write(row)
    write_columns_csv(data / "columns.csv", tz)


def _readme(run: Mapping[str, Any], assessment: Assessment, baseline: Baseline, name: str, tz: ZoneInfo,
            signed: bool, public_key_rel: str) -> str:
    from evidence.render import jinja_env

    return jinja_env(False).get_template("report_README.txt.j2").render(**{
        "run": run, "bag_name": name, "tz": tz.key, "a": assessment, "baseline": baseline, "signed": signed,
        "public_key_rel": public_key_rel, "as_of_local": local_text(assessment.as_of, tz),
        "generated_local": local_text(run["finished_utc"], tz), "severities": SEVERITIES,
        "severity_labels": SEVERITY_LABELS,
    })


class _Work:
    """One report being written under ``.partial/<run id>/`` (the recovery at the next start
    finds it there, as it finds a collection's), and its scratch folder for the diffs."""

    def __init__(self, vault: Vault, run_id: str, started: datetime):
        self.dir = vault.partial / run_id
        self.data = self.dir / "data"
        self.note = vault.partial / f"{run_id}.json"
        makedirs(vault.state)
        self.scratch = Path(tempfile.mkdtemp(prefix=f"report-{run_id}-", dir=vault.state))
        self.data.mkdir(mode=0o750, parents=True)
        self.note.write_text(json.dumps({"connector_id": REPORT, "connector_type": REPORT,
                                         "started_utc": utc_iso(started)}), encoding="utf-8")

    def clean(self, *, sealed: bool) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.note.unlink(missing_ok=True)
        if not sealed:
            shutil.rmtree(self.dir, ignore_errors=True)


def build_report(
    config: LoadedConfig,
    *,
    as_of: datetime | None = None,
    date_from: date | None = None,
    date_to: date | None = None,
    signing_key: Any = None,
    context: Any = None,
    catalogue: Any = None,
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
) -> ReportResult:
    """Judge the vault as of ``as_of`` (default now), or the period ``date_from``..``date_to``
    (local dates), and seal the report bag. Holds the vault's ``report`` lock (raises
    :class:`~evidence.vault.AlreadyRunning` when another report is being made).

    ``context`` and ``catalogue`` are loaded from the configuration's folder when not given."""
    from collector.context import load_context

    started = now()
    period = resolve_period(config.tz, as_of=as_of, date_from=date_from, date_to=date_to, now=started)
    if context is None:
        context = load_context(config.path.parent, connector_ids={c.id for c in config.connectors})
    if catalogue is None:
        from evidence.controls import load_catalogue

        catalogue = load_catalogue(config.path.parent)
    vault = Vault(config.vault_path).ensure()
    with vault.lock(REPORT, wait=False):
        assessment, baseline = judge(config, vault, period, context, catalogue)
        result = seal_report(config, vault, assessment, period, baseline, context=context, catalogue=catalogue,
                             signing_key=signing_key, started=started, now=now)
    publish_report(config, vault, result.sealed)
    return result


def judge(config: LoadedConfig, vault: Vault, period: Period, context: Any, catalogue: Any) -> tuple[Assessment, Baseline]:
    """The assessment as of ``period.as_of``, and the baseline its changes are counted from."""
    from evidence.findings import assess, select_bundles, settings_from_config

    bundles = select_bundles(vault, config.connectors, period.as_of)
    o = config.main.organization
    assessment = assess(vault, bundles, context, as_of=period.as_of, settings=settings_from_config(config),
                        catalogue=catalogue, organization=o.name, domains=o.domains)
    if period.baseline_as_of is not None:
        baseline = period_baseline(select_bundles(vault, config.connectors, period.baseline_as_of), period.baseline_as_of)
    else:
        baseline = previous_report_baseline(vault, period.as_of)
    return assessment, baseline


def seal_report(config: LoadedConfig, vault: Vault, assessment: Assessment, period: Period, baseline: Baseline, *,
                context: Any, catalogue: Any, signing_key: Any = None, started: datetime | None = None,
                now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> ReportResult:
    """Write the report of ``assessment`` under ``.partial/`` and seal it (the caller holds the
    ``report`` lock). Written under its run's lock, so a recovery at another process's start
    leaves it alone; on failure nothing is left behind but what a crash would leave."""
    from collector.runner import new_run_id

    started = started or now()
    run_id = new_run_id()
    with vault.lock(f"run-{run_id}"):
        work = _Work(vault, run_id, started)
        sealed = None
        try:
            sealed, changes = _write_and_seal(config, vault, work, run_id, assessment, period, baseline,
                                              context, catalogue, signing_key, started, now)
        finally:
            work.clean(sealed=sealed is not None)
    return ReportResult(sealed, sealed.path / "data" / "index.html", assessment, baseline, tuple(changes))


def _write_and_seal(config, vault, work, run_id, assessment, period, baseline, context, catalogue, signing_key,
                    started, now) -> tuple[SealedBag, list[ConnectorChanges]]:
    tz, lang = config.tz, config.main.organization.language
    previous = ledger.last_for_connector(vault.ledger, REPORT)
    with CsvFile(work.data / "changes.csv", CHANGE_COLUMNS, tz) as out:
        changes = compare_bundles(vault, assessment.bundles, baseline, out.write, work.scratch)
    _write_csvs(work.data, config, vault, assessment, context)
    finished = now()
    run = _run_json(run_id, config, period, assessment, started, previous)
    run.update(finished_utc=utc_iso(finished), duration_s=round((finished - started).total_seconds(), 3))
    started_local = started.astimezone(tz)
    name = bag_name(started_local, REPORT, run_id)
    rel_target = f"{started_local.strftime('%Y')}/{started_local.strftime('%Y-%m')}/{name}"
    up = os.path.relpath(vault.root, vault.root / rel_target / "data")
    page = PageInput(run, period, baseline, changes, catalogue, tz, lang, up)
    write_text_file(work.data / "index.html", render_index(assessment, page, vault), bom=False)
    write_text_file(work.data / "report.json", _dump(report_json(assessment, run, baseline, changes)), bom=False)
    write_text_file(work.data / "run.json", _dump(run), bom=False)
    public_key_rel = os.path.relpath(vault.public_key, vault.root / rel_target)
    readme = _readme(run, assessment, baseline, name, tz, signing_key is not None, public_key_rel)
    write_text_file(work.data / "README.txt", readme, bom=True)
    sealed = seal_bag(
        vault, work.dir, rel_target, run_id=run_id, connector_id=REPORT, connector_type=REPORT, status="complete",
        organization=assessment.organization, sealed=finished, tz=tz, info=_bag_info(period, assessment, previous),
        counts=run["counts"], signing_key=signing_key,
    )
    return sealed, changes


def publish_report(config: LoadedConfig, vault: Vault, sealed: SealedBag) -> None:
    """Index the report in the run catalogue, copy it to the WORM store when there is one, and
    rewrite vault/index.html (whose "latest report" it now is), as after a collection."""
    from collector.runner import refresh_vault_index
    from collector.state import Catalogue, run_row_from_bag

    Catalogue(vault).record_run(run_row_from_bag(vault, sealed.path, sealed.digest))
    if config.main.vault.s3 is not None:
        from evidence.remote import after_seal

        after_seal(config, vault, sealed.relpath)
    refresh_vault_index(config, vault)


def summary_lines(result: ReportResult, tz: ZoneInfo) -> list[str]:
    """What ``shoseki report`` prints: where the report is, what it found, what it could not see."""
    a, sealed = result.assessment, result.sealed
    signed = (sealed.path / "tagmanifest-sha256.txt.minisig").exists()
    severities = Counter(f.severity for f in a.findings)
    statuses = Counter(f.status for f in a.findings)
    by_severity = ", ".join(f"{s} {severities[s]}" for s in SEVERITIES if severities[s]) or "none"
    lines = [
        f"report sealed{' and signed' if signed else ''}: {sealed.relpath}",
        f"  as of {local_text(a.as_of, tz)} ({tz.key})",
        f"  findings: {len(a.findings)} ({by_severity}); open {statuses['open']}, "
        f"exception expired {statuses['exception_expired']}, excepted {statuses['excepted']}",
    ]
    lines += [f"  no current, complete evidence for {b.connector_id} ({b.freshness}): for it, no finding means no data"
              for b in a.bundles if b.freshness != "ok"]
    b = result.baseline
    if b.kind == "previous_report":
        compared = sum(c.total for c in result.changes)
        lines.append(f"  changes since the previous report ({b.report_bag}): {compared}")
    elif b.kind == "period":
        lines.append(f"  changes during the period: {sum(c.total for c in result.changes)}")
    else:
        lines.append("  changes: not counted (no previous report)" if b.kind == "none"
                     else f"  changes: not counted ({b.note}; run shoseki verify)")
    lines.append(f"open: {result.index}")
    return lines


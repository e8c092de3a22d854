"""index.html: the report as a person reads it, self-contained (no external resources, no script)."""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Mapping, Sequence
from zoneinfo import ZoneInfo

from evidence.findings.model import (
    RULES,
    SEVERITIES,
    SEVERITY_LABELS,
    STATUS_LABELS,
    Assessment,
    EvidenceRef,
    Finding,
    JudgedBundle,
)
from evidence.model import utc_iso
from evidence.report import changes as _changes
from evidence.report.changes import ConnectorChanges
from evidence.report.period import Baseline, Period
from evidence.report.records import load_evidence
from evidence.report.words import FRESHNESS_LABELS, Words, status_text
from evidence.tables import format_local
from evidence.vault import Vault

#: findings listed per rule in index.html (findings.csv has every one)
FINDINGS_SHOWN = 1000


# -- the page --------------------------------------------------------------------------------------------


def local_text(value: datetime | str | None, tz: ZoneInfo) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    return format_local(value.astimezone(tz).replace(microsecond=0))


def _age_text(seconds: float | None) -> str:
    from collector.status import human_age

    return human_age(seconds)


def _fact(value: Any, words: Words) -> str:
    if value is None:
        return "-"
    if value is True or value is False:
        return words.p("yes" if value else "no")
    if isinstance(value, (list, tuple)):
        return ", ".join(_fact(v, words) for v in value)
    if isinstance(value, Mapping):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return str(value)


def _tri(value: bool | None, words: Words) -> str:
    return words.p("unknown") if value is None else words.p("yes" if value else "no")


def summary_href(report_data: str, bag: str) -> str:
    """The relative link from a report's ``data/`` folder to a judged bag's summary.html."""
    return f"{report_data}/{bag}/data/summary.html"


def _bundle_rows(bundles: Sequence[JudgedBundle], tz: ZoneInfo, up: str, words: Words) -> list[dict[str, Any]]:
    return [{
        "b": b, "freshness": b.freshness, "freshness_label": words.both(FRESHNESS_LABELS[b.freshness]),
        "collected_local": local_text(b.collected_to_utc, tz), "age": _age_text(b.age_s),
        "max_age": _age_text(b.max_age_s), "href": summary_href(up, b.bag) if b.bag else None,
    } for b in bundles]


def _severity_rows(findings: Sequence[Finding], words: Words) -> list[dict[str, Any]]:
    counts = Counter((f.severity, f.status) for f in findings)
    return [{
        "severity": s, "label": words.both(SEVERITY_LABELS[s]),
        "open": counts[(s, "open")], "excepted": counts[(s, "excepted")],
        "exception_expired": counts[(s, "exception_expired")],
        "total": sum(counts[(s, st)] for st in STATUS_LABELS),
    } for s in SEVERITIES]


def _natural(text: str) -> tuple[Any, ...]:
    return tuple(int(p) if p.isdigit() else p for p in re.split(r"(\d+)", text))


def _rule_controls(catalogue: Any, rule: str) -> tuple[str, ...]:
    try:
        return tuple(catalogue.controls_for(rule))
    except LookupError:  # a catalogue that maps no control to this rule
        return ()


def _control_rows(findings: Sequence[Finding], catalogue: Any, words: Words) -> list[dict[str, Any]]:
    """Per framework, every control a rule evidences, with its findings (open / all)."""
    ids: set[str] = {c for rule in RULES for c in _rule_controls(catalogue, rule)}
    ids.update(c for f in findings for c in f.controls)
    total, open_ = Counter(), Counter()
    for f in findings:
        for c in f.controls:
            total[c] += 1
            open_[c] += f.status != "excepted"
    frameworks = list(catalogue.frameworks)
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for cid in ids:
        try:
            control = catalogue.control(cid)
        except LookupError:  # a finding names a control the catalogue does not know: show its id
            control = None
        framework = getattr(control, "framework", None) or cid.split(":", 1)[0]
        groups[framework].append({
            "id": cid, "ref": getattr(control, "ref", None) or cid,
            "title": words.both((control.title_ja, control.title_en)) if control else "",
            "confirmed": bool(getattr(control, "confirmed", False)), "note": getattr(control, "note", "") or "",
            "open": open_[cid], "total": total[cid],
        })
    order = {name: i for i, name in enumerate(frameworks)}
    return [{"framework": name, "controls": sorted(rows, key=lambda r: _natural(r["ref"]))}
            for name, rows in sorted(groups.items(), key=lambda kv: (order.get(kv[0], len(order)), kv[0]))]


def _finding_view(f: Finding, words: Words) -> dict[str, Any]:
    return {
        "f": f, "status_text": status_text(f, words.lang), "severity_label": words.pick(SEVERITY_LABELS[f.severity]),
        "facts": [(k, _fact(v, words)) for k, v in f.detail.items()],
        "evidence": [(ref.anchor, ref.stream, ref.key) for ref in f.evidence],
    }


def _control_label(catalogue: Any, control_id: str, words: Words) -> tuple[str, str]:
    """``(framework and reference, title)`` of a control, or its id when the catalogue lacks it."""
    try:
        c = catalogue.control(control_id)
    except LookupError:
        return control_id, ""
    title = words.pick((c.title_ja, c.title_en))
    if c.confirmed:
        return f"{c.framework} {c.ref}", title
    # an unconfirmed reference is shown by its title, marked, with the reference it was mapped from
    unconfirmed = words.pick(("番号未確認", "reference unconfirmed"))
    return f"{c.framework} {title} ({unconfirmed}: {c.ref})", c.note or title


_SEVERITY_ORDER = {s: i for i, s in enumerate(SEVERITIES)}
_RULE_ORDER = {r: i for i, r in enumerate(RULES)}


def _rule_groups(findings: Sequence[Finding], catalogue: Any, words: Words) -> list[dict[str, Any]]:
    """Findings by rule, the most severe rule first; within one, most severe and open first.

    A rule's findings may differ in severity (a public share of personal information is
    critical, another high): the group takes the highest, and rows show theirs when mixed."""
    by_rule: dict[str, list[Finding]] = defaultdict(list)
    for f in findings:
        by_rule[f.rule].append(f)
    for items in by_rule.values():
        items.sort(key=lambda f: (_SEVERITY_ORDER[f.severity], f.status != "open", f.connector_id, f.resource or "",
                                  f.principal or ""))
    groups = []
    for rule_id, items in sorted(by_rule.items(), key=lambda kv: (_SEVERITY_ORDER[kv[1][0].severity],
                                                                   _RULE_ORDER.get(kv[0], len(_RULE_ORDER)))):
        rule, severity = RULES[rule_id], items[0].severity
        groups.append({
            "rule": rule, "severity": severity, "severity_label": words.both(SEVERITY_LABELS[severity]),
            "mixed": len({f.severity for f in items}) > 1,
            "title": words.both((rule.title_ja, rule.title_en)), "why": rule.why(words.lang),
            "why_alt": rule.why(words.other), "total": len(items),
            "controls": [_control_label(catalogue, c, words)
                         for c in sorted({c for f in items for c in f.controls}, key=_natural)],
            "open": sum(f.status != "excepted" for f in items),
            "shown": [_finding_view(f, words) for f in items[:FINDINGS_SHOWN]],
        })
    return groups


def _shown_refs(groups: Sequence[Mapping[str, Any]], assessment: Assessment) -> list[EvidenceRef]:
    refs = [ref for g in groups for view in g["shown"] for ref in view["f"].evidence]
    refs += [h.evidence for h in assessment.privileged]
    refs += [a.evidence for entry in assessment.register for a in entry.accessors]
    return refs


def _evidence_groups(evidence: Mapping[str, tuple[EvidenceRef, Any]], up: str) -> list[dict[str, Any]]:
    by_bag: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for anchor, (ref, record) in evidence.items():
        text = None if record is None else json.dumps(record, ensure_ascii=False, indent=1, sort_keys=True, default=str)
        by_bag[ref.bag].append({"anchor": anchor, "ref": ref, "text": text})
    return [{
        "bag": bag, "digest": items[0]["ref"].digest, "connector_id": items[0]["ref"].connector_id,
        "href": summary_href(up, bag), "records": sorted(items, key=lambda i: (i["ref"].stream, i["ref"].key)),
    } for bag, items in sorted(by_bag.items())]


def _change_text(row: Mapping[str, Any], words: Words) -> str:
    parts = []
    if row["fields"]:
        parts.append(", ".join(row["fields"]))
    if row["role_old"] != row["role_new"] and row["change"] == "changed":
        parts.append(f"{row['role_old']} → {row['role_new']}")
    elif row["change"] != "changed" and (row["role_old"] or row["role_new"]):
        parts.append(str(row["role_new"] or row["role_old"]))
    for flag in ("became_public", "became_shared"):
        if row[flag]:
            parts.append(words.p(flag))
    return "; ".join(parts)


def _change_views(changes: Sequence[ConnectorChanges], words: Words) -> list[dict[str, Any]]:
    return [{
        "c": c, "state_label": words.t(f"state_{c.state}"),
        "counts": [(stream, {k: c.counts[(stream, k)] for k in ("added", "removed", "changed")})
                   for stream in ("principals", "memberships", "resources", "grants")],
        "rows": [dict(r, what=_change_text(r, words), kind_label=words.p(r["change"])) for r in c.shown],
    } for c in changes]


def _register_views(assessment: Assessment, words: Words) -> list[dict[str, Any]]:
    return [{
        "entry": entry,
        "accessors": sorted(entry.accessors, key=lambda a: (a.allowed, a.email or a.principal)),
        "not_allowed": sum(not a.allowed for a in entry.accessors),
    } for entry in assessment.register]


@dataclass(frozen=True)
class PageInput:
    """Everything index.html shows besides the assessment itself."""

    run: Mapping[str, Any]
    period: Period
    baseline: Baseline
    changes: Sequence[ConnectorChanges]
    catalogue: Any
    tz: ZoneInfo
    lang: str
    up: str          # relative path from the report's data/ folder to the vault root


def render_index(assessment: Assessment, page: PageInput, vault: Vault) -> str:
    from evidence.render import jinja_env

    words = Words(page.lang)
    groups = _rule_groups(assessment.findings, page.catalogue, words)
    evidence = load_evidence(vault, _shown_refs(groups, assessment))
    bundles = _bundle_rows(assessment.bundles, page.tz, page.up, words)
    return jinja_env(True).get_template("report.html.j2").render(
        w=words, a=assessment, run=page.run, period=page.period, baseline=page.baseline, tz=page.tz.key,
        as_of_local=local_text(assessment.as_of, page.tz), as_of_utc=utc_iso(assessment.as_of.replace(microsecond=0)),
        generated_local=local_text(page.run["finished_utc"], page.tz),
        baseline_local=local_text(page.baseline.as_of_utc, page.tz) if page.baseline.as_of_utc else None,
        bundles=bundles, no_data=[r for r in bundles if r["freshness"] != "ok"],
        severities=_severity_rows(assessment.findings, words), controls=_control_rows(assessment.findings, page.catalogue, words),
        groups=groups, findings_shown=FINDINGS_SHOWN, changes=_change_views(page.changes, words),
        changes_shown=_changes.CHANGES_SHOWN, register=_register_views(assessment, words),
        privileged=sorted(assessment.privileged, key=lambda h: (not h.top, h.connector_id, h.email or h.principal)),
        evidence=_evidence_groups(evidence, page.up), tri=lambda v: _tri(v, words),
        href=lambda bag: summary_href(page.up, bag),
    )

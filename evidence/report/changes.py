"""The changes of each judged bag since its baseline bag (changes.csv, and the page's list)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from evidence.diff import Change, diff_bags
from evidence.findings.model import JudgedBundle
from evidence.report.period import Baseline
from evidence.vault import Vault

#: changes listed per connector in index.html (changes.csv has every one)
CHANGES_SHOWN = 500


# -- changes ----------------------------------------------------------------------------------------

CHANGE_COLUMNS = (
    ("connector_id", "id"), ("stream", "text"), ("change", "text"), ("key", "id"), ("old_key", "id"),
    ("resource", "id"), ("principal", "id"), ("fields", "text"), ("role_old", "text"), ("role_new", "text"),
    ("state_changes", "text"), ("became_shared", "text"), ("became_public", "text"),
    ("from_bag", "id"), ("to_bag", "id"),
)


@dataclass
class ConnectorChanges:
    """The changes of one connector between its baseline bag and the bag judged now.

    ``state``: ``compared``; ``same`` (the same bag); ``no_baseline`` (no earlier report or
    period start); ``new_connector`` (not judged at the baseline); ``no_bag`` (no bag on one
    side); ``unavailable`` (the baseline bag is gone or changed since it was sealed)."""

    connector_id: str
    state: str
    old_bag: str | None = None
    new_bag: str | None = None
    counts: Counter = field(default_factory=Counter)       # (stream, kind) -> n
    flags: Counter = field(default_factory=Counter)        # role_changed, became_shared, became_public
    shown: list[dict[str, Any]] = field(default_factory=list)
    total: int = 0


def _record_subject(stream: str, change: Change) -> tuple[str, str]:
    """``(resource, principal)`` a person recognises the changed record by."""
    data = change.new or change.old or {}
    if stream == "grants":
        return data.get("resource_id") or "", data.get("principal_email") or data.get("principal_id") or ""
    if stream == "memberships":
        return data.get("group_id") or "", data.get("member_id") or ""
    if stream == "principals":
        return "", data.get("email") or data.get("id") or change.key
    return data.get("path") or data.get("name") or data.get("id") or change.key, ""


def change_row(connector_id: str, old_bag: str, new_bag: str, change: Change) -> dict[str, Any]:
    resource, principal = _record_subject(change.stream, change)
    role_old = (change.old or {}).get("role") if change.stream == "grants" else None
    role_new = (change.new or {}).get("role") if change.stream == "grants" else None
    return {
        "connector_id": connector_id, "stream": change.stream, "change": change.kind, "key": change.key,
        "old_key": change.old_key, "resource": resource, "principal": principal, "fields": list(change.fields),
        "role_old": role_old, "role_new": role_new, "state_changes": list(change.state_changes),
        "became_shared": change.became_shared, "became_public": change.became_public,
        "from_bag": old_bag, "to_bag": new_bag,
    }


def _unchanged_state(bundle: JudgedBundle, baseline: Baseline) -> ConnectorChanges | None:
    """The outcome for a connector whose bags cannot or need not be compared (else None)."""
    cid = bundle.connector_id
    if baseline.kind in ("none", "unavailable"):
        return ConnectorChanges(cid, "no_baseline", new_bag=bundle.bag)
    old = baseline.bags.get(cid)
    if old is None:
        return ConnectorChanges(cid, "new_connector", new_bag=bundle.bag)
    if old.bag is None or bundle.bag is None:
        return ConnectorChanges(cid, "no_bag", old.bag, bundle.bag)
    if old.digest == bundle.digest:
        return ConnectorChanges(cid, "same", old.bag, bundle.bag)
    return None


def _bag_intact(vault: Vault, bag: str, digest: str | None) -> bool:
    from evidence.reader import BaseBundle, BaseBundleProblem

    if digest is None or not (vault.root / bag).is_dir():
        return False
    try:
        BaseBundle(vault.root / bag, digest, "", bag).verify()
    except BaseBundleProblem:
        return False
    return True


def compare_bundles(vault: Vault, bundles: Sequence[JudgedBundle], baseline: Baseline,
                    write_row: Callable[[dict[str, Any]], None], workdir: Path) -> list[ConnectorChanges]:
    """Diff each judged bag against its baseline bag; every change goes to ``write_row``."""
    out = []
    for bundle in bundles:
        result = _unchanged_state(bundle, baseline)
        if result is None:
            old = baseline.bags[bundle.connector_id]
            result = ConnectorChanges(bundle.connector_id, "compared", old.bag, bundle.bag)
            if not _bag_intact(vault, old.bag, old.digest):
                result.state = "unavailable"
            else:
                for change in diff_bags(vault.root / old.bag, vault.root / bundle.bag, workdir=workdir):
                    _count_change(result, change, write_row)
        out.append(result)
    return out


def _count_change(result: ConnectorChanges, change: Change, write_row: Callable[[dict[str, Any]], None]) -> None:
    row = change_row(result.connector_id, result.old_bag or "", result.new_bag or "", change)
    write_row(row)
    result.total += 1
    result.counts[(change.stream, change.kind)] += 1
    for flag in ("role_changed", "became_shared", "became_public"):
        if getattr(change, flag):
            result.flags[flag] += 1
    if len(result.shown) < CHANGES_SHOWN:
        result.shown.append(row)

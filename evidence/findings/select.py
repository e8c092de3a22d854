"""Which sealed bag is judged for each configured connector as of a date.

The ledger is the authority: for each configured connector instance, the last bag it lists for
that connector sealed at or before the date. The bag is checked against its ledger digest and
its manifests (records and run.json) before a single record is read
(:class:`evidence.reader.BaseBundle`), so a report never judges evidence that changed after it
was sealed.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterator, Sequence

from evidence import ledger
from evidence.findings.model import JudgedBundle
from evidence.model import parse_utc
from evidence.reader import BaseBundle, BaseBundleProblem
from evidence.vault import Vault


class JudgeError(Exception):
    """Evidence cannot be judged (a judged bag is missing or changed since it was sealed)."""


def select_bundles(vault: Vault, connectors: Sequence[Any], as_of: datetime) -> tuple[JudgedBundle, ...]:
    """One :class:`JudgedBundle` per enabled configured connector (``ConnectorEntry``), in config order."""
    latest: dict[str, ledger.LedgerEntry] = {}
    for entry in ledger.entries(vault.ledger):
        sealed = parse_utc(entry.sealed_utc)
        if sealed is not None and sealed <= as_of:
            latest[entry.connector_id] = entry
    out = []
    for c in connectors:
        if not getattr(c, "enabled", True):
            continue
        max_age = int(c.max_age.total_seconds())
        entry = latest.get(c.id)
        if entry is None:
            out.append(JudgedBundle(connector_id=c.id, connector_type=c.type, max_age_s=max_age))
            continue
        out.append(_judged(vault, c.id, c.type, max_age, entry, as_of))
    return tuple(out)


def _judged(vault: Vault, cid: str, ctype: str, max_age: int, entry: ledger.LedgerEntry, as_of: datetime) -> JudgedBundle:
    path = vault.root / entry.bag
    base = BaseBundle(path=path, digest=entry.tagmanifest_sha256, run_id=entry.run_id, relpath=entry.bag)
    if not path.is_dir():
        raise JudgeError(f"{entry.bag}: listed in the ledger (line {entry.line_no}) but missing from the vault; "
                         "run `shoseki verify` / ledger に記載された証跡がありません")
    try:
        base.verify()
    except BaseBundleProblem as exc:
        raise JudgeError(f"{exc}; run `shoseki verify` / 封印後に変更された証跡は判定できません") from None
    run = _run_info(base)
    collected_to = run.get("finished_utc") or entry.sealed_utc
    age = (as_of - parse_utc(collected_to)).total_seconds() if collected_to else None
    return JudgedBundle(
        connector_id=cid, connector_type=ctype, max_age_s=max_age, bag=entry.bag, digest=entry.tagmanifest_sha256,
        status=entry.status, sealed_utc=entry.sealed_utc, collected_to_utc=collected_to,
        reasons=tuple(str(r) for r in run.get("reasons", ())), age_s=age,
        stale=age is not None and age > max_age,
    )


def _run_info(base: BaseBundle) -> dict[str, Any]:
    """run.json, checked by ``verify`` (it says when the evidence was collected, and why it is partial)."""
    try:
        return base.run_info()
    except (OSError, ValueError):
        return {}


def records(vault: Vault, bundle: JudgedBundle, stream: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """``(key, record)`` of one stream of a judged bag, streamed."""
    if bundle.bag is None:
        return iter(())
    return BaseBundle(path=vault.root / bundle.bag, digest=bundle.digest or "", run_id="", relpath=bundle.bag).records(stream)

"""The records an evidence reference points at, read from the sealed bags for the page."""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from evidence.findings.model import EvidenceRef
from evidence.model import canonical_json
from evidence.vault import Vault

#: what a ``run`` evidence reference shows of run.json
RUN_FIELDS = ("run_id", "connector_id", "connector_type", "status", "reasons", "started_utc", "finished_utc",
              "counts", "errors_total", "identity")
RUN_ERRORS_SHOWN = 20


# -- the records an evidence reference points at -----------------------------------------------------

_RECORD_SEP = b',"record":'
_KEY_START = len(b'{"key":')


def _wanted_records(path: Path, wanted: Mapping[bytes, str]) -> Iterator[tuple[str, Any]]:
    """``(key, record)`` of the lines of one records file whose key is wanted; one pass."""
    if not path.is_file():
        return
    with gzip.open(path, "rb") as f:
        for line in f:
            end = line.find(_RECORD_SEP, _KEY_START)
            key = wanted.get(line[_KEY_START:end]) if end > 0 else None
            if key is not None:
                yield key, json.loads(line)["record"]


def _run_summary(bag: Path) -> dict[str, Any] | None:
    try:
        run = json.loads((bag / "data" / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    out = {k: run[k] for k in RUN_FIELDS if k in run}
    if run.get("errors"):
        out["errors (first)"] = run["errors"][:RUN_ERRORS_SHOWN]
    return out


def load_evidence(vault: Vault, refs: Iterable[EvidenceRef]) -> dict[str, tuple[EvidenceRef, Any]]:
    """``anchor -> (ref, record or None)``, reading each needed stream of each bag once."""
    by_anchor: dict[str, EvidenceRef] = {}
    needed: dict[tuple[str, str], dict[bytes, str]] = defaultdict(dict)
    for ref in refs:
        if ref.anchor not in by_anchor:
            by_anchor[ref.anchor] = ref
            needed[(ref.bag, ref.stream)][canonical_json(ref.key).encode()] = ref.key
    found: dict[tuple[str, str, str], Any] = {}
    for (bag, stream), wanted in needed.items():
        if stream == "run":
            found[(bag, stream, "")] = _run_summary(vault.root / bag)
            continue
        path = vault.root / bag / "data" / "records" / f"{stream}.jsonl.gz"
        for key, record in _wanted_records(path, wanted):
            found.setdefault((bag, stream, key), record)
    return {a: (ref, found.get((ref.bag, ref.stream, ref.key))) for a, ref in by_anchor.items()}

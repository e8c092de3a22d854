"""What a connector run sealed, read back for the connector tests (``out`` is a runner outcome)."""

from __future__ import annotations

import gzip
import json
from typing import Any

from evidence.model import STREAMS, parse_line
from evidence.reader import BaseBundle


def run_json(out) -> dict[str, Any]:
    return json.loads((out.bag.path / "data" / "run.json").read_text(encoding="utf-8"))


def records_of(out, stream: str) -> dict[str, dict]:
    """One stream's records by key, read the way an incremental run reads its base (checked first)."""
    return dict(BaseBundle(out.bag.path, out.bag.digest, out.run_id).records(stream))


def all_records(out) -> dict[str, dict[str, dict]]:
    bag = BaseBundle(out.bag.path, out.bag.digest, out.run_id)
    return {s: dict(bag.records(s)) for s in STREAMS}


def record_lists(out) -> dict[str, list[dict]]:
    """Every stream's records in file order, duplicates kept (as the lines say, no checks)."""
    result = {}
    for stream in STREAMS:
        path = out.bag.path / "data" / "records" / f"{stream}.jsonl.gz"
        result[stream] = [parse_line(line)[1] for line in gzip.decompress(path.read_bytes()).splitlines()]
    return result


def record_bytes(out) -> dict[str, bytes]:
    """The uncompressed record files by name: two runs that saw the same thing write the same bytes."""
    return {p.name: gzip.decompress(p.read_bytes()) for p in sorted((out.bag.path / "data" / "records").glob("*.jsonl.gz"))}

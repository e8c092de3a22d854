"""``vault/ledger.jsonl``: one line per sealed bag, each naming the SHA-256 of the line before.

A bag deleted, replaced or reordered after sealing no longer matches its line; a line deleted or
edited breaks the chain of the lines after it. Appends happen under the vault's ``ledger`` lock.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from evidence.model import canonical_json

GENESIS = "0" * 64


@dataclass(frozen=True)
class LedgerEntry:
    seq: int
    bag: str
    connector_id: str
    connector_type: str
    run_id: str
    status: str
    sealed_utc: str
    tagmanifest_sha256: str
    prev_line_sha256: str
    line_sha256: str
    line_no: int

    @classmethod
    def parse(cls, raw: bytes, line_no: int) -> "LedgerEntry":
        obj = json.loads(raw)
        return cls(
            seq=int(obj["seq"]), bag=obj["bag"], connector_id=obj["connector_id"],
            connector_type=obj["connector_type"], run_id=obj["run_id"], status=obj["status"],
            sealed_utc=obj["sealed_utc"], tagmanifest_sha256=obj["tagmanifest_sha256"],
            prev_line_sha256=obj["prev_line_sha256"], line_sha256=hashlib.sha256(raw).hexdigest(),
            line_no=line_no,
        )


def read_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """``(line number, raw bytes without the newline)`` for every non-empty line."""
    if not path.exists():
        return
    with open(path, "rb") as f:
        for no, raw in enumerate(f, start=1):
            raw = raw.rstrip(b"\n")
            if raw:
                yield no, raw


def entries(path: Path) -> Iterator[LedgerEntry]:
    for no, raw in read_lines(path):
        yield LedgerEntry.parse(raw, no)


def last_for_connector(path: Path, connector_id: str) -> LedgerEntry | None:
    last = None
    for e in entries(path):
        if e.connector_id == connector_id:
            last = e
    return last


def append(path: Path, fields: dict[str, Any]) -> LedgerEntry:
    """Append one line (the caller holds the ledger lock); fsync before returning."""
    prev, seq = GENESIS, 0
    for _, raw in read_lines(path):
        prev = hashlib.sha256(raw).hexdigest()
        seq = int(json.loads(raw)["seq"])
    body = dict(fields, seq=seq + 1, prev_line_sha256=prev)
    line = canonical_json(body).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        os.write(fd, line + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return LedgerEntry.parse(line, 0)

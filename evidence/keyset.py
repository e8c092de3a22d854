"""Sorted sets of 64-bit record hashes, built and compared on disk in bounded memory.

A bag's records are summarised per stream as two sorted hash files: the hashes of the record
keys, and the hashes of key + content. Comparing two bags' files by a streaming merge gives the
added, removed and changed counts for ``summary.html`` without holding either bag in memory.
The files are a cache in ``.state/keys/`` (rebuilt from the bag's records when missing).
"""

from __future__ import annotations

import gzip
import hashlib
import heapq
import os
import tempfile
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

CHUNK = 262_144  # hashes sorted in memory at a time (2 MiB)


def h64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


class SortedHashBuilder:
    """Collect hashes in any order; :meth:`finish` writes them sorted to one file."""

    def __init__(self, tmpdir: Path):
        self._tmpdir = tmpdir
        self._buf = array("Q")
        self._runs: list[Path] = []
        self.count = 0

    def add(self, value: int) -> None:
        self._buf.append(value)
        self.count += 1
        if len(self._buf) >= CHUNK:
            self._spill()

    def _spill(self) -> None:
        fd, name = tempfile.mkstemp(dir=self._tmpdir, suffix=".run")
        with os.fdopen(fd, "wb") as f:
            array("Q", sorted(self._buf)).tofile(f)
        self._runs.append(Path(name))
        self._buf = array("Q")

    def finish(self, out: Path) -> int:
        """Write the sorted hashes to ``out``; return how many values were duplicates."""
        if self._buf or not self._runs:
            self._spill()
        duplicates = 0
        previous = None
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "wb") as f:
            block = array("Q")
            for value in heapq.merge(*(iter_file(p) for p in self._runs)):
                if value == previous:
                    duplicates += 1
                    continue
                previous = value
                block.append(value)
                if len(block) >= 8192:
                    block.tofile(f)
                    block = array("Q")
            block.tofile(f)
        for p in self._runs:
            p.unlink()
        self._runs = []
        return duplicates


def iter_file(path: Path) -> Iterator[int]:
    with open(path, "rb") as f:
        while True:
            block = array("Q")
            data = f.read(65536)
            if not data:
                return
            block.frombytes(data)
            yield from block


def difference_counts(a: Iterable[int], b: Iterable[int]) -> tuple[int, int]:
    """``(|a - b|, |b - a|)`` for two sorted, duplicate-free streams."""
    only_a = only_b = 0
    ia, ib = iter(a), iter(b)
    x, y = next(ia, None), next(ib, None)
    while x is not None or y is not None:
        if y is None or (x is not None and x < y):
            only_a += 1
            x = next(ia, None)
        elif x is None or y < x:
            only_b += 1
            y = next(ib, None)
        else:
            x, y = next(ia, None), next(ib, None)
    return only_a, only_b


@dataclass(frozen=True)
class StreamChange:
    added: int
    removed: int
    changed: int


def compare(current_keys: Path, current_full: Path, previous_keys: Path, previous_full: Path) -> StreamChange:
    added, removed = difference_counts(iter_file(current_keys), iter_file(previous_keys))
    new_full, _ = difference_counts(iter_file(current_full), iter_file(previous_full))
    return StreamChange(added=added, removed=removed, changed=new_full - added)


def record_hashes(line: bytes) -> tuple[int, int]:
    """Hashes of one record line as written: (key hash, key + content hash)."""
    # the canonical line starts {"key":"…","record":…}; the key is what identifies the record
    key_end = line.index(b',"record":')
    return h64(line[:key_end]), h64(line)


def build_from_records(records_gz: Path, out_keys: Path, out_full: Path, tmpdir: Path) -> None:
    keys, full = SortedHashBuilder(tmpdir), SortedHashBuilder(tmpdir)
    if records_gz.exists():
        with gzip.open(records_gz, "rb") as f:
            for line in f:
                k, c = record_hashes(line.rstrip(b"\n"))
                keys.add(k)
                full.add(c)
    keys.finish(out_keys)
    full.finish(out_full)

"""Sorted sets of 64-bit record hashes, built and compared on disk in bounded memory.

A bag's records are summarised per stream as two sorted hash files: the hashes of the record
keys, and the hashes of key + content. Comparing two bags' files by a streaming merge gives the
added, removed and changed counts for ``summary.html`` without holding either bag in memory.
The files are a cache in ``.state/keys/`` (rebuilt from the bag's records when missing).
"""

from __future__ import annotations

import bisect
import functools
import gzip
import hashlib
import itertools
import operator
import os
import sys
import tempfile
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

CHUNK = 262_144  # hashes sorted in memory at a time (2 MiB)


def h64(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


_blake2b_64 = functools.partial(hashlib.blake2b, digest_size=8)
_digest = operator.methodcaller("digest")
_NATIVE_LITTLE = sys.byteorder == "little" and array("Q").itemsize == 8


def h64_many(items: Iterable[bytes]) -> array:
    """``array("Q", map(h64, items))``, without a Python call per item.

    The 8-byte digests are joined and read as native unsigned 64-bit integers, which on a
    little-endian machine is exactly ``int.from_bytes(digest, "little")``.
    """
    if _NATIVE_LITTLE:
        out = array("Q")
        out.frombytes(b"".join(map(_digest, map(_blake2b_64, items))))
        return out
    return array("Q", map(h64, items))  # pragma: no cover - big-endian machines


#: Values read from each run at a time when merging (at least; see SortedHashBuilder.finish).
MIN_BLOCK = 4096
#: :meth:`SortedHashBuilder.extend` sorts its buffer this many values at a time, so that sorting
#: a full buffer is merging sorted pieces (cheap), and little is left to sort when it finishes.
PRESORT = 32_768


class SortedHashBuilder:
    """Collect hashes in any order; :meth:`finish` writes them sorted to one file."""

    def __init__(self, tmpdir: Path):
        self._tmpdir = tmpdir
        self._buf = array("Q")
        self._sorted = 0  # self._buf[:self._sorted] is made of sorted pieces (see extend)
        self._runs: list[Path] = []
        self.count = 0

    def add(self, value: int) -> None:
        self._buf.append(value)
        self.count += 1
        if len(self._buf) >= CHUNK:
            self._spill()

    def extend(self, values: array) -> None:
        """:meth:`add` each of ``values`` (an ``array("Q")``): runs may end up a few values
        longer than :data:`CHUNK`, which changes nothing in the file :meth:`finish` writes."""
        buf = self._buf
        buf.extend(values)
        self.count += len(values)
        if len(buf) >= CHUNK:
            self._spill()
        elif len(buf) - self._sorted >= PRESORT:
            buf[self._sorted :] = array("Q", sorted(buf[self._sorted :]))
            self._sorted = len(buf)

    def _spill(self) -> None:
        fd, name = tempfile.mkstemp(dir=self._tmpdir, suffix=".run")
        with os.fdopen(fd, "wb") as f:
            array("Q", sorted(self._buf)).tofile(f)
        self._runs.append(Path(name))
        self._buf = array("Q")
        self._sorted = 0

    def finish(self, out: Path) -> int:
        """Write the sorted hashes to ``out``; return how many values were duplicates.

        The runs are merged a slice of values at a time: each run gives its values up to the
        smallest of the runs' current block ends, so a slice holds every copy of each of its
        values and the slices follow each other in order. A slice is merged by ``sorted`` (which
        merges sorted runs in C) and checked for equal neighbours likewise (and against the last
        value written: copies of a run's block end may start its next block), so memory stays
        bounded (about :data:`CHUNK` values) and there is no Python step per value.
        """
        if self._buf or not self._runs:
            self._spill()
        duplicates = 0
        previous = None
        out.parent.mkdir(parents=True, exist_ok=True)
        runs = [_RunReader(p, max(MIN_BLOCK, CHUNK // 2 // len(self._runs))) for p in self._runs]
        try:
            with open(out, "wb") as f:
                live = [r for r in runs if r.block]
                while live:
                    if len(live) == 1:
                        values = live[0].take_all().tolist()
                    else:
                        high = min(r.block[-1] for r in live)
                        merged = array("Q")
                        for r in live:
                            merged.extend(r.take_to(high))
                        values = sorted(merged)
                    repeats = sum(map(operator.eq, values, itertools.islice(values, 1, None)))
                    if repeats:
                        duplicates += repeats
                        values = list(dict.fromkeys(values))  # sorted already: keeps the order
                    if values and values[0] == previous:  # a run's copies may straddle its blocks
                        duplicates += 1
                        del values[0]
                    if values:
                        previous = values[-1]
                        array("Q", values).tofile(f)
                    live = [r for r in live if r.block]
        finally:
            for r in runs:
                r.close()
        for p in self._runs:
            p.unlink()
        self._runs = []
        return duplicates


class _RunReader:
    """A sorted run file read a block at a time and taken by value (:meth:`take_to`)."""

    def __init__(self, path: Path, block_values: int):
        self._f = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._size = block_values * 8
        self._pos = 0
        self.block = array("Q")
        self._next()

    def _next(self) -> None:
        self.block = array("Q")
        self._pos = 0
        data = self._f.read(self._size)
        if data:
            self.block.frombytes(data)

    def take_to(self, high: int) -> array:
        """The values not taken yet, up to ``high``, from the current block (then the next one)."""
        block, pos = self.block, self._pos
        end = bisect.bisect_right(block, high, pos)
        taken = block[pos:end]
        self._pos = end
        if end == len(block):
            self._next()
        return taken

    def take_all(self) -> array:
        """The values not taken yet of the current block (then the next one)."""
        taken = self.block[self._pos :]
        self._next()
        return taken

    def close(self) -> None:
        self._f.close()


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


def file_difference_counts(path_a: Path, path_b: Path, block_values: int = 65536) -> tuple[int, int]:
    """:func:`difference_counts` of two hash files as :meth:`SortedHashBuilder.finish` writes them.

    The values both hold are counted a slice at a time (see :meth:`SortedHashBuilder.finish`):
    a slice equal in both (nothing changed there) is compared as a whole, in C.
    """
    a, b = _RunReader(path_a, block_values), _RunReader(path_b, block_values)
    size_a = size_b = common = 0
    try:
        while a.block and b.block:
            high = min(a.block[-1], b.block[-1])
            part_a, part_b = a.take_to(high), b.take_to(high)
            size_a += len(part_a)
            size_b += len(part_b)
            if part_a == part_b:
                common += len(part_a)
            else:
                common += len(part_a) - difference_counts(part_a, part_b)[0]
        for reader in (a, b):
            rest = 0
            while reader.block:
                rest += len(reader.take_all())
            if reader is a:
                size_a += rest
            else:
                size_b += rest
    finally:
        a.close()
        b.close()
    return size_a - common, size_b - common


def compare(current_keys: Path, current_full: Path, previous_keys: Path, previous_full: Path) -> StreamChange:
    added, removed = file_difference_counts(current_keys, previous_keys)
    new_full, _ = file_difference_counts(current_full, previous_full)
    return StreamChange(added=added, removed=removed, changed=new_full - added)


def record_hashes(line: bytes) -> tuple[int, int]:
    """Hashes of one record line as written: (key hash, key + content hash)."""
    # the canonical line starts {"key":"…","record":…}; the key is what identifies the record
    key_end = line.index(b',"record":')
    return h64(line[:key_end]), h64(line)


def _key_part(line: bytes) -> bytes:
    return line[: line.index(b',"record":')]


def add_record_lines(lines: list[bytes], keys: SortedHashBuilder, full: SortedHashBuilder) -> None:
    """:func:`record_hashes` of each line (no newline), added to ``keys`` and ``full``."""
    keys.extend(h64_many(map(_key_part, lines)))
    full.extend(h64_many(lines))


def build_from_records(records_gz: Path, out_keys: Path, out_full: Path, tmpdir: Path) -> None:
    keys, full = SortedHashBuilder(tmpdir), SortedHashBuilder(tmpdir)
    if records_gz.exists():
        with gzip.open(records_gz, "rb") as f:
            batch: list[bytes] = []
            for line in f:
                batch.append(line.rstrip(b"\n"))
                if len(batch) >= 4096:
                    add_record_lines(batch, keys, full)
                    batch = []
            add_record_lines(batch, keys, full)
    keys.finish(out_keys)
    full.finish(out_full)

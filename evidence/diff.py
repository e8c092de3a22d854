"""What changed between two bags of the same connector instance, streamed in bounded memory.

:func:`diff_bags` compares the records of two bags stream by stream and yields one
:class:`Change` per record added, removed or changed, with the labels the report needs:

* grants: a grant whose key changed only because its ``raw_role`` did (the key is
  ``resource|principal|via|raw_role[|grant_id]``) is paired up with itself: when exactly one
  grant was removed and one added for the same ``(resource_id, principal_id, via, grant_id)``,
  they are reported as one ``changed`` grant (``key`` the new key, ``old_key`` the old one).
  ``role_changed`` is set on a changed grant whose ``role`` or ``raw_role`` differs.
* principals: ``state_changes`` names which of ``enabled``, ``mfa``, ``admin`` and ``kind``
  (guest state) changed.
* resources: ``became_shared`` when ``shared`` went from False / None / absent to True;
  ``became_public`` when the new bag has a grant on the resource with ``link_scope`` "anyone"
  or ``principal_id`` "anyone" and the old bag had none. A resource whose record did not
  change but which became public is reported as ``changed`` with no ``fields``. A resource
  added by the new bag counts as having been neither shared nor public before.

How, and the memory it takes. Records are not in key order in a bag, so each stream of each
bag is sorted on disk: the record lines (canonical JSON, ``{"key":…,"record":…}``) are read in
chunks of :data:`CHUNK_BYTES`, each chunk sorted as bytes and written to a temporary run file,
and the runs merged with :func:`heapq.merge` (a stream smaller than :data:`IN_MEMORY_BYTES` is
sorted in memory). Sorting whole lines as bytes sorts them by the JSON text of their key (a
JSON string is never a prefix of another), so the two bags are merge-joined by key without
parsing a line; only lines that differ are parsed. The removed and added grants are sorted
again, on disk likewise, by ``(resource_id, principal_id, via, grant_id)`` to pair them. The
resources that became public are found from two sorted sets of 64-bit hashes of resource ids
(:class:`evidence.keyset.SortedHashBuilder`, built while the grants are read), one per bag;
their difference is held in memory, 8 bytes per resource that became public (a hash collision,
odds about n²/2⁶⁴, would hide one). So the memory is about one chunk (plus its list and
bytes-object overhead, ~1.2×) plus a block per run being merged, whatever the number of
records; the temporary files take about the uncompressed size of both bags' records, and are
removed when the iteration ends (or the generator is closed).

Keys must be unique within a stream (the bag writer reports duplicates as a problem): should a
bag hold several records with one key, the one whose line sorts first is used. Lines are taken
to be canonical JSON as :meth:`evidence.model.Record.line` writes them (the key's JSON text
identifies it). The order of the changes is unspecified.
"""

from __future__ import annotations

import bisect
import gzip
import heapq
import itertools
import json
import os
import tempfile
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Mapping

from evidence.keyset import SortedHashBuilder, h64, iter_file
from evidence.model import STREAMS, canonical_json

#: Bytes of record lines sorted in memory at a time before they are written to a run file.
CHUNK_BYTES = 32 << 20
#: A stream with fewer bytes of lines than this is sorted in memory, with no run file.
IN_MEMORY_BYTES = 4 << 20
#: Buffer of each run file read during the merge.
RUN_BUFFER = 1 << 16

PRINCIPAL_STATES = ("enabled", "mfa", "admin", "kind")
GRANT_IDENTITY = ("resource_id", "principal_id", "via", "grant_id")
ChangeKind = Literal["added", "removed", "changed"]

_RECORD_SEP = b',"record":'
_KEY_PREFIX = len(b'{"key":')
_MISSING = object()


@dataclass(frozen=True)
class Change:
    """One record added, removed or changed between two bags (see the module docstring)."""

    stream: str
    kind: ChangeKind
    key: str
    old: dict[str, Any] | None
    new: dict[str, Any] | None
    fields: tuple[str, ...] = ()  # the data fields that differ (changed only), sorted
    old_key: str | None = None  # a grant paired across a key change: its key in the old bag
    role_changed: bool = False
    state_changes: tuple[str, ...] = ()  # principals: which of PRINCIPAL_STATES changed
    became_shared: bool = False
    became_public: bool = False


# ---------------------------------------------------------------------------------------------
# Sorting lines on disk
# ---------------------------------------------------------------------------------------------


class _SortedLines:
    """Lines (bytes ending in ``\\n``) taken in any order; iterating gives them sorted as bytes.

    The input is read (and the runs written) when the object is made; iterate at most once.
    """

    def __init__(self, lines: Iterable[bytes], tmpdir: Path):
        chunk_bytes, in_memory_bytes = CHUNK_BYTES, IN_MEMORY_BYTES  # read now: tests lower them
        self._tmpdir = tmpdir
        self._runs: list[Path] = []
        buf: list[bytes] = []
        size = 0
        for line in lines:
            buf.append(line)
            size += len(line)
            if size >= chunk_bytes:
                self._spill(buf)
                buf, size = [], 0
        if self._runs or size >= min(in_memory_bytes, chunk_bytes):
            if buf:
                self._spill(buf)
            buf = []
        buf.sort()
        self._memory = buf

    def _spill(self, buf: list[bytes]) -> None:
        buf.sort()
        fd, name = tempfile.mkstemp(dir=self._tmpdir, suffix=".run")
        with os.fdopen(fd, "wb", buffering=1 << 20) as f:
            f.writelines(buf)
        self._runs.append(Path(name))
        buf.clear()

    def __iter__(self) -> Iterator[bytes]:
        memory, self._memory = self._memory, []
        runs, self._runs = self._runs, []
        if not runs:
            yield from memory
            return
        files = [open(p, "rb", buffering=RUN_BUFFER) for p in runs]  # noqa: SIM115 - closed below
        try:
            yield from heapq.merge(*files)
        finally:
            for f in files:
                f.close()
            for p in runs:
                p.unlink(missing_ok=True)


def _file_lines(path: Path) -> Iterator[bytes]:
    if not path.exists():
        return
    with gzip.open(path, "rb") as f:
        for line in f:
            yield line if line.endswith(b"\n") else line + b"\n"


def _record_lines(records: Iterable[tuple[str, Mapping[str, Any]]]) -> Iterator[bytes]:
    for key, data in records:
        yield (canonical_json({"key": key, "record": data}) + "\n").encode()


# ---------------------------------------------------------------------------------------------
# The merge-join
# ---------------------------------------------------------------------------------------------


def _keyed(lines: Iterable[bytes]) -> Iterator[tuple[bytes, bytes]]:
    """``(key JSON part, line)`` of sorted lines, the first line of each key only."""
    previous = None
    for line in lines:
        k = line[: line.index(_RECORD_SEP)]
        if k != previous:
            previous = k
            yield k, line


def _join(old: Iterable[bytes], new: Iterable[bytes], equal: bool = False
          ) -> Iterator[tuple[bytes, bytes | None, bytes | None]]:
    """``(key part, old line, new line)`` of two sorted line streams where they differ (with
    ``equal``, also where they do not)."""
    io_, in_ = _keyed(old), _keyed(new)
    a, b = next(io_, None), next(in_, None)
    while a is not None or b is not None:
        if b is None or (a is not None and a[0] < b[0]):
            yield a[0], a[1], None  # type: ignore[index]
            a = next(io_, None)
        elif a is None or b[0] < a[0]:
            yield b[0], None, b[1]
            b = next(in_, None)
        else:
            if equal or a[1] != b[1]:
                yield a[0], a[1], b[1]
            a, b = next(io_, None), next(in_, None)


def _parse(line: bytes) -> tuple[str, dict[str, Any]]:
    obj = json.loads(line)
    return obj["key"], obj["record"]


def changed_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> tuple[str, ...]:
    """The names of the fields whose values differ (as JSON: ``true`` is not ``1``), sorted."""
    out = []
    for name in sorted(old.keys() | new.keys()):
        a, b = old.get(name, _MISSING), new.get(name, _MISSING)
        if a is _MISSING or b is _MISSING or canonical_json(a) != canonical_json(b):
            out.append(name)
    return tuple(out)


def _changed(stream: str, key: str, old: dict[str, Any], new: dict[str, Any], fields: tuple[str, ...],
             old_key: str | None = None) -> Change:
    role = stream == "grants" and ("role" in fields or "raw_role" in fields)
    states = tuple(f for f in PRINCIPAL_STATES if f in fields) if stream == "principals" else ()
    shared = stream == "resources" and old.get("shared") is not True and new.get("shared") is True
    return Change(stream, "changed", key, old, new, fields, old_key=old_key, role_changed=role,
                  state_changes=states, became_shared=shared)


def _is_public_grant(data: Mapping[str, Any]) -> bool:
    return data.get("link_scope") == "anyone" or data.get("principal_id") == "anyone"


def _collect_public(lines: Iterable[bytes], out: SortedHashBuilder) -> Iterator[bytes]:
    """Pass ``lines`` through, adding the hash of each public grant's resource id to ``out``."""
    for line in lines:
        if b'"anyone"' in line:
            data = json.loads(line)["record"]
            resource_id = data.get("resource_id")
            if isinstance(resource_id, str) and _is_public_grant(data):
                out.add(h64(canonical_json(resource_id).encode()))
        yield line


def _hash_difference(path_a: Path, path_b: Path) -> array:
    """The values of sorted hash file ``path_a`` that ``path_b`` lacks, sorted."""
    out = array("Q")
    ib = iter_file(path_b)
    y = next(ib, None)
    for x in iter_file(path_a):
        while y is not None and y < x:
            y = next(ib, None)
        if y != x:
            out.append(x)
    return out


def _contains(values: array, value: int) -> bool:
    i = bisect.bisect_left(values, value)
    return i < len(values) and values[i] == value


# ---------------------------------------------------------------------------------------------
# The diff
# ---------------------------------------------------------------------------------------------

LineSource = Callable[[], Iterable[bytes]]


def _diff_stream(stream: str, old: _SortedLines, new: _SortedLines, public: array,
                 unpaired: _Spool | None) -> Iterator[Change]:
    """The changes of one stream; grants added or removed go to ``unpaired`` (to be paired)."""
    resources = stream == "resources" and bool(public)
    for key_part, a, b in _join(old, new, equal=resources):
        public_now = resources and _contains(public, h64(key_part[_KEY_PREFIX:]))
        if a is None or b is None:
            if unpaired is not None:
                unpaired.append(0 if b is None else 1, a or b)  # type: ignore[arg-type]
                continue
            key, data = _parse(a or b)  # type: ignore[arg-type]
            if a is not None:
                yield Change(stream, "removed", key, data, None)
            else:
                shared = stream == "resources" and data.get("shared") is True
                yield Change(stream, "added", key, None, data, became_shared=shared, became_public=public_now)
            continue
        if a == b:  # only asked for (resources that may have become public)
            if public_now:
                key, data = _parse(a)
                yield Change(stream, "changed", key, data, _parse(b)[1], became_public=True)
            continue
        key, old_data = _parse(a)
        _, new_data = _parse(b)
        fields = changed_fields(old_data, new_data)
        if fields:
            change = _changed(stream, key, old_data, new_data, fields)
            yield _with_public(change) if public_now else change
        elif public_now:
            yield Change(stream, "changed", key, old_data, new_data, became_public=True)


def _with_public(change: Change) -> Change:
    return Change(**{**change.__dict__, "became_public": True})


def _pair_grants(unpaired: Iterable[tuple[int, bytes]], tmpdir: Path) -> Iterator[Change]:
    """Removed (side 0) and added (side 1) grant lines, paired up by grant identity.

    Each is sorted on disk as ``identity JSON, tab, [side, key, data] JSON``: canonical JSON has
    no raw tab (nor newline), and a JSON list is never a prefix of another, so the lines of one
    identity are contiguous, the removed one first.
    """

    def lines() -> Iterator[bytes]:
        for side, line in unpaired:
            key, data = _parse(line)
            identity = canonical_json([data.get(f) or "" for f in GRANT_IDENTITY])
            yield f"{identity}\t{canonical_json([side, key, data])}\n".encode()

    for _, group in itertools.groupby(_SortedLines(lines(), tmpdir), key=lambda line: line[: line.index(b"\t")]):
        items = [json.loads(line[line.index(b"\t") + 1 :]) for line in group]
        if [side for side, _, _ in items] == [0, 1]:
            (_, old_key, old_data), (_, key, new_data) = items
            yield _changed("grants", key, old_data, new_data, changed_fields(old_data, new_data), old_key=old_key)
        else:
            for side, key, data in items:
                if side:
                    yield Change("grants", "added", key, None, data)
                else:
                    yield Change("grants", "removed", key, data, None)


def _diff(old: Mapping[str, LineSource], new: Mapping[str, LineSource], workdir: Path | None) -> Iterator[Change]:
    empty: LineSource = lambda: ()  # noqa: E731
    with tempfile.TemporaryDirectory(dir=workdir, prefix="shoseki-diff-") as tmp:
        tmpdir = Path(tmp)
        pub_old, pub_new = SortedHashBuilder(tmpdir), SortedHashBuilder(tmpdir)
        grants_old = _SortedLines(_collect_public(old.get("grants", empty)(), pub_old), tmpdir)
        grants_new = _SortedLines(_collect_public(new.get("grants", empty)(), pub_new), tmpdir)
        pub_old.finish(tmpdir / "public.old")
        pub_new.finish(tmpdir / "public.new")
        public = _hash_difference(tmpdir / "public.new", tmpdir / "public.old")
        for stream in ("principals", "memberships", "resources"):
            if stream not in old and stream not in new:
                continue
            sorted_old = _SortedLines(old.get(stream, empty)(), tmpdir)
            sorted_new = _SortedLines(new.get(stream, empty)(), tmpdir)
            yield from _diff_stream(stream, sorted_old, sorted_new, public, None)
        if "grants" in old or "grants" in new:
            unpaired = _Spool(tmpdir)
            yield from _diff_stream("grants", grants_old, grants_new, public, unpaired)
            yield from _pair_grants(unpaired.read(), tmpdir)


class _Spool:
    """An append-only list of ``(side, line)`` kept in a temporary file (``append``, then ``read``)."""

    def __init__(self, tmpdir: Path):
        fd, name = tempfile.mkstemp(dir=tmpdir, suffix=".spool")
        self._path = Path(name)
        self._f = os.fdopen(fd, "wb", buffering=1 << 20)

    def append(self, side: int, line: bytes) -> None:
        self._f.write(b"01"[side : side + 1] + line)

    def read(self) -> Iterator[tuple[int, bytes]]:
        self._f.close()
        try:
            with open(self._path, "rb", buffering=RUN_BUFFER) as f:
                for line in f:
                    yield line[0] - 0x30, line[1:]
        finally:
            self._path.unlink(missing_ok=True)


def diff_bags(old: Path, new: Path, *, workdir: Path | None = None) -> Iterator[Change]:
    """The changes from bag ``old`` to bag ``new`` (directories holding ``data/records/``).

    A stream whose ``data/records/<stream>.jsonl.gz`` is missing counts as empty. Temporary
    files go to a new folder under ``workdir`` (default: the system's temporary folder).
    """
    def source(bag: Path, stream: str) -> LineSource:
        return lambda: _file_lines(Path(bag) / "data" / "records" / f"{stream}.jsonl.gz")

    yield from _diff({s: source(old, s) for s in STREAMS}, {s: source(new, s) for s in STREAMS}, workdir)


def diff_snapshots(old: Mapping[str, Iterable[tuple[str, Mapping[str, Any]]]],
                   new: Mapping[str, Iterable[tuple[str, Mapping[str, Any]]]], *,
                   workdir: Path | None = None) -> Iterator[Change]:
    """:func:`diff_bags` of two snapshots given as ``{stream: [(key, data), …]}``.

    Each iterable is read once.
    """
    for name in (*old, *new):
        if name not in STREAMS:
            raise ValueError(f"unknown stream {name!r}")

    def source(records: Iterable[tuple[str, Mapping[str, Any]]]) -> LineSource:
        return lambda: _record_lines(records)

    yield from _diff({s: source(r) for s, r in old.items()}, {s: source(r) for s, r in new.items()}, workdir)


def diff_records(old: Iterable[tuple[str, Mapping[str, Any]]], new: Iterable[tuple[str, Mapping[str, Any]]], *,
                 stream: str = "grants", workdir: Path | None = None) -> Iterator[Change]:
    """The changes between two iterables of ``(key, data)`` of one ``stream``, in any order."""
    yield from diff_snapshots({stream: old}, {stream: new}, workdir=workdir)

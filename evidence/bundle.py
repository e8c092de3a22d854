"""The bundle writer: streams one run into a BagIt bag under ``.partial/`` and seals it.

Records and raw pages are written as they arrive (gzip JSONL, hashed while written; CSV tables
beside them), so memory does not grow with the tenant. This process formats each record (its
JSONL line and CSV row, made together); a helper process started per bag compresses, hashes and
writes the bytes, and keeps the record hashes (:mod:`evidence.keyset`), on the other core (see
``_ProcessSink``; ``WRITER_PROCESS = False`` does it all here, byte for byte the same).
:meth:`BundleWriter.seal` then writes,
in order: run.json, README.txt, summary.html, the payload manifest, bagit.txt, bag-info.txt,
the tag manifest and its signature (these last steps are :func:`seal_bag`, which seals report
bags too); then one atomic rename moves the bag into the dated tree and one line is appended
to the ledger. A crash before the rename leaves only ``.partial/``;
a crash between the rename and the ledger line is finished at the next start
(:func:`finish_interrupted_seals`), using the ``.sealing`` note written before the rename.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import threading
import weakref
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from evidence import keyset, ledger
from evidence.model import STREAMS, RawPage, Record, canonical_json, utc_iso
from evidence.tables import TableWriter, line_and_row_function
from evidence.vault import DIR_MODE, FILE_MODE, Vault, bag_name, fsync_dir, makedirs

BAGIT_TXT = "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
COMPRESSLEVEL = 5
STATUSES = ("complete", "partial", "failed")


def collector_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("shoseki")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "0+unknown"


#: Lines of a ``*.jsonl.gz`` compressed together (one ``GzipFile.write``), as they always were.
LINES_PER_CHUNK = 512
#: Whether bags are compressed, hashed and written by a helper process (see :class:`_ProcessSink`).
WRITER_PROCESS = True


class _HashingFile:
    """A binary file that hashes and counts what is written through it."""

    def __init__(self, path: Path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        self._f = os.fdopen(fd, "wb", buffering=1 << 18)
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self._f.write(data)

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()


class _GzFile:
    """A gzip file with a fixed header (mtime 0, no name), so equal content gives equal bytes."""

    def __init__(self, path: Path):
        self.raw = _HashingFile(path)
        self.gz = gzip.GzipFile(filename="", mode="wb", fileobj=self.raw, compresslevel=COMPRESSLEVEL, mtime=0)

    def write(self, data: bytes) -> None:
        self.gz.write(data)

    def close(self) -> None:
        self.gz.close()
        self.raw.close()


class _LocalSink:
    """Where the bytes of a bag go: files created, compressed, hashed and written, in this process.

    Files are numbered in the order they are opened. ``records`` files are gzip JSONL whose
    lines also go into the two sorted hash sets of the stream (:mod:`evidence.keyset`): the
    hashes are taken from the lines themselves, exactly as :func:`keyset.build_from_records`
    takes them from a bag. :meth:`finish` closes everything and reports each file's SHA-256 and
    size, and each record file's number of duplicate keys.
    """

    def __init__(self) -> None:
        self._files: list[_HashingFile | _GzFile] = []
        self._hashes: dict[int, tuple[keyset.SortedHashBuilder, keyset.SortedHashBuilder]] = {}

    def open(self, kind: str, path: str, tmpdir: str | None = None) -> int:
        fid = len(self._files)
        if kind == "plain":
            self._files.append(_HashingFile(Path(path)))
        else:
            self._files.append(_GzFile(Path(path)))
            if kind == "records":
                assert tmpdir is not None
                tmp = Path(tmpdir)
                self._hashes[fid] = (keyset.SortedHashBuilder(tmp), keyset.SortedHashBuilder(tmp))
        return fid

    def write(self, fid: int, data: bytes) -> None:
        """Append ``data``; to a records file, whole lines, each ending with a newline."""
        self._files[fid].write(data)
        hashes = self._hashes.get(fid)
        if hashes is not None:
            keyset.add_record_lines(data.split(b"\n")[:-1], *hashes)

    def finish(self, hash_files: dict[int, tuple[str, str]]) -> tuple[dict[int, tuple[str, int]], dict[int, int]]:
        """Close every file, write each records file's hash sets to ``hash_files[fid]``."""
        digests: dict[int, tuple[str, int]] = {}
        for fid, f in enumerate(self._files):
            f.close()
            raw = f.raw if isinstance(f, _GzFile) else f
            digests[fid] = (raw.sha256.hexdigest(), raw.size)
        duplicates = {}
        for fid, (keys, full) in self._hashes.items():
            keys_out, full_out = hash_files[fid]
            duplicates[fid] = keys.finish(Path(keys_out))
            full.finish(Path(full_out))
        return digests, duplicates

    def abandon(self) -> None:
        pass


# -- the writer process -------------------------------------------------------------------------
# Formatting records is Python work that holds the GIL; compressing, hashing and writing them is
# mostly not, but a thread doing it would have to take the GIL back after every zlib / hashlib /
# write call, while the main thread (walking a file tree: a system call every few microseconds)
# gives it up and takes it back all the time: measured, the hand-overs cost more than the thread
# saves. A helper process has no GIL to share: the main process sends it the bytes (a pipe
# write is a memcpy) and it does everything a _LocalSink does, on the other core.

_HEADER = struct.Struct("<BIQ")  # operation, file number, payload length
_OP_OPEN, _OP_WRITE, _OP_FINISH = 1, 2, 3
_F_SETPIPE_SZ = 1031  # Linux: a 1 MiB pipe takes several chunks before the main process waits


class WriterProcessError(RuntimeError):
    """The helper process failed (its error, or how it ended, is the message)."""


def _error_from(report: dict[str, Any] | None, returncode: int | None) -> BaseException:
    if not report:
        return WriterProcessError(f"the bag writer process ended unexpectedly (exit code {returncode})")
    if report.get("errno") is not None:
        return OSError(report["errno"], report["strerror"], report.get("filename"))
    return WriterProcessError(f"{report['type']}: {report['message']}")


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:
                pass


class _ProcessSink:
    """A :class:`_LocalSink` in a helper process (``_sink_process``), fed through a pipe.

    Each call is sent at once and done by the helper in order; a file is created when the helper
    gets to it. The helper's first error is raised here by the next call that finds it gone, or
    by :meth:`finish`, which waits for it to close every file and end.
    """

    def __init__(self) -> None:
        package_root = str(Path(__file__).resolve().parent.parent)
        code = f"import sys; sys.path.insert(0, {package_root!r}); import evidence.bundle as b; b._sink_process()"
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-c", code],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=1 << 16,
            start_new_session=True,  # no Ctrl-C from the terminal: it ends when its input does
        )
        # a writer dropped without seal() or discard() must not leave the process behind
        self._finalizer = weakref.finalize(self, _kill, self._proc)
        try:
            fcntl.fcntl(self._proc.stdin.fileno(), _F_SETPIPE_SZ, 1 << 20)
        except OSError:  # pragma: no cover - not Linux, or a lower pipe-max-size
            pass
        self._files = 0
        self._closed = False
        self._error: BaseException | None = None

    def _send(self, op: int, fid: int, payload: bytes) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise WriterProcessError("the bag writer process has finished")
        stdin = self._proc.stdin
        try:
            stdin.write(_HEADER.pack(op, fid, len(payload)))
            stdin.write(payload)
        except (BrokenPipeError, ValueError):
            raise self._failure() from None

    def _failure(self) -> BaseException:
        """The helper's error, once it has ended (raised again by every later call)."""
        self._closed = True
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        out = self._proc.stdout.read()
        returncode = self._proc.wait()
        self._finalizer()
        try:
            report = json.loads(out).get("error")
        except (ValueError, AttributeError):
            report = None
        self._error = _error_from(report, returncode)
        return self._error

    def open(self, kind: str, path: str, tmpdir: str | None = None) -> int:
        fid = self._files
        self._files += 1
        self._send(_OP_OPEN, fid, json.dumps([kind, path, tmpdir]).encode())
        return fid

    def write(self, fid: int, data: bytes) -> None:
        self._send(_OP_WRITE, fid, data)

    def finish(self, hash_files: dict[int, tuple[str, str]]) -> tuple[dict[int, tuple[str, int]], dict[int, int]]:
        self._send(_OP_FINISH, 0, json.dumps(hash_files).encode())
        try:
            self._proc.stdin.close()
        except BrokenPipeError:
            pass
        self._closed = True
        out = self._proc.stdout.read()
        returncode = self._proc.wait()
        self._finalizer()
        try:
            reply = json.loads(out)
        except ValueError:
            reply = {}
        if returncode != 0 or "digests" not in reply:
            self._error = _error_from(reply.get("error"), returncode)
            raise self._error
        digests = {int(k): (v[0], v[1]) for k, v in reply["digests"].items()}
        return digests, {int(k): v for k, v in reply["duplicates"].items()}

    def abandon(self) -> None:
        """Stop the helper without finishing (the bag is being thrown away)."""
        self._closed = True
        self._finalizer()


def _sink_process() -> None:
    """The helper's main loop: calls from the pipe (stdin) to a :class:`_LocalSink`, results to stdout."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # belt and braces: it has a session of its own
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    sink = _LocalSink()
    try:
        while True:
            header = stdin.read(_HEADER.size)
            if len(header) < _HEADER.size:  # the main process is gone: leave the bag as it is
                os._exit(1)
            op, fid, size = _HEADER.unpack(header)
            payload = stdin.read(size)
            if len(payload) < size:
                os._exit(1)
            if op == _OP_WRITE:
                sink.write(fid, payload)
            elif op == _OP_OPEN:
                kind, path, tmpdir = json.loads(payload)
                if sink.open(kind, path, tmpdir) != fid:
                    raise WriterProcessError("file numbers out of step")
            elif op == _OP_FINISH:
                hash_files = {int(k): tuple(v) for k, v in json.loads(payload).items()}
                digests, duplicates = sink.finish(hash_files)
                stdout.write(json.dumps({"digests": digests, "duplicates": duplicates}).encode())
                stdout.flush()
                return
            else:
                raise WriterProcessError(f"unknown operation {op}")
    except BaseException as exc:  # noqa: BLE001 - reported to the main process, which raises it
        error = {"type": type(exc).__name__, "message": str(exc)}
        if isinstance(exc, OSError) and exc.errno is not None:
            error.update(errno=exc.errno, strerror=exc.strerror, filename=exc.filename)
        stdout.write(json.dumps({"error": error}).encode())
        stdout.flush()
        sys.exit(1)


def _new_sink() -> _LocalSink | _ProcessSink:
    if WRITER_PROCESS and sys.executable and not getattr(sys, "frozen", False):
        try:
            return _ProcessSink()
        except OSError:  # pragma: no cover - cannot start a process here: do the work ourselves
            pass
    return _LocalSink()


class _SinkFile:
    """A file of the sink, as the table writer sees it (``write``; ``close`` waits for the finish)."""

    def __init__(self, sink: _LocalSink | _ProcessSink, fid: int):
        self._sink = sink
        self._fid = fid

    def write(self, data: bytes) -> None:
        self._sink.write(self._fid, data)

    def close(self) -> None:
        pass


class _LineFile:
    """One ``*.jsonl.gz`` of the bag on the main side: lines gathered, sent a chunk at a time."""

    __slots__ = ("fid", "lines", "rel")

    def __init__(self, fid: int, rel: str):
        self.fid = fid
        self.rel = rel
        self.lines: list[bytes] = []

    def flush(self, sink: _LocalSink | _ProcessSink) -> None:
        if self.lines:
            self.lines.append(b"")
            sink.write(self.fid, b"\n".join(self.lines))
            self.lines = []


class _RecordFile(_LineFile):
    """``records/<stream>.jsonl.gz``, with what the writer needs of its stream at hand."""

    __slots__ = ("count", "format", "table")

    def __init__(self, fid: int, rel: str, format: Any, table: Any):
        super().__init__(fid, rel)
        self.format = format  # line_and_row_function(stream, tz)
        self.table = table  # the stream's table (TableWriter.table)
        self.count = 0


@dataclass(frozen=True)
class SealedBag:
    path: Path
    relpath: str
    digest: str
    status: str
    run_id: str
    connector_id: str
    counts: dict[str, int]
    ledger_seq: int


@dataclass(frozen=True)
class PreviousBag:
    path: Path
    digest: str
    run_id: str


def _endpoint_file(endpoint: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", endpoint).strip("_") or "endpoint"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def write_text_file(path: Path, text: str, *, bom: bool) -> None:
    data = (("\ufeff" if bom else "") + text).encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


class BundleWriter:
    """One run's bag in the making. ``write``/``write_raw`` stream; ``seal`` finishes it."""

    def __init__(
        self,
        vault: Vault,
        *,
        run_id: str,
        connector_id: str,
        connector_type: str,
        started: datetime,
        tz: ZoneInfo,
        organization: str,
        previous: PreviousBag | None,
    ):
        self.vault = vault
        self.run_id = run_id
        self.connector_id = connector_id
        self.connector_type = connector_type
        self.started = started.astimezone(timezone.utc)
        self.tz = tz
        self.organization = organization
        self.previous = previous
        self.dir = vault.partial / run_id
        self.data = self.dir / "data"
        for d in (self.dir, self.data, self.data / "records", self.data / "raw", self.data / "tables"):
            d.mkdir(mode=0o750)
        self.keys_dir = vault.state / "keys" / run_id
        makedirs(self.keys_dir)
        self._sink = _new_sink()
        self._records: dict[str, _RecordFile] = {}
        self._raw: dict[str, _LineFile] = {}
        self._raw_pages: dict[str, int] = Counter()
        self._lock = threading.Lock()
        self._tables: list[tuple[int, str]] = []
        self.tables = TableWriter(self.data / "tables", tz, opener=self._open_table)
        self.sealed: SealedBag | None = None

    @property
    def counts(self) -> Counter[str]:
        """Records written so far, per stream."""
        return Counter({s: out.count for s, out in self._records.items() if out.count})

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.dir).as_posix()

    def _open_table(self, path: Path) -> _SinkFile:
        """Tables go through the sink too: hashed as they are written, never read again."""
        fid = self._sink.open("plain", str(path))
        self._tables.append((fid, self._rel(path)))
        return _SinkFile(self._sink, fid)

    def _record_file(self, stream: str) -> _RecordFile:
        if stream not in STREAMS:
            raise ValueError(f"unknown stream {stream!r}")
        path = self.data / "records" / f"{stream}.jsonl.gz"
        fid = self._sink.open("records", str(path), str(self.keys_dir))
        out = _RecordFile(fid, self._rel(path), line_and_row_function(stream, self.tz), self.tables.table(stream))
        self._records[stream] = out
        return out

    # -- streaming ------------------------------------------------------------------------
    def write(self, record: Record) -> None:
        with self._lock:  # one pipe to the writer helper: a raw page from a worker thread must not interleave
            self._write(record)

    def _write(self, record: Record) -> None:
        out = self._records.get(record.stream)
        if out is None:
            out = self._record_file(record.stream)
        key, data = record.key, record.data
        # the JSONL line and the CSV row made together; anything unusual takes the general path
        # (Record.line() and TableWriter.write), which makes the same text
        made = out.format(key, data) if type(key) is str and type(data) is dict else None
        lines = out.lines
        if made is None:
            lines.append(record.line().encode())
            if len(lines) >= LINES_PER_CHUNK:
                out.flush(self._sink)
            self.tables.write(record)
        else:
            lines.append(made[0].encode())
            if len(lines) >= LINES_PER_CHUNK:
                out.flush(self._sink)
            out.table.add(made[1])
        out.count += 1

    def write_raw(self, page: RawPage) -> None:
        """One API page; may be called from any thread (connectors' client pools do)."""
        line = page.line().encode()
        with self._lock:
            self._write_raw(page.endpoint, line)

    def _write_raw(self, endpoint: str, line: bytes) -> None:
        name = _endpoint_file(endpoint)
        out = self._raw.get(name)
        if out is None:
            path = self.data / "raw" / f"{name}.jsonl.gz"
            out = self._raw[name] = _LineFile(self._sink.open("gzip", str(path)), self._rel(path))
        out.lines.append(line)
        if len(out.lines) >= LINES_PER_CHUNK:
            out.flush(self._sink)
        self._raw_pages[endpoint] += 1

    # -- sealing --------------------------------------------------------------------------
    def _close_streams(self) -> tuple[dict[str, tuple[str, int]], list[str]]:
        """Close every stream; return the digests known from writing, and contract problems."""
        for stream in STREAMS:  # every stream has a file, even an empty one
            if stream not in self._records:
                self._record_file(stream)
        for out in [*self._records.values(), *self._raw.values()]:
            out.flush(self._sink)
        self.tables.close()
        hash_files = {
            self._records[s].fid: (str(self.keys_dir / f"{s}.keys"), str(self.keys_dir / f"{s}.full")) for s in STREAMS
        }
        digests, duplicates = self._sink.finish(hash_files)
        known = {out.rel: digests[out.fid] for out in [*self._records.values(), *self._raw.values()]}
        known.update((rel, digests[fid]) for fid, rel in self._tables)
        problems = []
        for stream in STREAMS:
            dup = duplicates[self._records[stream].fid]
            if dup:
                problems.append(f"{stream}: {dup} records share a key with another record")
        return known, problems

    def _changes(self) -> dict[str, dict[str, int]] | None:
        if self.previous is None:
            return None
        prev_keys = self.vault.state / "keys" / self.previous.run_id
        out = {}
        for stream in STREAMS:
            pk, pf = prev_keys / f"{stream}.keys", prev_keys / f"{stream}.full"
            if not (pk.exists() and pf.exists()):
                if not self.previous.path.is_dir():
                    return None
                makedirs(prev_keys)
                keyset.build_from_records(
                    self.previous.path / "data" / "records" / f"{stream}.jsonl.gz", pk, pf, prev_keys
                )
            change = keyset.compare(
                self.keys_dir / f"{stream}.keys", self.keys_dir / f"{stream}.full", pk, pf
            )
            out[stream] = {"added": change.added, "removed": change.removed, "changed": change.changed}
        return out

    def seal(
        self,
        *,
        status: str,
        reasons: list[str],
        finished: datetime,
        run_info: dict[str, Any],
        signing_key: Any = None,
    ) -> SealedBag:
        """Finish the bag, move it into the dated tree and append it to the ledger.

        ``run_info`` is merged into run.json (the runner's completeness record). The caller
        holds the connector's lock; this takes the ledger lock for the rename and the append.
        """
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        known, problems = self._close_streams()
        if problems and status == "complete":
            status = "partial"
        reasons = reasons + problems
        changes = self._changes()
        finished = finished.astimezone(timezone.utc)
        started_local = self.started.astimezone(self.tz)
        run = {
            "format": "shoseki-run/1",
            "run_id": self.run_id,
            "connector_id": self.connector_id,
            "connector_type": self.connector_type,
            "collector_version": collector_version(),
            "organization": self.organization,
            "status": status,
            "reasons": reasons,
            "started_utc": utc_iso(self.started),
            "finished_utc": utc_iso(finished),
            "duration_s": round((finished - self.started).total_seconds(), 3),
            "counts": {s: self.counts.get(s, 0) for s in STREAMS},
            "raw_pages": dict(sorted(self._raw_pages.items())),
            "previous_bag": (
                {"path": self.vault.relative(self.previous.path), "tagmanifest_sha256": self.previous.digest}
                if self.previous and self.previous.path.exists()
                else ({"tagmanifest_sha256": self.previous.digest} if self.previous else None)
            ),
            "changes_since_previous": changes,
            **run_info,
        }
        write_text_file(self.data / "run.json", json.dumps(run, ensure_ascii=False, indent=2, sort_keys=True) + "\n", bom=False)
        name = bag_name(started_local, self.connector_id, self.run_id)
        rel_target = f"{started_local.strftime('%Y')}/{started_local.strftime('%Y-%m')}/{name}"
        public_key_rel = os.path.relpath(self.vault.public_key, self.vault.root / rel_target)
        context = {
            "run": run, "bag_name": name, "tz": str(self.tz),
            "started_local": started_local.strftime("%Y-%m-%d %H:%M:%S %z"),
            "finished_local": finished.astimezone(self.tz).strftime("%Y-%m-%d %H:%M:%S %z"),
            "signed": signing_key is not None, "public_key_rel": public_key_rel,
            "streams": STREAMS,
        }
        # imported here, so that the writer process (which imports this module) does without jinja2
        from evidence.render import render_readme, render_summary

        write_text_file(self.data / "README.txt", render_readme(context), bom=True)
        write_text_file(self.data / "summary.html", render_summary(context), bom=False)

        self.sealed = seal_bag(
            self.vault, self.dir, rel_target, run_id=self.run_id, connector_id=self.connector_id,
            connector_type=self.connector_type, status=status, organization=self.organization,
            sealed=finished, tz=self.tz,
            info=[
                ("Collected-From-UTC", utc_iso(self.started)),
                ("Collected-To-UTC", utc_iso(finished)),
                ("Previous-Bag-Digest", f"sha256:{self.previous.digest}" if self.previous else "none"),
            ],
            counts={s: self.counts.get(s, 0) for s in STREAMS}, signing_key=signing_key, known=known,
        )
        if self.previous is not None:
            # only the newest bag's hashes are compared next time; older ones would pile up
            # (16 bytes a record a run) in .state/keys. Missing ones are rebuilt from records.
            shutil.rmtree(self.vault.state / "keys" / self.previous.run_id, ignore_errors=True)
        return self.sealed

    def discard(self) -> None:
        """Remove a bag that was never sealed (used only when the run could not start)."""
        self._sink.abandon()
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.keys_dir, ignore_errors=True)


def _payload_manifest(bag_dir: Path, known: dict[str, tuple[str, int]]) -> tuple[list[tuple[str, str]], int, int]:
    """``(digest, path)`` of every payload file, sorted, and the Payload-Oxum's octets and files.

    Digests known from streaming are taken as they are; the other files are hashed now. Modes
    are set on the way (files written by other code, the tables, too)."""
    manifest: list[tuple[str, str]] = []
    octets = files = 0
    for path in sorted((bag_dir / "data").rglob("*")):
        if path.is_dir():
            os.chmod(path, DIR_MODE)
            continue
        os.chmod(path, FILE_MODE)
        rel = path.relative_to(bag_dir).as_posix()
        digest, size = known.get(rel) or (sha256_file(path), path.stat().st_size)
        manifest.append((digest, rel))
        octets += size
        files += 1
    return manifest, octets, files


def seal_bag(
    vault: Vault,
    bag_dir: Path,
    rel_target: str,
    *,
    run_id: str,
    connector_id: str,
    connector_type: str,
    status: str,
    organization: str,
    sealed: datetime,
    tz: ZoneInfo,
    info: list[tuple[str, str]],
    counts: dict[str, int],
    signing_key: Any = None,
    known: dict[str, tuple[str, int]] | None = None,
) -> SealedBag:
    """Seal the finished payload of ``bag_dir`` (under ``vault.partial``) as a BagIt bag.

    Writes the payload manifest, bagit.txt, bag-info.txt (the common tags, then ``info`` in
    order; a tag may repeat), the tag manifest and, with a key, its minisign signature; then
    moves the bag to ``rel_target`` and appends its ledger line (under the ledger lock). Both
    collection bags (:meth:`BundleWriter.seal`) and report bags are sealed here, so they chain
    and verify alike. ``known``: payload digests and sizes already taken while writing.
    """
    sealed = sealed.astimezone(timezone.utc)
    manifest, octets, files = _payload_manifest(bag_dir, known or {})
    write_text_file(bag_dir / "manifest-sha256.txt", "".join(f"{d}  {p}\n" for d, p in manifest), bom=False)
    write_text_file(bag_dir / "bagit.txt", BAGIT_TXT, bom=False)
    tags = [
        ("Source-Organization", organization),
        ("Bagging-Date", sealed.astimezone(tz).strftime("%Y-%m-%d")),
        ("External-Identifier", run_id),
        ("Payload-Oxum", f"{octets}.{files}"),
        ("Bag-Software-Agent", f"shoseki {collector_version()}"),
        ("Collector-Version", collector_version()),
        ("Connector-Type", connector_type),
        ("Connector-Id", connector_id),
        ("Collection-Status", status),
        *info,
    ]
    if signing_key is not None:
        tags.append(("Signing-Key-Id", signing_key.key_id_hex))  # as minisign prints it
    write_text_file(bag_dir / "bag-info.txt", "".join(f"{k}: {_one_line(v)}\n" for k, v in tags), bom=False)
    tag_lines = "".join(
        f"{sha256_file(bag_dir / n)}  {n}\n" for n in ("bag-info.txt", "bagit.txt", "manifest-sha256.txt")
    )
    write_text_file(bag_dir / "tagmanifest-sha256.txt", tag_lines, bom=False)
    digest = hashlib.sha256(tag_lines.encode()).hexdigest()
    if signing_key is not None:
        from evidence.signing import sign_file

        name = rel_target.rsplit("/", 1)[-1]
        sign_file(
            signing_key, bag_dir / "tagmanifest-sha256.txt",
            trusted_comment=f"shoseki bag {name} status={status} tagmanifest-sha256={digest}",
        )
        os.chmod(bag_dir / "tagmanifest-sha256.txt.minisig", FILE_MODE)
    fsync_dir(bag_dir)

    ledger_fields = {
        "bag": rel_target, "connector_id": connector_id, "connector_type": connector_type,
        "run_id": run_id, "status": status, "sealed_utc": utc_iso(sealed),
        "tagmanifest_sha256": digest,
    }
    with vault.lock("ledger"):
        entry = _rename_and_record(vault, bag_dir, rel_target, ledger_fields)
    return SealedBag(
        path=vault.root / rel_target, relpath=rel_target, digest=digest, status=status,
        run_id=run_id, connector_id=connector_id, counts=dict(counts), ledger_seq=entry.seq,
    )


def _one_line(value: str) -> str:
    return " ".join(str(value).split())


def _rename_and_record(vault: Vault, bag_dir: Path, rel_target: str, fields: dict[str, Any]) -> ledger.LedgerEntry:
    marker = vault.partial / f"{bag_dir.name}.sealing"
    write_text_file(marker, canonical_json({"source": bag_dir.name, **fields}), bom=False)
    target = vault.root / rel_target
    makedirs(target.parent)
    os.rename(bag_dir, target)
    fsync_dir(target.parent)
    entry = ledger.append(vault.ledger, fields)
    marker.unlink()
    return entry


def finish_interrupted_seals(vault: Vault) -> list[str]:
    """Complete seals that a crash cut between the rename and the ledger line (caller: at start)."""
    done = []
    if not vault.partial.is_dir():
        return done
    with vault.lock("ledger"):
        for marker in sorted(vault.partial.glob("*.sealing")):
            try:
                fields = json.loads(marker.read_text(encoding="utf-8"))
            except ValueError:  # the crash cut the note itself: the bag was not renamed yet
                marker.unlink()
                continue
            source = vault.partial / fields.pop("source")
            target = vault.root / fields["bag"]
            if source.is_dir() and not target.exists():
                makedirs(target.parent)
                os.rename(source, target)
                fsync_dir(target.parent)
            if target.is_dir() and not any(e.bag == fields["bag"] for e in ledger.entries(vault.ledger)):
                ledger.append(vault.ledger, fields)
                done.append(fields["bag"])
            marker.unlink()
    return done

"""The bundle writer: streams one run into a BagIt bag under ``.partial/`` and seals it.

Records and raw pages are written as they arrive (gzip JSONL, hashed while written; CSV tables
beside them), so memory does not grow with the tenant. :meth:`BundleWriter.seal` then writes,
in order: run.json, README.txt, summary.html, the payload manifest, bagit.txt, bag-info.txt,
the tag manifest and its signature; then one atomic rename moves the bag into the dated tree
and one line is appended to the ledger. A crash before the rename leaves only ``.partial/``;
a crash between the rename and the ledger line is finished at the next start
(:func:`finish_interrupted_seals`), using the ``.sealing`` note written before the rename.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from evidence import keyset, ledger
from evidence.model import STREAMS, RawPage, Record, canonical_json, utc_iso
from evidence.render import render_readme, render_summary
from evidence.tables import TableWriter
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


class _HashingFile:
    """A binary file that hashes and counts what is written through it."""

    def __init__(self, path: Path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
        self._f = os.fdopen(fd, "wb", buffering=1 << 20)
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


class _JsonlGz:
    """``*.jsonl.gz`` with a fixed header (mtime 0, no name) so equal content gives equal bytes."""

    def __init__(self, path: Path):
        self.path = path
        self.raw = _HashingFile(path)
        self.gz = gzip.GzipFile(filename="", mode="wb", fileobj=self.raw, compresslevel=COMPRESSLEVEL, mtime=0)
        self._buf: list[bytes] = []
        self.lines = 0

    def write_line(self, line: bytes) -> None:
        self._buf.append(line)
        self.lines += 1
        if len(self._buf) >= 512:
            self._flush()

    def _flush(self) -> None:
        if self._buf:
            self._buf.append(b"")
            self.gz.write(b"\n".join(self._buf))
            self._buf = []

    def close(self) -> None:
        self._flush()
        self.gz.close()
        self.raw.close()


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


def _write_text(path: Path, text: str, *, bom: bool) -> None:
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
        self._records: dict[str, _JsonlGz] = {}
        self._raw: dict[str, _JsonlGz] = {}
        self._raw_pages: dict[str, int] = Counter()
        self._key_hashes = {s: keyset.SortedHashBuilder(self.keys_dir) for s in STREAMS}
        self._full_hashes = {s: keyset.SortedHashBuilder(self.keys_dir) for s in STREAMS}
        self.tables = TableWriter(self.data / "tables", tz)
        self.counts: Counter[str] = Counter()
        self.sealed: SealedBag | None = None

    # -- streaming ------------------------------------------------------------------------
    def write(self, record: Record) -> None:
        stream = record.stream
        out = self._records.get(stream)
        if out is None:
            if stream not in STREAMS:
                raise ValueError(f"unknown stream {stream!r}")
            out = self._records[stream] = _JsonlGz(self.data / "records" / f"{stream}.jsonl.gz")
        line = record.line().encode()
        out.write_line(line)
        k, c = keyset.record_hashes(line)
        self._key_hashes[stream].add(k)
        self._full_hashes[stream].add(c)
        self.tables.write(record)
        self.counts[stream] += 1

    def write_raw(self, page: RawPage) -> None:
        name = _endpoint_file(page.endpoint)
        out = self._raw.get(name)
        if out is None:
            out = self._raw[name] = _JsonlGz(self.data / "raw" / f"{name}.jsonl.gz")
        out.write_line(page.line().encode())
        self._raw_pages[page.endpoint] += 1

    # -- sealing --------------------------------------------------------------------------
    def _close_streams(self) -> tuple[dict[str, tuple[str, int]], list[str]]:
        """Close every stream; return the digests known from writing, and contract problems."""
        known: dict[str, tuple[str, int]] = {}
        for stream in STREAMS:  # every stream has a file, even an empty one
            if stream not in self._records:
                self._records[stream] = _JsonlGz(self.data / "records" / f"{stream}.jsonl.gz")
        for out in [*self._records.values(), *self._raw.values()]:
            out.close()
            known[out.path.relative_to(self.dir).as_posix()] = (out.raw.sha256.hexdigest(), out.raw.size)
        self.tables.close()
        problems = []
        for stream in STREAMS:
            dup = self._key_hashes[stream].finish(self.keys_dir / f"{stream}.keys")
            self._full_hashes[stream].finish(self.keys_dir / f"{stream}.full")
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
        _write_text(self.data / "run.json", json.dumps(run, ensure_ascii=False, indent=2, sort_keys=True) + "\n", bom=False)
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
        _write_text(self.data / "README.txt", render_readme(context), bom=True)
        _write_text(self.data / "summary.html", render_summary(context), bom=False)

        # payload manifest: digests known from streaming, the rest hashed now
        manifest: list[tuple[str, str]] = []
        octets = files = 0
        for path in sorted(self.data.rglob("*")):
            if path.is_dir():
                os.chmod(path, DIR_MODE)
                continue
            os.chmod(path, FILE_MODE)  # files written by other code (the tables) too
            rel = path.relative_to(self.dir).as_posix()
            digest, size = known.get(rel) or (sha256_file(path), path.stat().st_size)
            manifest.append((digest, rel))
            octets += size
            files += 1
        _write_text(self.dir / "manifest-sha256.txt", "".join(f"{d}  {p}\n" for d, p in manifest), bom=False)
        _write_text(self.dir / "bagit.txt", BAGIT_TXT, bom=False)
        info = {
            "Source-Organization": self.organization,
            "Bagging-Date": finished.astimezone(self.tz).strftime("%Y-%m-%d"),
            "External-Identifier": self.run_id,
            "Payload-Oxum": f"{octets}.{files}",
            "Bag-Software-Agent": f"shoseki {collector_version()}",
            "Collector-Version": collector_version(),
            "Connector-Type": self.connector_type,
            "Connector-Id": self.connector_id,
            "Collection-Status": status,
            "Collected-From-UTC": utc_iso(self.started),
            "Collected-To-UTC": utc_iso(finished),
            "Previous-Bag-Digest": f"sha256:{self.previous.digest}" if self.previous else "none",
        }
        if signing_key is not None:
            info["Signing-Key-Id"] = signing_key.key_id.hex().upper()
        _write_text(self.dir / "bag-info.txt", "".join(f"{k}: {_one_line(v)}\n" for k, v in info.items()), bom=False)
        tag_lines = "".join(
            f"{sha256_file(self.dir / n)}  {n}\n" for n in ("bag-info.txt", "bagit.txt", "manifest-sha256.txt")
        )
        _write_text(self.dir / "tagmanifest-sha256.txt", tag_lines, bom=False)
        digest = hashlib.sha256(tag_lines.encode()).hexdigest()
        if signing_key is not None:
            from evidence.signing import sign_file

            sign_file(
                signing_key, self.dir / "tagmanifest-sha256.txt",
                trusted_comment=f"shoseki bag {name} status={status} tagmanifest-sha256={digest}",
            )
            os.chmod(self.dir / "tagmanifest-sha256.txt.minisig", FILE_MODE)
        fsync_dir(self.dir)

        ledger_fields = {
            "bag": rel_target, "connector_id": self.connector_id, "connector_type": self.connector_type,
            "run_id": self.run_id, "status": status, "sealed_utc": utc_iso(finished),
            "tagmanifest_sha256": digest,
        }
        with self.vault.lock("ledger"):
            entry = _rename_and_record(self.vault, self.dir, rel_target, ledger_fields)
        self.sealed = SealedBag(
            path=self.vault.root / rel_target, relpath=rel_target, digest=digest, status=status,
            run_id=self.run_id, connector_id=self.connector_id,
            counts={s: self.counts.get(s, 0) for s in STREAMS}, ledger_seq=entry.seq,
        )
        return self.sealed

    def discard(self) -> None:
        """Remove a bag that was never sealed (used only when the run could not start)."""
        shutil.rmtree(self.dir, ignore_errors=True)
        shutil.rmtree(self.keys_dir, ignore_errors=True)


def _one_line(value: str) -> str:
    return " ".join(str(value).split())


def _rename_and_record(vault: Vault, bag_dir: Path, rel_target: str, fields: dict[str, Any]) -> ledger.LedgerEntry:
    marker = vault.partial / f"{bag_dir.name}.sealing"
    _write_text(marker, canonical_json({"source": bag_dir.name, **fields}), bom=False)
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

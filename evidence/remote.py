"""The vault's WORM copy in S3 Object Lock (``[vault] s3 = {...}``).

After each seal every file of the bag is uploaded to ``<prefix><bag relpath>/<file relpath>``
with Object Lock retention (``object_lock_mode`` until now + ``retain_days``) and an SHA-256
checksum S3 checks on arrival; the upload is confirmed (the stored checksum, version and lock
are read back) and recorded in the catalogue's ``uploads`` table, one row per bag.

The ledger: an object under Object Lock can never be appended to, so each ledger line is its own
object, ``<prefix>ledger/<seq:08d>-<first 12 hex of the bag's tag-manifest digest>.json``,
holding the line's exact bytes (no newline). The SHA-256 of that object is therefore the
``prev_line_sha256`` of the next line: the remote ledger is the same hash chain, one object a
link. It is uploaded after the bag's files, so a ledger object in S3 means the whole bag is there.

Versions: with Object Lock the bucket is versioned and a locked version can be neither deleted
nor overwritten, but anyone allowed ``s3:PutObject`` can put a *newer* version on the same key,
which is what a plain GET then returns. So the catalogue records the ``VersionId`` of every
object uploaded; ``verify_remote`` checks that exact (locked) version against the manifests and
also reports a newer version that shadows it (as changed if its content differs).

Nothing here may block a collection or touch the local bag: :func:`after_seal` and
:func:`retry_pending` never raise, only read local files, and record what failed (status
``pending`` with the error and the attempts; retried at the next ``collect``/daemon start and
after the next successful upload; ``failed`` only when the local bag is gone).
"""

from __future__ import annotations

import base64
import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from evidence import ledger as ledger_mod
from evidence.model import utc_iso
from evidence.vault import AlreadyRunning, Vault
from evidence.verify import Problem, Report, _hash, _read_manifest

log = logging.getLogger("shoseki.remote")

UPLOADED, PENDING, FAILED = "uploaded", "pending", "failed"
# the order of upload: payload first, then tag files, the signature last; the ledger object after all
_TAG_ORDER = ("bagit.txt", "bag-info.txt", "manifest-sha256.txt", "tagmanifest-sha256.txt", "tagmanifest-sha256.txt.minisig")


class UploadError(RuntimeError):
    """S3 accepted a request but what it stored is not what was sent (checksum, version, lock)."""


# -- problems of verify --remote ------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteMissing(Problem):
    key: str = ""
    version_id: str | None = None

    def describe(self) -> str:
        v = f" version {self.version_id}" if self.version_id else ""
        return f"{self.bag}: remote object missing: s3 key {self.key}{v} ({self.path})"


@dataclass(frozen=True)
class RemoteChanged(Problem):
    key: str = ""
    version_id: str | None = None
    expected: str = ""
    found: str = ""
    shadowing: bool = False

    def describe(self) -> str:
        what = (f"a newer version {self.version_id} shadows the locked copy and differs"
                if self.shadowing else f"the remote copy (version {self.version_id}) differs")
        return (f"{self.bag}: remote object changed: s3 key {self.key}: {what} "
                f"(expected sha256 {self.expected}, found {self.found})")


@dataclass(frozen=True)
class RemoteShadowed(Problem):
    key: str = ""
    version_id: str | None = None
    recorded: str | None = None

    def describe(self) -> str:
        return (f"{self.bag}: s3 key {self.key}: a newer version {self.version_id} was written over the "
                f"locked version {self.recorded} (same content, but someone rewrote it)")


@dataclass(frozen=True)
class RemoteRetention(Problem):
    key: str = ""
    message: str = ""

    def describe(self) -> str:
        return f"{self.bag}: s3 key {self.key}: retention {self.message}"


@dataclass(frozen=True)
class RemoteUnexpected(Problem):
    key: str = ""

    def describe(self) -> str:
        return f"{self.bag}: unexpected remote object s3 key {self.key} (not part of the sealed bag)"


@dataclass(frozen=True)
class RemoteUnreadable(Problem):
    key: str = ""
    message: str = ""

    def describe(self) -> str:
        return f"{self.bag}: the remote copy could not be read (s3 key {self.key}): {self.message}"


@dataclass(frozen=True)
class NotCopied(Problem):
    status: str = ""
    error: str = ""

    def describe(self) -> str:
        why = f", last error: {self.error}" if self.error else ""
        return f"{self.bag}: not copied to S3 yet (upload {self.status or 'never attempted'}{why})"


# -- S3 ---------------------------------------------------------------------------------------------


def make_client(s3: Any) -> Any:
    """An S3 client for the ``[vault] s3`` settings: bounded timeouts and attempts, path-style
    addressing when an ``endpoint_url`` is set, the profile's (or the default chain's) credentials."""
    import boto3
    from botocore.config import Config

    options: dict[str, Any] = {
        "retries": {"mode": "standard", "total_max_attempts": 3},
        "connect_timeout": min(10.0, s3.timeout_s), "read_timeout": s3.timeout_s,
        "user_agent_appid": "shoseki",
    }
    if s3.endpoint_url:
        options["s3"] = {"addressing_style": "path"}
    session = boto3.Session(profile_name=s3.profile, region_name=s3.region)
    return session.client("s3", region_name=s3.region, endpoint_url=s3.endpoint_url, config=Config(**options))


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def _hex(b64: str) -> str:
    return base64.b64decode(b64).hex()


def _not_found(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    if not isinstance(exc, ClientError):
        return False
    code = str(exc.response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NoSuchVersion", "NotFound")


def _head(client: Any, bucket: str, key: str, version_id: str | None = None) -> dict[str, Any] | None:
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key, "ChecksumMode": "ENABLED"}
    if version_id:
        kwargs["VersionId"] = version_id
    try:
        return client.head_object(**kwargs)
    except Exception as exc:
        if _not_found(exc):
            return None
        raise


def _remote_sha256(client: Any, bucket: str, key: str, head: dict[str, Any]) -> str:
    """The stored SHA-256 (hex): S3's checksum when it has one, else download and hash."""
    if head.get("ChecksumSHA256") and "-" not in head["ChecksumSHA256"]:
        return _hex(head["ChecksumSHA256"])
    kwargs: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if head.get("VersionId"):
        kwargs["VersionId"] = head["VersionId"]
    body = client.get_object(**kwargs)["Body"]
    h = hashlib.sha256()
    for chunk in iter(lambda: body.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def bag_files(bag: Path) -> list[str]:
    """Every file of the bag, relative, in upload order (payload, then the tag files)."""
    payload, tags = [], []
    for path in sorted(p for p in bag.rglob("*") if p.is_file()):
        rel = path.relative_to(bag).as_posix()
        (tags if rel in _TAG_ORDER else payload).append(rel)
    return payload + sorted(tags, key=_TAG_ORDER.index)


def bag_key(s3: Any, bag_rel: str, file_rel: str = "") -> str:
    return f"{s3.prefix}{bag_rel}/{file_rel}"


def ledger_key(s3: Any, entry: ledger_mod.LedgerEntry) -> str:
    return f"{s3.prefix}ledger/{entry.seq:08d}-{entry.tagmanifest_sha256[:12]}.json"


def _ledger_line(vault: Vault, bag_rel: str) -> tuple[ledger_mod.LedgerEntry, bytes] | None:
    for no, raw in ledger_mod.read_lines(vault.ledger):
        try:
            entry = ledger_mod.LedgerEntry.parse(raw, no)
        except (ValueError, KeyError, TypeError):
            continue
        if entry.bag == bag_rel:
            return entry, raw
    return None


def _record(key: str, head: dict[str, Any], sha_hex: str) -> dict[str, Any]:
    until = head.get("ObjectLockRetainUntilDate")
    return {"key": key, "version_id": head.get("VersionId"), "sha256": sha_hex,
            "retain_until_utc": utc_iso(until.astimezone(timezone.utc)) if until is not None else None}


class Uploader:
    def __init__(self, s3: Any, client: Any = None, now: Callable[[], datetime] | None = None):
        self.s3 = s3
        self.client = client if client is not None else make_client(s3)
        self.now = now or (lambda: datetime.now(timezone.utc))

    def put(self, key: str, body: Any, length: int, sha_hex: str, until: datetime) -> dict[str, Any]:
        """Upload one object locked until ``until`` and confirm it; an object already there with
        the same SHA-256 and a lock (an earlier attempt that died before recording) is adopted."""
        s3, b64 = self.s3, _b64(sha_hex)
        existing = _head(self.client, s3.bucket, key)
        if existing and existing.get("ChecksumSHA256") == b64 and existing.get("ObjectLockMode") == s3.object_lock_mode \
                and existing.get("ObjectLockRetainUntilDate") is not None:
            return _record(key, existing, sha_hex)
        if existing:
            log.warning("s3 key %s already exists with other content; a new locked version is written", key)
        resp = self.client.put_object(
            Bucket=s3.bucket, Key=key, Body=body, ContentLength=length,
            ChecksumAlgorithm="SHA256", ChecksumSHA256=b64,
            ObjectLockMode=s3.object_lock_mode, ObjectLockRetainUntilDate=until,
        )
        if resp.get("ChecksumSHA256") not in (None, b64):
            raise UploadError(f"{key}: S3 stored checksum {resp.get('ChecksumSHA256')}, sent {b64}")
        version = resp.get("VersionId")
        head = _head(self.client, s3.bucket, key, version)
        if head is None:
            raise UploadError(f"{key}: not found right after the upload")
        if head.get("ChecksumSHA256") != b64:
            raise UploadError(f"{key}: S3 reports checksum {head.get('ChecksumSHA256')}, the local file has {b64}")
        if head.get("ObjectLockMode") != s3.object_lock_mode or head.get("ObjectLockRetainUntilDate") is None:
            raise UploadError(f"{key}: uploaded without the Object Lock retention (is Object Lock enabled on the bucket?)")
        return _record(key, head, sha_hex)

    def upload_bag(self, vault: Vault, bag_rel: str) -> dict[str, Any]:
        """Upload one sealed bag and its ledger line; return the catalogue fields (raises on failure)."""
        found = _ledger_line(vault, bag_rel)
        if found is None:
            raise UploadError(f"{bag_rel} is not in ledger.jsonl; not uploaded")
        entry, raw = found
        bag = vault.root / bag_rel
        until = (self.now() + timedelta(days=self.s3.retain_days)).replace(microsecond=0)
        objects: dict[str, dict[str, Any]] = {}
        for rel in bag_files(bag):
            sha_hex, size = _hash(bag / rel)
            with open(bag / rel, "rb") as f:
                objects[rel] = self.put(bag_key(self.s3, bag_rel, rel), f, size, sha_hex, until)
        line = self.put(ledger_key(self.s3, entry), raw, len(raw), hashlib.sha256(raw).hexdigest(), until)
        return {
            "seq": entry.seq, "bucket": self.s3.bucket, "prefix": self.s3.prefix, "mode": self.s3.object_lock_mode,
            "retain_until_utc": utc_iso(until), "objects": objects, "ledger": line,
        }


# -- the catalogue side ---------------------------------------------------------------------------


def _settings(config: Any) -> Any:
    return config.main.vault.s3


def upload_one(config: Any, vault: Vault, bag_rel: str, *, client: Any = None,
               uploader: Uploader | None = None) -> dict[str, Any]:
    """Try to upload one bag and record the outcome (uploaded, or failed with the error); never raises."""
    from collector.state import Catalogue

    catalogue = Catalogue(vault)
    row = catalogue.upload(bag_rel) or {"bag": bag_rel, "status": PENDING, "attempts": 0, "last_error": None}
    if row.get("status") == UPLOADED:
        return row
    try:
        with vault.lock(f"upload-{Path(bag_rel).name}", wait=False):
            row["attempts"] = int(row.get("attempts") or 0) + 1
            try:
                uploader = uploader or Uploader(_settings(config), client)
                row.update(uploader.upload_bag(vault, bag_rel))
                row.update(status=UPLOADED, last_error=None, uploaded_utc=utc_iso(datetime.now(timezone.utc)))
                log.info("copied %s to s3://%s/%s", bag_rel, uploader.s3.bucket, bag_key(uploader.s3, bag_rel))
            except Exception as exc:  # any failure: recorded, retried later; the local bag is untouched
                gone = not (vault.root / bag_rel).is_dir()  # nothing left to copy: failed for good
                row.update(status=FAILED if gone else PENDING, last_error=f"{type(exc).__name__}: {exc}")
                log.warning("upload of %s to S3 failed (will retry): %s", bag_rel, row["last_error"])
            row["updated_utc"] = utc_iso(datetime.now(timezone.utc))
            catalogue.record_upload(row)
    except AlreadyRunning:
        pass
    except Exception:  # the catalogue itself: log, never block the collection
        log.exception("could not record the upload of %s", bag_rel)
    return row


def after_seal(config: Any, vault: Vault, bag_rel: str, *, client: Any = None) -> dict[str, Any] | None:
    """Called by the runner after each seal: mark the bag pending, try it, then (if S3 answered)
    retry the bags still pending. Never raises; returns this bag's row (None when S3 is off)."""
    if _settings(config) is None:
        return None
    try:
        from collector.state import Catalogue

        Catalogue(vault).record_upload({"bag": bag_rel, "status": PENDING, "attempts": 0, "last_error": None,
                                        "updated_utc": utc_iso(datetime.now(timezone.utc))})
        uploader = Uploader(_settings(config), client)
        row = upload_one(config, vault, bag_rel, uploader=uploader)
        if row.get("status") == UPLOADED:
            retry_pending(config, vault=vault, uploader=uploader)
        return row
    except Exception:
        log.exception("upload of %s to S3 could not be attempted (will retry)", bag_rel)
        return None


def not_copied(vault: Vault) -> Iterator[tuple[str, dict[str, Any] | None]]:
    """Every ledgered bag still on disk whose upload is not confirmed, with its row (or None)."""
    from collector.state import Catalogue

    rows = {r["bag"]: r for r in Catalogue(vault).uploads()}
    for entry in ledger_mod.entries(vault.ledger):
        row = rows.get(entry.bag)
        if (row is None or row.get("status") != UPLOADED) and (vault.root / entry.bag).is_dir():
            yield entry.bag, row


def retry_pending(config: Any, *, vault: Vault | None = None, client: Any = None,
                  uploader: Uploader | None = None) -> list[dict[str, Any]]:
    """Upload the bags not yet copied, oldest first; stop at the first failure (S3 is likely down:
    do not spend a timeout on each). Never raises. Called by ``runner.prepare()``."""
    if _settings(config) is None:
        return []
    done: list[dict[str, Any]] = []
    try:
        vault = vault or Vault(config.vault_path).ensure()
        for bag_rel, _ in list(not_copied(vault)):
            uploader = uploader or Uploader(_settings(config), client)
            row = upload_one(config, vault, bag_rel, uploader=uploader)
            done.append(row)
            if row.get("status") != UPLOADED:
                break
    except Exception:
        log.exception("retrying the S3 uploads failed (will retry)")
    return done


# -- verify --remote --------------------------------------------------------------------------------


def _expected_digests(vault: Vault, bag_rel: str, entry: ledger_mod.LedgerEntry | None,
                      problems: list[Problem]) -> dict[str, str]:
    """What each file of the bag must hash to, from the local manifests (and the ledger for the
    tag manifest itself)."""
    bag = vault.root / bag_rel
    expected: dict[str, str] = {}
    expected.update(_read_manifest(bag, "manifest-sha256.txt", bag_rel, problems) or {})
    expected.update(_read_manifest(bag, "tagmanifest-sha256.txt", bag_rel, problems) or {})
    if entry is not None:
        expected["tagmanifest-sha256.txt"] = entry.tagmanifest_sha256
    return expected


def _check_object(client: Any, bucket: str, bag_rel: str, rel: str, rec: dict[str, Any], expected: str,
                  row: dict[str, Any], problems: list[Problem]) -> None:
    key, version = rec["key"], rec.get("version_id")
    head = _head(client, bucket, key, version)
    if head is None:
        problems.append(RemoteMissing(bag_rel, rel, key, version))
        return
    found = _remote_sha256(client, bucket, key, head)
    if found != expected:
        problems.append(RemoteChanged(bag_rel, rel, key, head.get("VersionId") or version, expected, found))
    mode, until = head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")
    if not mode or until is None:
        problems.append(RemoteRetention(bag_rel, rel, key, "missing: the object is not under Object Lock"))
    else:
        if mode != row.get("mode"):
            problems.append(RemoteRetention(bag_rel, rel, key, f"mode is {mode}, it was uploaded with {row.get('mode')}"))
        want = rec.get("retain_until_utc") or row.get("retain_until_utc")
        want_dt = datetime.fromisoformat(want.replace("Z", "+00:00")) if want else None
        if want_dt is not None and until.astimezone(timezone.utc) < want_dt - timedelta(seconds=1):
            problems.append(RemoteRetention(bag_rel, rel, key, f"ends {utc_iso(until.astimezone(timezone.utc))}, earlier than the {want} set at upload"))
    if version:
        latest = _head(client, bucket, key)
        if latest is not None and latest.get("VersionId") != version:
            newer = _remote_sha256(client, bucket, key, latest)
            if newer != expected:
                problems.append(RemoteChanged(bag_rel, rel, key, latest.get("VersionId"), expected, newer, shadowing=True))
            else:
                problems.append(RemoteShadowed(bag_rel, rel, key, latest.get("VersionId"), version))


def verify_remote(config: Any, *, vault: Vault | None = None, client: Any = None) -> Report:
    """Compare the S3 copy of every ledgered bag with the local manifests; typed problems."""
    s3 = _settings(config)
    vault = vault or Vault(config.vault_path)
    report = Report()
    if s3 is None:
        return report
    from collector.state import Catalogue

    client = client if client is not None else make_client(s3)
    rows = {r["bag"]: r for r in Catalogue(vault).uploads()}
    for entry in ledger_mod.entries(vault.ledger):
        bag_rel, row = entry.bag, rows.get(entry.bag)
        if not (vault.root / bag_rel).is_dir() and row is None:
            continue  # gone locally and never copied: the local verify reports it
        report.bags += 1
        if row is None or row.get("status") != UPLOADED:
            report.problems.append(NotCopied(bag_rel, "", (row or {}).get("status", ""), (row or {}).get("last_error") or ""))
            continue
        bucket = row.get("bucket") or s3.bucket
        expected = _expected_digests(vault, bag_rel, entry, report.problems)
        objects = row.get("objects") or {}
        try:
            for rel, rec in sorted(objects.items()):
                report.files += 1
                _check_object(client, bucket, bag_rel, rel, rec, expected.get(rel, rec.get("sha256", "")), row, report.problems)
            for rel in sorted(set(expected) - set(objects)):
                report.problems.append(RemoteMissing(bag_rel, rel, bag_key(s3, bag_rel, rel), None))
            if row.get("ledger"):
                _check_object(client, bucket, bag_rel, "ledger.jsonl line", row["ledger"],
                              entry.line_sha256, row, report.problems)
            prefix = bag_key(s3, bag_rel) if row.get("prefix") is None else f"{row['prefix']}{bag_rel}/"
            known = {rec["key"] for rec in objects.values()}
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    if obj["Key"] not in known:
                        report.problems.append(RemoteUnexpected(bag_rel, obj["Key"][len(prefix):], obj["Key"]))
        except Exception as exc:  # access denied, network: name it, go on with the next bag
            report.problems.append(RemoteUnreadable(bag_rel, "", f"{bucket}/{bag_key(s3, bag_rel)}", f"{type(exc).__name__}: {exc}"))
    return report

"""Byte-identity across code versions: the digest of every file a fixed synthetic run writes.

Writes five bags through ``BundleWriter`` (random records of every stream and of odd shapes,
raw pages, duplicate keys, an empty run, and with ``--big N`` two runs of N local_files-like
grants and N/2 resources, the second counting changes since the first), seals them with fixed
times, and prints the SHA-256, size and mode of every file in the vault: bags, ledger and the
``.state/keys`` hash files. Run it with two versions of the code and compare::

    PYTHONPATH=/path/to/old/checkout python tests/evidence/bag_digests.py /tmp/old --big 600000 > old.txt
    PYTHONPATH=/path/to/new/checkout python tests/evidence/bag_digests.py /tmp/new --big 600000 > new.txt
    diff old.txt new.txt

(Not a test module: pytest does not collect it.)
"""

from __future__ import annotations

import enum
import hashlib
import os
import random
import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import evidence
from evidence.bundle import BundleWriter, PreviousBag
from evidence.model import Grant, Membership, Principal, RawPage, Record, Resource
from evidence.vault import Vault

print("# evidence from", os.path.dirname(evidence.__file__), file=sys.stderr)


class Color(enum.IntEnum):
    RED = 7


class Tag(str, enum.Enum):
    A = "=alpha"


WORDS = ["議事録", "report", "顧客リスト", "=SUM(A1)", "+1", "-x", "@me", "\tTab", "＝全角", "00123",
         "2026-11-26", "TRUE", "1E5", "Nov-26", "plain", "a,b", 'q"uote', "new\nline", "", " 12 ",
         "R8.11.26", "令和8年11月26日", "x" * 300, "1" * 300, "ümlaut", "emoji😀", "back\\slash", "\r"]
TIMES = ["2026-11-26T03:00:00Z", "2026-01-01T00:00:00.123456Z", "not a time", "2026-11-26T03:00:00",
         "2026-11-26T03:00:00+05:30", "", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
         "2026-11-26T03:00:00-00:00:30"]


def rand_value(rng: random.Random, depth: int = 0):
    r = rng.random()
    if r < 0.25:
        return rng.choice(WORDS)
    if r < 0.4:
        return rng.randint(-(10**20), 10**20) if rng.random() < 0.1 else rng.randint(-5, 10**6)
    if r < 0.5:
        return rng.choice([True, False, None])
    if r < 0.6:
        return rng.choice([1.5, -0.0, 1e300, 3.0, 0.1])
    if r < 0.75 and depth < 3:
        return [rand_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if r < 0.9 and depth < 3:
        return {rng.choice(WORDS) + str(i): rand_value(rng, depth + 1) for i in range(rng.randint(0, 4))}
    return rng.choice(WORDS)


def rand_attrs(rng: random.Random):
    r = rng.random()
    if r < 0.3:
        return {}
    if r < 0.35:
        return None
    keys = ["mode", "uid", "gid", "inode", "root", "zeta", "Alpha", "ä", "acl", "=x"]
    return {k: rand_value(rng) for k in rng.sample(keys, rng.randint(1, len(keys)))}


def maybe(rng, value, p=0.7):
    return value if rng.random() < p else None


def records(rng: random.Random, n: int):
    for i in range(n):
        s = rng.randrange(4)
        w = lambda: rng.choice(WORDS)  # noqa: E731
        if s == 0:
            rec = Principal(
                id=rng.choice([f"uid:{i}", w(), f"{i:05d}"]), kind=rng.choice(["user", "group", "guest"]),
                email=maybe(rng, f"u{i}@example.co.jp"), display_name=maybe(rng, w()), domain=maybe(rng, w()),
                external=maybe(rng, rng.random() < 0.5), enabled=maybe(rng, True), mfa=maybe(rng, False),
                admin=maybe(rng, rng.random() < 0.5), roles=tuple(w() for _ in range(rng.randint(0, 3))),
                last_sign_in=maybe(rng, rng.choice(TIMES)), created=maybe(rng, rng.choice(TIMES)),
                attributes=rand_attrs(rng) or {},
            ).record()
        elif s == 1:
            rec = Membership(group_id=f"gid:{i % 50}", member_id=rng.choice([f"uid:{i}", w()]),
                             member_kind="user", role=maybe(rng, w()), attributes=rand_attrs(rng) or {}).record()
        elif s == 2:
            rec = Resource(
                id=f"/share/{w()}/{i}", kind=rng.choice(["file", "folder"]), name=maybe(rng, w()),
                path=maybe(rng, f"/share/{i}"), owners=tuple(rng.choice([f"uid:{i % 7}", w()]) for _ in range(rng.randint(0, 2))),
                size=maybe(rng, rng.randint(0, 10**9)), modified=maybe(rng, rng.choice(TIMES)),
                shared=maybe(rng, rng.random() < 0.5), web_url=maybe(rng, w()), attributes=rand_attrs(rng) or {},
            ).record()
        else:
            rec = Grant(
                resource_id=f"/share/{i // 3}", principal_id=rng.choice([f"uid:{i % 9}", w()]), principal_kind="user",
                role=rng.choice(["owner", "viewer"]), raw_role=rng.choice(["u::rw-", "user:1000:r-x", w()]),
                via=rng.choice(["direct", "default_acl"]), principal_email=maybe(rng, w()),
                principal_domain=maybe(rng, w()), external=maybe(rng, False), link_scope=maybe(rng, "anyone"),
                expiry=maybe(rng, rng.choice(TIMES)), inherited_from=maybe(rng, w()),
                grant_id=maybe(rng, rng.choice([w(), str(i)]), 0.3), attributes=rand_attrs(rng) or {},
            ).record()
        data = dict(rec.data)
        r = rng.random()
        if r < 0.03:  # odd data shapes a connector might hand in
            data["extra_field"] = rand_value(rng)
        elif r < 0.05:
            data.pop(rng.choice(list(data)))
        elif r < 0.07:
            data = dict(reversed(list(data.items())))
        elif r < 0.09:
            k = rng.choice(list(data))
            data[k] = rng.choice([Color.RED, 2.5, (1, "=x"), {"z": 1, "a": [1, 2]}, 10**25, True, -3, Tag.A])
        elif r < 0.10:
            data["attributes"] = rand_value(rng)
        yield Record(rec.stream, rec.key, data)


def run(vault: Vault, run_id: str, stream, previous, raw_pages: int, rng: random.Random):
    started = datetime(2026, 11, 26, 3, 0, tzinfo=timezone.utc)
    w = BundleWriter(vault, run_id=run_id, connector_id="files-check", connector_type="local_files",
                     started=started, tz=ZoneInfo("Asia/Tokyo"), organization="検査株式会社", previous=previous)
    for rec in stream:
        w.write(rec)
    for p in range(raw_pages):
        w.write_raw(RawPage(endpoint=f"/api/v1/{p % 3}?x", params={"page": p}, page=p,
                            response={"items": [rand_value(rng) for _ in range(20)]}, received="2026-11-26T03:00:00Z"))
    sealed = w.seal(status="complete", reasons=[], finished=datetime(2026, 11, 26, 3, 5, tzinfo=timezone.utc),
                    run_info={"mode": "full", "identity": "tester", "calls": {"x": 1}, "retries": {}, "throttled": {}, "errors": [], "errors_total": 0})
    return PreviousBag(sealed.path, sealed.digest, run_id)


def main() -> None:
    out = Path(sys.argv[1])
    big = int(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[2] == "--big" else 0
    shutil.rmtree(out, ignore_errors=True)
    vault = Vault(out).ensure()
    prev = run(vault, "r00000001", records(random.Random(1), 20000), None, 50, random.Random(11))
    stream = list(records(random.Random(2), 20000))
    stream += [stream[5], stream[17]]  # duplicate keys: the bag becomes partial
    prev = run(vault, "r00000002", stream, prev, 7, random.Random(12))
    prev = run(vault, "r00000003", iter(()), prev, 0, random.Random(13))  # empty run
    if big:
        # many records (>CHUNK hashes, many gzip chunks), mostly grants like local_files
        def many():
            rng = random.Random(3)
            for i in range(big):
                yield Record("grants", f"/share/d{i // 100}/f{i}|uid:{i % 13}|direct|u::rw-", {
                    "resource_id": f"/share/d{i // 100}/f{i}", "principal_id": f"uid:{i % 13}",
                    "principal_kind": "user", "role": "owner", "raw_role": "u::rw-", "via": "direct",
                    "principal_email": None, "principal_domain": None, "external": None, "link_scope": None,
                    "expiry": None, "inherited_from": None, "grant_id": None,
                    "attributes": {} if i % 3 else {"mode": "0640", "uid": i % 13, "n": rng.random()}})
                if i % 2 == 0:
                    yield Record("resources", f"/share/d{i // 100}/f{i}", {
                        "id": f"/share/d{i // 100}/f{i}", "kind": "file", "name": f"議事録_{i}.docx",
                        "path": f"/share/d{i // 100}/f{i}", "owners": [f"uid:{i % 13}"], "size": i,
                        "modified": "2026-11-26T03:00:00.5Z", "shared": bool(i % 5), "web_url": None,
                        "attributes": {"mode": "0640", "uid": i % 13, "gid": 5, "inode": i, "root": "/share"}})
        prev = run(vault, "r00000004", many(), prev, 0, random.Random(14))
        prev = run(vault, "r00000005", many(), prev, 0, random.Random(14))
    for path in sorted(p for p in out.rglob("*") if p.is_file() and "locks" not in p.parts):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        print(digest, path.stat().st_size, oct(path.stat().st_mode & 0o777), path.relative_to(out).as_posix())


if __name__ == "__main__":
    main()

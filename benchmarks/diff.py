"""Benchmark of ``evidence.diff.diff_bags`` on two large synthetic grant snapshots.

Usage::

    python benchmarks/diff.py [--n 1000000] [--seed 1] [--json out.json] [--keep DIR]

What it does (in a temporary folder under $TMPDIR or /tmp, removed at the end unless ``--keep``):

1. **Snapshots.** Writes two bags' ``data/records/grants.jsonl.gz`` (canonical JSON record lines,
   gzip, as the bag writer writes them, no other stream: missing streams count as empty). The
   old bag has ``--n`` grants (``n / 100`` resources, grants of users, a few ``anyone`` links),
   in random order. The new bag drops ~1% of them, changes the role of ~1% (``raw_role``
   reader → writer, so the key changes and the diff must pair the removed and added grant up),
   and adds ~1% new grants (a few of them ``anyone`` links), also in random order.
2. **Diff.** A child process runs ``diff_bags(old, new)`` to the end and counts the changes by
   kind. Its wall time and its own peak RSS (``ru_maxrss`` from ``os.wait4``) are measured;
   the counts are checked against those the generator planted. Aim: peak RSS under 300 MB.

Output: one line per figure; ``--json FILE`` writes them as JSON too.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from evidence.model import Grant, canonical_json

AIM_RSS_MB = 300


def _grant(i: int, raw_role: str = "reader") -> tuple[str, dict[str, Any]]:
    public = i % 997 == 0
    rec = Grant(
        resource_id=f"drive/file-{i // 100:08d}", principal_id="anyone" if public else f"user{i:09d}@example.co.jp",
        principal_kind="anyone" if public else "user", role="editor" if raw_role == "writer" else "viewer",
        raw_role=raw_role, via="link" if public else "direct", link_scope="anyone" if public else None,
        principal_email=None if public else f"user{i:09d}@example.co.jp",
        principal_domain=None if public else "example.co.jp", external=False, grant_id=f"perm-{i:010d}",
    ).record()
    return rec.key, rec.data


def write_snapshots(root: Path, n: int, seed: int) -> dict[str, int]:
    """The two bags under ``root/old`` and ``root/new``; returns the planted change counts."""
    rng = random.Random(seed)
    order = list(range(n))
    rng.shuffle(order)
    expected = {"added": 0, "removed": 0, "changed": 0}
    paths = {}
    for side in ("old", "new"):
        records = root / side / "data" / "records"
        records.mkdir(parents=True)
        paths[side] = records / "grants.jsonl.gz"
    with gzip.open(paths["old"], "wb", compresslevel=6) as old, gzip.open(paths["new"], "wb", compresslevel=6) as new:
        batch_old: list[bytes] = []
        batch_new: list[bytes] = []
        for i in order:
            key, data = _grant(i)
            batch_old.append((canonical_json({"key": key, "record": data}) + "\n").encode())
            if i % 100 == 17:
                expected["removed"] += 1
                continue
            if i % 100 == 42:
                expected["changed"] += 1
                key, data = _grant(i, raw_role="writer")
            batch_new.append((canonical_json({"key": key, "record": data}) + "\n").encode())
            if len(batch_old) >= 10_000:
                old.writelines(batch_old)
                new.writelines(batch_new)
                batch_old, batch_new = [], []
        for j in range(n, n + n // 100):
            key, data = _grant(j)
            batch_new.append((canonical_json({"key": key, "record": data}) + "\n").encode())
            expected["added"] += 1
        rng.shuffle(batch_new)  # the added ones are in the last batch: mix them in with it
        old.writelines(batch_old)
        new.writelines(batch_new)
    return expected


CHILD = """
import json, sys, time
from collections import Counter
from pathlib import Path
from evidence.diff import diff_bags
t = time.perf_counter()
counts = Counter()
role_changed = became_public = 0
for c in diff_bags(Path(sys.argv[1]), Path(sys.argv[2]), workdir=Path(sys.argv[3])):
    counts[c.kind] += 1
    role_changed += c.role_changed
    became_public += c.became_public
print(json.dumps({"counts": dict(counts), "role_changed": role_changed, "became_public": became_public, "diff_s": time.perf_counter() - t}))
"""


def run_diff(root: Path) -> dict[str, Any]:
    work = root / "work"
    work.mkdir()
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(root / "old"), str(root / "new"), str(work)],
                            stdout=subprocess.PIPE)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        sys.exit(f"the diff failed (exit code {proc.returncode})")
    result = json.loads(out)
    result.update(wall_s=wall, maxrss_mb=usage.ru_maxrss / 1024, temp_left=len(list(work.iterdir())))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="grants in the old snapshot (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every figure as JSON to FILE")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="write the snapshots to DIR and keep them")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="shoseki-bench-diff-")) if args.keep is None else args.keep
    root.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        expected = write_snapshots(root, args.n, args.seed)
        generate_s = time.perf_counter() - t
        sizes = {s: (root / s / "data" / "records" / "grants.jsonl.gz").stat().st_size for s in ("old", "new")}
        r = run_diff(root)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    ok_counts = r["counts"] == {k: v for k, v in expected.items() if v} and r["role_changed"] == expected["changed"]
    figures = {
        "grants_old": args.n,
        "grants_new": args.n - expected["removed"] + expected["added"],
        "bag_gz_mb_old": sizes["old"] / 1e6,
        "bag_gz_mb_new": sizes["new"] / 1e6,
        "generate_s": generate_s,
        "diff_wall_s": r["wall_s"],
        "diff_in_child_s": r["diff_s"],
        "peak_rss_mb": r["maxrss_mb"],
        "added": r["counts"].get("added", 0),
        "removed": r["counts"].get("removed", 0),
        "changed": r["counts"].get("changed", 0),
        "role_changed": r["role_changed"],
        "counts_as_planted": ok_counts,
        "temporary_files_left": r["temp_left"],
        "rss_under_aim": r["maxrss_mb"] < AIM_RSS_MB,
    }
    for name, value in figures.items():
        print(f"{name}: {value:.2f}" if isinstance(value, float) else f"{name}: {value}")
    if args.json:
        out = {**figures, "expected": expected, "aim_rss_mb": AIM_RSS_MB, "python": sys.version.split()[0],
               "machine": platform.platform(), "cpus": os.cpu_count()}
        args.json.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    if not ok_counts:
        sys.exit("the change counts differ from those planted")


if __name__ == "__main__":
    main()

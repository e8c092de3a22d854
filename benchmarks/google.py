"""Benchmark of ``google_drive`` and ``google_directory`` against the Google stand-in.

For each tenant size (default 100, 1,000 and 10,000 users; files scale with users, 8 per user on
average, plus shared drives):

1. starts ``shoseki sandbox serve --no-microsoft --no-aws`` in its own process and sets the
   emulated conditions on it: **50 ms latency** on every HTTP round trip (a batch is one round
   trip: its inner calls get none of their own) and the **documented quotas**, counted in quota
   units over a sliding 60 s window — Drive 12,000 per minute per project and per user, Directory
   2,400 per minute (``--drive-quota`` / ``--directory-quota`` to change);
2. runs ``shoseki collect`` for each connector as a child process (full run; then, for Drive,
   a few sharing changes and an incremental run — reading every changes feed, and reading only
   the feeds the Drive audit log names, ``change_detection = "activity"``) and reads its wall
   time and peak RSS
   (``os.wait4``: the collector and its bag-writer helper);
3. reads the server's counters: calls and quota units actually spent, and throttle answers
   (should be 0: the collector's own budget keeps it under the quota).

Reported ratios (DESIGN.md, "Performance model"):

* **calls / lower bound** — the lower bound is computed from the organisation itself: the fewest
  calls that can return the whole state with the documented page sizes (Drive: users.list pages
  + drives.list pages + one member listing per drive + for every user ``max(1, ceil(files/1000))``
  + for every shared drive ``max(1, ceil(files/1000))`` + one permission listing per item with
  its own permissions; plus the changes start token per user and per drive that incremental
  runs need — reported with and without). Aim ≤ 1.1.
* **time / quota-bound time** — the quota-bound time is quota units spent ÷ the quota rate; aim
  ≤ 1.2. When the tenant is small enough that latency, not quota, bounds the run, the latency
  bound is reported beside it.
* **peak RSS** — aim: flat, under 200 MB at the largest size.

    python benchmarks/google.py [--sizes 100,1000,10000] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
# this file is named google.py: keep its folder off the path so ``import google.auth`` still works
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(ROOT))
from benchmarks._harness import collect, last_run, start_sandbox  # noqa: E402

from sandbox.org import REFERENCE_TIME, Org  # noqa: E402

LATENCY_ENDPOINTS = ["oauth2.token", "batch", "directory.users.list", "directory.groups.list",
                     "directory.roles.list", "directory.roleAssignments.list", "drive.drives.list",
                     "drive.files.list", "drive.changes.getStartPageToken", "drive.changes.list"]




def set_conditions(base: str, latency_ms: float, drive_quota: int, directory_quota: int) -> None:
    rules = [{"endpoint": e, "latency_ms": latency_ms} for e in LATENCY_ENDPOINTS]
    drive = [e for e in LATENCY_ENDPOINTS if e.startswith("drive.")] + ["drive.permissions.list"]
    for e in drive:
        rules.append({"endpoint": e, "quota": drive_quota, "quota_units": True, "quota_per": "global"})
        rules.append({"endpoint": e, "quota": drive_quota, "quota_units": True, "quota_per": "principal"})
    for e in [e for e in LATENCY_ENDPOINTS if e.startswith("directory.")] + ["directory.members.list"]:
        rules.append({"endpoint": e, "quota": directory_quota, "quota_units": True, "quota_per": "global"})
    requests.post(base + "/_sandbox/faults", json=rules, timeout=10).raise_for_status()


def stats(base: str, reset: bool = False) -> dict:
    s = requests.get(base + "/_sandbox/stats", timeout=10).json()
    if reset:
        requests.post(base + "/_sandbox/reset", timeout=10)
    return s


def drive_lower_bound(org: Org) -> dict:
    my = sum(max(1, math.ceil(org.file_count(p.index) / 1000)) for p in org.people())
    drives = list(org.drives())
    sd = sum(max(1, math.ceil(d.files / 1000)) for d in drives)
    own = sum(1 for d in drives for f in org.drive_files(d.index)
              if any(s.expiration is None or s.expiration > REFERENCE_TIME for s in f.shares))
    snapshot = math.ceil(org.n / 500) + math.ceil(len(drives) / 100) + len(drives) + my + sd + own
    return {"snapshot": snapshot, "with_start_tokens": snapshot + org.n + len(drives)}


def directory_lower_bound(org: Org) -> int:
    groups = list(org.groups())
    members = sum(max(1, math.ceil(sum(1 for _ in org.group_members(g)) / 200)) for g in groups)
    return math.ceil(org.n / 500) + math.ceil(len(groups) / 200) + members + 1 + 1  # + roles + assignments






def write_config(work: Path, e: dict, vault: Path) -> Path:
    g = e["google"]
    common = (f'service_account_key_file = "{g["service_account_key_file"]}"\nadmin_subject = "{g["admin_subject"]}"\n'
              f'root_url = "{g["root_url"]}"\n')
    (work / "config" / "connectors").mkdir(parents=True, exist_ok=True)
    (work / "config" / "shoseki.toml").write_text(
        f'[organization]\nname = "bench"\ndomains = ["{e["organization"]["domain"]}"]\ntimezone = "Asia/Tokyo"\n\n'
        f'[vault]\npath = "{vault}"\n', encoding="utf-8")
    (work / "config" / "connectors" / "google.toml").write_text(
        f'[[connector]]\nid = "google-drive"\ntype = "google_drive"\n{common}\n'
        f'[[connector]]\nid = "google-directory"\ntype = "google_directory"\n{common}\n'
        f'[[connector]]\nid = "google-drive-activity"\ntype = "google_drive"\nchange_detection = "activity"\n{common}',
        encoding="utf-8")
    return work / "config" / "shoseki.toml"


def mutate(base: str, org: Org) -> None:
    people = [p for p in org.people() if org.file_count(p.index) > 2][:5]
    for p in people:
        fid = f"uf{p.index:06d}x0001"
        requests.post(base + "/_sandbox/mutate", json={"op": "share", "args": {
            "file_id": fid, "share": {"id": fid + "p9", "type": "anyone", "role": "reader"}}}, timeout=10).raise_for_status()


def measure(users: int, latency_ms: float, drive_quota: int, directory_quota: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="shoseki-bench-google-") as tmp:
        work = Path(tmp)
        proc, e = start_sandbox(users, work / "sandbox", "--no-aws", "--no-microsoft")
        base = e["google"]["root_url"].rstrip("/")
        try:
            org = Org(e["organization"]["seed"], users)
            config = write_config(work, e, work / "vault")
            set_conditions(base, latency_ms, drive_quota, directory_quota)
            out: dict = {"users": users}
            for connector, quota, bound in (
                ("google-directory", directory_quota, {"snapshot": directory_lower_bound(org)}),
                ("google-drive", drive_quota, drive_lower_bound(org)),
            ):
                stats(base, reset=True)
                set_conditions(base, latency_ms, drive_quota, directory_quota)
                child = collect(config, connector)
                s = stats(base)
                run = last_run(work / "vault", connector, child)
                units = s["total_units"]
                quota_bound = units / (quota / 60.0)
                out[connector] = {
                    **child, "status": run["status"], "mode": run["mode"], "calls": s["calls"],
                    "quota_units": units, "http_requests": s["total_calls"], "throttled": sum(s["throttled"].values()),
                    "lower_bound": bound,
                    "calls_ratio": round(units / bound["snapshot"], 3),
                    "calls_ratio_with_tokens": round(units / bound["with_start_tokens"], 3) if "with_start_tokens" in bound else None,
                    "quota_bound_s": round(quota_bound, 2), "duration_s": run.get("duration_s"),
                    "time_ratio": round(child["wall_s"] / quota_bound, 3) if quota_bound else None,
                    "records": run.get("counts"),
                }
            # the baseline of the audit-log-driven variant (same cost as the full run above: not reported)
            stats(base, reset=True)
            set_conditions(base, latency_ms, drive_quota, directory_quota)
            collect(config, "google-drive-activity")
            # incremental Drive runs after a few sharing changes: changes feeds, and audit-log driven
            mutate(base, org)
            for connector, key in (("google-drive", "google-drive-incremental"),
                                   ("google-drive-activity", "google-drive-incremental-activity")):
                stats(base, reset=True)
                set_conditions(base, latency_ms, drive_quota, directory_quota)
                child = collect(config, connector)
                s = stats(base)
                run = last_run(work / "vault", connector, child)
                out[key] = {
                    **child, "status": run["status"], "mode": run["mode"], "quota_units": s["total_units"],
                    "http_requests": s["total_calls"], "calls": s["calls"],
                    "fraction_of_full": round(s["total_units"] / out["google-drive"]["quota_units"], 3),
                    "changes_applied": run["notes"].get("changes_applied"),
                }
            return out
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100,1000,10000")
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--drive-quota", type=int, default=12_000, help="Drive quota units per minute (project and user)")
    ap.add_argument("--directory-quota", type=int, default=2_400, help="Directory queries per minute")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results = []
    for size in [int(s) for s in args.sizes.split(",")]:
        r = measure(size, args.latency_ms, args.drive_quota, args.directory_quota)
        results.append(r)
        for key in ("google-directory", "google-drive", "google-drive-incremental", "google-drive-incremental-activity"):
            x = r[key]
            print(f"{size:>6} users  {key:<25} {x['status']:<8} {x['mode']:<11} wall {x['wall_s']:>7.1f}s  "
                  f"units {x['quota_units']:>7.0f}  http {x['http_requests']:>6}  "
                  + (f"calls/bound {x['calls_ratio']:.3f}" + (f" ({x['calls_ratio_with_tokens']:.3f} with start tokens)"
                                                              if x.get("calls_ratio_with_tokens") else "")
                     + f"  time/quota-bound {x['time_ratio']:.2f} ({x['quota_bound_s']:.1f}s)  throttled {x['throttled']}"
                     if "calls_ratio" in x else f"fraction of full {x['fraction_of_full']:.3f}")
                  + f"  peak RSS {x['peak_rss_mb']:.0f} MB", flush=True)
            if x.get("stderr_tail"):
                print("   ", x["stderr_tail"])
    if args.json:
        args.json.write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                                         "latency_ms": args.latency_ms, "drive_quota": args.drive_quota,
                                         "directory_quota": args.directory_quota, "results": results}, indent=2))


if __name__ == "__main__":
    main()

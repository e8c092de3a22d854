"""Benchmark of ``entra_id`` and ``m365_files`` against the Microsoft stand-in.

For each tenant size (default 100 and 1,000 users; files scale with users):

1. starts ``shoseki sandbox serve --no-google --no-aws`` in its own process and sets the emulated
   conditions: **50 ms latency** on every round trip (a ``$batch`` is one round trip) and a
   resource-unit budget over a sliding 60 s window on the SharePoint endpoints and another on the
   directory endpoints;
2. runs ``shoseki collect`` for each connector as a child process — a full run, then (after a few
   sharing changes) an incremental one — and reads wall time and peak RSS (``os.wait4``);
3. reads the stand-in's counters: requests and resource units spent, throttle answers.

The budgets: SharePoint documents 1,200 RU a minute for a tenant of up to 1,000 licences
(2,400 up to 5,000, 3,600 up to 15,000); at that rate a 1,000-user tenant's first snapshot takes
a quarter of an hour, so by default the benchmark multiplies the documented budget by
``--budget-scale`` (10) on both sides — the stand-in's quota and the connector's own budget —
which leaves the ratio wall time ÷ RU-bound time unchanged while the run gets shorter. The
Identity budget is 3,500 RU per 10 s.

Reported (DESIGN.md, "Performance model"):

* **RU / lower bound** — the lower bound is computed from the organisation: the fewest resource
  units that return the whole state with the documented page sizes and costs (m365: the site
  listing, the drives of every site, one delta walk per drive, one permission read per drive root
  and per item with its own sharing; entra: users, sign-in activity, the MFA report, groups with
  members, roles). Aim ≤ 1.1.
* **time / RU-bound time** — RU spent ÷ the budget rate (for entra_id, or Graph's request limits on
  sign-in activity, 10 a minute, and the reports, 5 per 10 s, when they bind first). Aim ≤ 1.2.
* **peak RSS** — aim: flat, under 200 MB.
* the incremental run's RU as a fraction of the full run's.

    python benchmarks/microsoft.py [--sizes 100,1000] [--budget-scale 10] [--json out.json]
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
sys.path.insert(0, str(ROOT))
from benchmarks._harness import collect, last_run, start_sandbox  # noqa: E402

from sandbox.org import REFERENCE_TIME, Org  # noqa: E402

SHAREPOINT = ["sites.getAllSites", "sites.get", "sites.drives", "sites.drive", "drives.get", "drives.delta",
              "items.get", "items.permissions", "users.drive"]
DIRECTORY = ["users.list", "users.delta", "users.get", "groups.list", "groups.delta", "groups.members",
             "roles.definitions", "roles.assignments", "roles.eligibilitySchedules", "reports.userRegistrationDetails"]


ROUND_TRIPS = ["batch", "sites.getAllSites", "drives.delta", "users.list", "users.delta", "groups.list", "groups.delta",
               "roles.definitions", "roles.assignments", "roles.eligibilitySchedules", "reports.userRegistrationDetails"]


def sharepoint_budget(users: int) -> int:
    for limit, ru in ((1000, 1200), (5000, 2400), (15000, 3600), (50000, 4800)):
        if users <= limit:
            return ru
    return 6000




class Admin:
    def __init__(self, e: dict):
        ms = e["microsoft"]
        self.base = ms["stats"].rsplit("/_sandbox/", 1)[0]
        self.session = requests.Session()
        self.session.verify = ms["ca_bundle"]
        self.session.trust_env = False

    def conditions(self, latency_ms: float, sp_per_min: float, dir_per_10s: float) -> None:
        # latency per round trip: on the batch envelope and on calls made alone, not on the inner
        # requests of a $batch (the stand-in dispatches those one by one through the same rules)
        rules = [{"endpoint": e, "latency_ms": latency_ms} for e in ROUND_TRIPS]
        for e in SHAREPOINT:
            rules.append({"endpoint": e, "quota": sp_per_min, "quota_window_s": 60, "quota_units": True, "quota_per": "global"})
        for e in DIRECTORY:
            rules.append({"endpoint": e, "quota": dir_per_10s, "quota_window_s": 10, "quota_units": True, "quota_per": "global"})
        self.session.post(self.base + "/_sandbox/faults", json=rules, timeout=10).raise_for_status()

    def stats(self, reset: bool = False) -> dict:
        s = self.session.get(self.base + "/_sandbox/stats", timeout=10).json()
        if reset:
            self.session.post(self.base + "/_sandbox/reset", timeout=10)
        return s

    def mutate(self, org: Org) -> None:
        people = [p for p in org.people() if org.file_count(p.index) > 2][:5]
        for p in people:
            fid = f"uf{p.index:06d}x0001"
            self.session.post(self.base + "/_sandbox/mutate", json={"op": "share", "args": {
                "file_id": fid, "share": {"id": fid + "p9", "type": "anyone", "role": "reader"}}}, timeout=10).raise_for_status()


def live(shares) -> list:
    return [s for s in shares if s.expiration is None or s.expiration > REFERENCE_TIME]


def m365_lower_bound(org: Org, page: int = 200) -> int:
    """Fewest RU for a complete snapshot: sites (2 a page of 100), drives (2 per team site, 1 per
    OneDrive), users (1 per 999), one delta walk per drive (2 + 1 per further page of ``page``),
    5 per permission read (each drive root, each item with its own sharing)."""
    drives = list(org.drives())
    people = list(org.people())
    sites = len(drives) + len(people)
    ru = 2 * math.ceil(sites / 100) + 2 * len(drives) + len(people) + math.ceil(len(people) / 999)
    for d in drives:
        items = 1 + d.files
        ru += 2 + (math.ceil(items / page) - 1) + 5 * (1 + sum(1 for f in org.drive_files(d.index) if live(f.shares)))
    for p in people:
        items = 1 + org.file_count(p.index)
        ru += 2 + (math.ceil(items / page) - 1) + 5 * (1 + sum(1 for f in org.user_files(p.index) if live(f.shares)))
    return ru


def entra_rate_bound_s(org: Org) -> float:
    """Graph's request limits bind entra_id before its RU budget does: sign-in activity 10
    requests a minute (pages of 500), the reports family 5 per 10 s (pages of 100)."""
    users = org.n + org.n_guests
    signin, report = math.ceil(users / 500), math.ceil(users / 100)
    return max((signin - 1) * 6.0, (report - 1) * 2.0)


def entra_lower_bound(org: Org) -> int:
    """users 1 RU per 999, sign-in activity 1 per 500, the MFA report 1 per 100 (its page size is
    the server's), groups with members (1 per group page and per 100 members), roles 3, guests'
    sponsors 2 per 100 guests (a listing with ``$expand`` is 2 RU and pages of at most 100)."""
    users = org.n + org.n_guests
    groups = list(org.groups())
    members = sum(sum(1 for _ in org.group_members(g)) for g in groups)
    return (math.ceil(users / 999) + math.ceil(users / 500) + math.ceil(users / 100)
            + math.ceil(len(groups) / 100) + math.ceil(members / 100) + 3 + 2 * math.ceil(org.n_guests / 100))


def write_config(work: Path, e: dict, vault: Path, sp_per_min: float, dir_per_10s: float) -> Path:
    ms = e["microsoft"]
    authority = ms["authority"].removesuffix("/" + ms["tenant_id"])
    common = (f'tenant_id = "{ms["tenant_id"]}"\nclient_id = "{ms["client_id"]}"\n'
              f'client_secret_file = "{ms["client_secret_file"]}"\nauthority = "{authority}"\n'
              f'graph_url = "{ms["graph_url"]}"\nca_bundle = "{ms["ca_bundle"]}"\n')
    (work / "config" / "connectors").mkdir(parents=True, exist_ok=True)
    (work / "config" / "shoseki.toml").write_text(
        f'[organization]\nname = "bench"\ndomains = ["{e["organization"]["domain"]}"]\ntimezone = "Asia/Tokyo"\n\n'
        f'[vault]\npath = "{vault}"\n', encoding="utf-8")
    (work / "config" / "connectors" / "microsoft.toml").write_text(
        f'[[connector]]\nid = "entra-id"\ntype = "entra_id"\nru_per_10s = {int(dir_per_10s)}\n{common}\n'
        f'[[connector]]\nid = "m365-files"\ntype = "m365_files"\nru_per_minute = {int(sp_per_min)}\n{common}',
        encoding="utf-8")
    return work / "config" / "shoseki.toml"






def measure(users: int, latency_ms: float, scale: float) -> dict:
    sp_per_min = sharepoint_budget(users) * scale
    dir_per_10s = 3500 * scale
    with tempfile.TemporaryDirectory(prefix="shoseki-bench-ms-") as tmp:
        work = Path(tmp)
        proc, e = start_sandbox(users, work / "sandbox", "--no-aws", "--no-google")
        admin = Admin(e)
        try:
            org = Org(e["organization"]["seed"], users)
            config = write_config(work, e, work / "vault", sp_per_min, dir_per_10s)
            out: dict = {"users": users, "sharepoint_ru_per_minute": sp_per_min, "identity_ru_per_10s": dir_per_10s}
            bounds = {"entra-id": entra_lower_bound(org), "m365-files": m365_lower_bound(org)}
            rates = {"entra-id": dir_per_10s / 10, "m365-files": sp_per_min / 60}
            for phase in ("full", "incremental"):
                if phase == "incremental":
                    admin.mutate(org)
                for connector in ("entra-id", "m365-files"):
                    admin.stats(reset=True)
                    admin.conditions(latency_ms, sp_per_min, dir_per_10s)
                    child = collect(config, connector)
                    s = admin.stats()
                    run = last_run(work / "vault", connector, child)
                    ru = s["total_units"]
                    row = {**child, "status": run["status"], "mode": run["mode"], "ru": ru, "requests": s["total_calls"],
                           "throttled": sum(s["throttled"].values()), "duration_s": run.get("duration_s"),
                           "calls": s["calls"]}
                    if phase == "full":
                        bound_time = ru / rates[connector]
                        if connector == "entra-id":
                            bound_time = max(bound_time, entra_rate_bound_s(org))
                        row.update(lower_bound_ru=bounds[connector], ru_ratio=round(ru / bounds[connector], 3),
                                   ru_bound_s=round(bound_time, 2),
                                   time_ratio=round(child["wall_s"] / bound_time, 3) if bound_time else None)
                    else:
                        row["fraction_of_full"] = round(ru / out[f"{connector}:full"]["ru"], 3)
                    out[f"{connector}:{phase}"] = row
            return out
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100,1000")
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--budget-scale", type=float, default=10.0, help="multiply the documented RU budgets (both sides)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    results = []
    for size in [int(s) for s in args.sizes.split(",")]:
        r = measure(size, args.latency_ms, args.budget_scale)
        results.append(r)
        for key, x in r.items():
            if not isinstance(x, dict):
                continue
            line = (f"{size:>6} users  {key:<24} {x['status']:<8} {x['mode']:<11} wall {x['wall_s']:>7.1f}s  "
                    f"RU {x['ru']:>7.0f}  requests {x['requests']:>6}  throttled {x['throttled']}  ")
            if "ru_ratio" in x:
                line += f"RU/bound {x['ru_ratio']:.3f} ({x['lower_bound_ru']})  time/RU-bound {x['time_ratio']:.2f} ({x['ru_bound_s']:.1f}s)  "
            else:
                line += f"fraction of full {x['fraction_of_full']:.3f}  "
            print(line + f"peak RSS {x['peak_rss_mb']:.0f} MB", flush=True)
            if x.get("stderr_tail"):
                print("   ", x["stderr_tail"])
    if args.json:
        args.json.write_text(json.dumps({"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                                         "latency_ms": args.latency_ms, "budget_scale": args.budget_scale,
                                         "results": results}, indent=2))


if __name__ == "__main__":
    main()

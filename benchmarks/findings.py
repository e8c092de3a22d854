"""Benchmark of the judging step (``evidence.findings``) on a large synthetic tenant.

Usage::

    python benchmarks/findings.py [--users 10000] [--grants 1000000] [--json out.json] [--keep DIR] [--trace]
                                [--register-everything]

What it does (in a temporary folder under $TMPDIR or /tmp, removed at the end unless ``--keep``):

1. **Vault.** Seals two real bags with :class:`evidence.bundle.BundleWriter` (records made by the
   builders of :mod:`evidence.model`), as a ``google_directory`` and a ``google_drive`` run would:

   * directory (``google-directory``): ``--users`` users ``user:<email>`` (enabled, mfa, admin,
     last sign-in, created; three super admins; a few suspended, a few without MFA, a few
     inactive), the tenant resource with the admins' role grants, ``users / 50`` groups (each
     user in three) with their memberships, an ``hr`` group, a nested group and a few approved
     contractor members (listed as external principals, as the connector does);
   * drive (``google-drive``), about ``--grants`` grants: ``users / 100`` shared drives (two
     organizers each as owner grants; one in ten has a single organizer, one in ten only a
     suspended one; one in ten has a member of an unapproved domain; one in five has a folder
     shared with anyone whose children inherit the link), their files with the drive's members as
     inherited grants (~30 % of the grants); then My Drive files, one in two private (owner only),
     the others shared with six more grants: mostly internal users, plus planted fractions (per
     shared slot) of anyone links (1/200), shares to an unapproved domain (1/200), to an approved
     contractor without expiry (1/200) or with one (1/200), expired unapproved shares (1/200, not
     judged), anyone links inherited from a folder (1/200, not judged), domain links (1/200) and
     shares to a contractor whose contract ended (1/1000).

   and the context beside a main config that loads without network (``contractors.toml``, a
   ``roster.csv`` of every user with a few leavers whose accounts are still enabled and a few
   users missing, a ``register.toml`` entry on one shared drive; the Google connectors point at
   ``http://127.0.0.1:9/`` with a dummy key file).
2. **Judging.** A child process loads the config and the context, then ``select_bundles`` (which
   verifies each bag's record files against its manifests) → ``assess`` → drains
   ``iter_accounts`` and ``iter_sharing``; the control catalogue is
   ``evidence.controls.load_catalogue(None)`` when that module exists, else a stub mapping every
   rule to no control (the ``catalogue`` figure says which). Measured: wall time per phase, the
   child's peak RSS (``ru_maxrss`` from ``os.wait4``) and the peak reached by the end of each
   phase, findings by rule, rows of both tables, and the sizes of what ``assess`` keeps per bag
   for its pass over grants (``_SourceState``: counted by wrapping ``_judge_grants``, read only).
   The counts of the planted findings (``public_share``, ``unapproved_domain``,
   ``share_without_expiry``, ``leaver_enabled``, and ``contractor_after_end``,
   ``leaver_owns_shared``, ``single_owner``, ``leaver_only_owner``, ``account_without_mfa``,
   ``inactive_account``, ``not_on_roster``) and of sharing rows are checked against what was
   planted: the exit code is non-zero if any differs. Aim: peak RSS under 300 MB at 1M grants
   (DESIGN.md's aim for collection is < 200 MB at 1M grants; both are reported).

``--register-everything`` adds a second register entry whose location is the whole drive connector
(no narrowing), so that every drive resource matches a register location.

``--trace`` runs the child under ``tracemalloc`` (far slower and bigger — about ten minutes at 1M
grants —, so its times and RSS are not the benchmark's) and prints the Python heap peak per phase
and the largest allocation sites (each block charged to the innermost line of this project, so a
string ``json.loads`` made counts where it was kept) at the end of each bag's pass over grants
and at the first sharing row, to find what grows with the tenant.

Output: one line per figure; ``--json FILE`` writes them as JSON too.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from evidence.bundle import BundleWriter
from evidence.model import Grant, Membership, Principal, Record, Resource, utc_iso
from evidence.vault import Vault

AIM_RSS_MB = 300
DESIGN_RSS_MB = 200          # DESIGN.md "Performance model": collection at 1M grants
ROOT = Path(__file__).resolve().parent.parent

DOMAIN = "example.co.jp"
CONTRACTOR = "bpo.example.net"           # approved, contract running
ENDED = "vendor.example.org"             # approved, contract ended
UNAPPROVED = "freemail.example.com"      # neither internal nor approved
CUSTOMER = "C0bench01"
TENANT = f"google-workspace:{CUSTOMER}"
DIRECTORY_ID, DRIVE_ID = "google-directory", "google-drive"
TZ = ZoneInfo("Asia/Tokyo")
#: the rules whose counts the generator plants and the child checks
CHECKED = ("public_share", "unapproved_domain", "share_without_expiry", "leaver_enabled", "contractor_after_end",
           "leaver_owns_shared", "single_owner", "leaver_only_owner", "account_without_mfa", "inactive_account",
           "not_on_roster")


def email(i: int) -> str:
    return f"u{i:06d}@{DOMAIN}"


class Org:
    """Who is who in the synthetic organisation (by user index)."""

    def __init__(self, users: int):
        self.n = users

    @staticmethod
    def super_admin(i: int) -> bool:
        return i < 3

    @staticmethod
    def disabled(i: int) -> bool:          # suspended account: departed (its shared files: leaver_owns_shared)
        return i % 500 == 250

    @staticmethod
    def leaver_enabled(i: int) -> bool:    # on the roster as a leaver, account still enabled
        return i % 1000 == 333

    @staticmethod
    def leaver_disabled(i: int) -> bool:   # a leaver whose account was suspended: no leaver_enabled
        return i % 1000 == 250

    @staticmethod
    def off_roster(i: int) -> bool:
        return i % 2500 == 1234

    @staticmethod
    def no_mfa(i: int) -> bool:
        return i % 50 == 17

    @staticmethod
    def inactive(i: int) -> bool:
        return i % 100 == 42

    @staticmethod
    def hr(i: int) -> bool:
        return i % 100 == 1

    def departed(self, i: int) -> bool:
        return self.disabled(i) or self.leaver_enabled(i) or self.leaver_disabled(i)

    def staff(self, k: int) -> int:
        """The k-th user that is neither departed nor an HR member (for organizers and shares)."""
        i = k % self.n
        while self.departed(i) or self.hr(i):
            i = (i + 1) % self.n
        return i


class Writer:
    """One bag being written, counting what it holds."""

    def __init__(self, vault: Vault, run_id: str, cid: str, ctype: str, started: datetime):
        self.w = BundleWriter(vault, run_id=run_id, connector_id=cid, connector_type=ctype, started=started, tz=TZ,
                              organization="ベンチ株式会社", previous=None)
        self.counts: Counter[str] = Counter()
        self.shared_resources = 0      # resources with shared not False and a name

    def put(self, rec: Record) -> None:
        self.w.write(rec)
        self.counts[rec.stream] += 1
        if rec.stream == "resources" and rec.data.get("shared") is not False and rec.data.get("name"):
            self.shared_resources += 1

    def seal(self) -> str:
        sealed = self.w.seal(status="complete", reasons=[], finished=datetime.now(timezone.utc),
                             run_info={"mode": "full", "identity": "benchmark", "calls": {}, "retries": {},
                                       "throttled": {}, "errors": [], "errors_total": 0})
        return sealed.relpath


def user_grant(rid: str, who: str, role: str, raw: str, n: int, **extra: Any) -> Record:
    domain = who.rsplit("@", 1)[1]
    return Grant(resource_id=rid, principal_id=f"user:{who}", principal_kind="user", role=role, raw_role=raw,
                 principal_email=who, principal_domain=domain, external=domain != DOMAIN, grant_id=f"p{n:09d}",
                 **extra).record()


def group_grant(rid: str, group: str, role: str, raw: str, n: int, **extra: Any) -> Record:
    return Grant(resource_id=rid, principal_id=f"group:{group}", principal_kind="group", role=role, raw_role=raw,
                 principal_email=group, principal_domain=group.rsplit("@", 1)[1], external=False,
                 grant_id=f"p{n:09d}", **extra).record()


def anyone_grant(rid: str, n: int, role: str = "viewer", **extra: Any) -> Record:
    return Grant(resource_id=rid, principal_id="anyone", principal_kind="anyone", role=role,
                 raw_role="writer" if role == "editor" else "reader", via=extra.pop("via", "link"), link_scope="anyone",
                 grant_id=f"p{n:09d}", attributes={"discoverable": False}, **extra).record()


def write_directory(vault: Vault, org: Org, now: datetime, expected: Counter[str]) -> Writer:
    w = Writer(vault, "rbench001", DIRECTORY_ID, "google_directory", now - timedelta(minutes=30))
    groups = max(2, org.n // 50)
    n = 0
    for i in range(org.n):
        admin = org.super_admin(i) or i % 1000 == 500
        enabled = not org.disabled(i)
        mfa = admin or not org.no_mfa(i)
        last = now - timedelta(days=200 if org.inactive(i) else i % 30, hours=i % 24)
        w.put(Principal(
            id=f"user:{email(i)}", kind="user", email=email(i), display_name=f"社員 {i:06d}", domain=DOMAIN,
            external=False, enabled=enabled, mfa=mfa, admin=admin,
            roles=("Super Admin",) if org.super_admin(i) else ("Help Desk Admin",) if admin else (),
            last_sign_in=utc_iso(last), created=utc_iso(now - timedelta(days=700 + i % 300)),
            attributes={"google_id": f"1{i:020d}", "org_unit": f"/部署{i % 20:02d}", "suspended": not enabled,
                        "archived": False, "is_super_admin": org.super_admin(i), "is_delegated_admin": admin and not
                        org.super_admin(i), "mfa_enforced": False, "aliases": []},
        ).record())
        if enabled and org.leaver_enabled(i):
            expected["leaver_enabled"] += 1
        if enabled and not admin and not mfa:
            expected["account_without_mfa"] += 1
        if enabled and org.inactive(i):
            expected["inactive_account"] += 1
        if org.off_roster(i):
            expected["not_on_roster"] += 1
    for k in range(groups):
        w.put(Principal(id=f"group:g{k:04d}@{DOMAIN}", kind="group", email=f"g{k:04d}@{DOMAIN}",
                        display_name=f"グループ {k:04d}", domain=DOMAIN, external=False).record())
    for gid in ("hr", "managers"):
        w.put(Principal(id=f"group:{gid}@{DOMAIN}", kind="group", email=f"{gid}@{DOMAIN}", display_name=gid,
                        domain=DOMAIN, external=False).record())
    for k in range(3):  # approved contractors' staff in a group: principals from group membership, no finding
        w.put(Principal(id=f"user:staff{k}@{CONTRACTOR}", kind="user", email=f"staff{k}@{CONTRACTOR}",
                        domain=CONTRACTOR, external=True, attributes={"source": "group membership"}).record())
    w.put(Principal(id="role:1", kind="role", display_name="Super Admin").record())
    w.put(Resource(id=TENANT, kind="account", name="ベンチ株式会社").record())
    for i in range(org.n):
        if org.super_admin(i):
            n += 1
            w.put(user_grant(TENANT, email(i), "admin", "Super Admin", n))
    for i in range(org.n):
        mine = sorted({i % groups, (i * 7 + 3) % groups, (i * 13 + 5) % groups})
        if org.hr(i):
            mine.append(-1)
        for k in mine:
            gid = f"hr@{DOMAIN}" if k < 0 else f"g{k:04d}@{DOMAIN}"
            w.put(Membership(group_id=f"group:{gid}", member_id=f"user:{email(i)}", member_kind="user",
                             role="owner" if i % 97 == 0 else "member",
                             attributes={"type": "USER", "status": "ACTIVE", "external": False}).record())
    w.put(Membership(group_id=f"group:managers@{DOMAIN}", member_id=f"group:g0000@{DOMAIN}", member_kind="group",
                     role="member", attributes={"type": "GROUP", "external": False}).record())
    for k in range(3):
        w.put(Membership(group_id=f"group:g0001@{DOMAIN}", member_id=f"user:staff{k}@{CONTRACTOR}",
                         member_kind="user", role="member", attributes={"type": "USER", "external": True}).record())
    return w


class Drive:
    """The drive bag: shared drives first, then My Drive files until the grant budget is spent."""

    def __init__(self, vault: Vault, org: Org, now: datetime, grants: int, expected: Counter[str]):
        self.w = Writer(vault, "rbench002", DRIVE_ID, "google_drive", now - timedelta(minutes=20))
        self.org, self.now, self.budget, self.expected = org, now, grants, expected
        self.n = 0                      # grants written
        self.past = utc_iso(now - timedelta(days=10))
        self.future = utc_iso(now + timedelta(days=60))
        self.hr_drive = ""

    def grant(self, rec: Record) -> None:
        self.w.put(rec)
        self.n += 1

    def next_id(self) -> int:
        return self.n + 1

    def write(self) -> Writer:
        self.shared_drives()
        self.my_drives()
        return self.w

    def shared_drives(self) -> None:
        org, exp = self.org, self.expected
        drives = max(4, org.n // 100)
        per_drive = int(self.budget * 0.3) // drives
        suspended = [i for i in range(org.n) if org.disabled(i)]
        for d in range(drives):
            did = f"0A{d:017d}"
            if d == 0:
                self.hr_drive = did
                organizers = [i for i in range(org.n) if org.hr(i)][:2]
            elif d % 10 == 3:
                organizers = [org.staff(d * 37)]
                exp["single_owner"] += 1
            elif d % 10 == 5 and suspended:
                organizers = [suspended[d % len(suspended)]]
                exp["leaver_only_owner"] += 1
            else:
                organizers = [org.staff(d * 37), org.staff(d * 37 + 1)]
            name = "人事" if d == 0 else f"共有ドライブ {d:04d}"
            self.w.put(Resource(id=did, kind="shared_drive", name=name, owners=tuple(f"user:{email(i)}" for i in organizers),
                                web_url=f"https://drive.google.com/drive/folders/{did}",
                                attributes={"location": "shared_drive", "drive_id": did, "hidden": False,
                                            "restrictions": {}, "members": len(organizers) + 4}).record())
            members: list[tuple[str, str, str, str]] = []   # (kind, address, role, raw role) of the drive's members
            members += [("user", email(i), "owner", "organizer") for i in organizers]
            members += [("user", email(org.staff(d * 37 + 2 + k)), "editor", "writer") for k in range(2)]
            members.append(("group", f"{'hr' if d == 0 else f'g{d % max(2, org.n // 50):04d}'}@{DOMAIN}", "editor", "fileOrganizer"))
            if d % 10 == 7:
                members.append(("user", f"ext-d{d}@{UNAPPROVED}", "viewer", "reader"))
                exp["unapproved_domain"] += 1
                exp["sharing_rows"] += 1
            for kind, who, role, raw in members:  # the drive's own members: direct grants on the drive
                self.grant((user_grant if kind == "user" else group_grant)(did, who, role, raw, self.next_id()))
            files = max(1, (per_drive - len(members)) // len(members))
            public_folder = None
            if d % 5 == 1:  # a folder shared with anyone: one finding; its children's inherited links none
                public_folder = f"1o{d:031d}"
                self.drive_file(did, public_folder, "公開資料", "folder", members, shared=True)
                self.grant(anyone_grant(public_folder, self.next_id()))
                exp["public_share"] += 1
                exp["sharing_rows"] += 1
            for f in range(files):
                fid = f"1d{d:012d}{f:019d}"
                inside = public_folder is not None and f < 10
                self.drive_file(did, fid, f"資料_{d:04d}_{f:06d}.xlsx", "file", members, shared=inside,
                                parent=public_folder if inside else did)
                if inside:
                    self.grant(anyone_grant(fid, self.next_id(), via="link", inherited_from=public_folder))

    def drive_file(self, did: str, fid: str, name: str, kind: str, members: list[tuple[str, str, str, str]], *,
                   shared: bool, parent: str | None = None) -> None:
        self.w.put(Resource(id=fid, kind=kind, name=name, owners=(f"shared_drive:{did}",), size=20_000 + len(name),
                            modified=utc_iso(self.now - timedelta(days=3)), shared=shared,
                            web_url=f"https://docs.google.com/spreadsheets/d/{fid}",
                            attributes={"location": "shared_drive", "drive_id": did, "mime_type": "application/vnd.ms-excel",
                                        "parents": [parent or did], "has_augmented_permissions": shared,
                                        "inherited_permissions_disabled": False}).record())
        for mkind, who, role, raw in members:
            self.grant((user_grant if mkind == "user" else group_grant)(
                fid, who, role, raw, self.next_id(), via="inherited", inherited_from=did))

    def my_drives(self) -> None:
        org, exp = self.org, self.expected
        f = 0
        j = 0   # shared slot counter: what the planted fractions count
        while self.n < self.budget:
            owner = f % org.n
            fid = f"1f{f:031d}"
            shared = f % 2 == 1
            self.w.put(Resource(id=fid, kind="file", name=f"議事録_{f:07d}.docx", owners=(f"user:{email(owner)}",),
                                size=10_000 + f % 5000, modified=utc_iso(self.now - timedelta(days=f % 400)),
                                shared=shared, web_url=f"https://docs.google.com/document/d/{fid}",
                                attributes={"location": "my_drive", "owner_email": email(owner),
                                            "mime_type": "application/vnd.google-apps.document",
                                            "parents": [f"0root{owner:06d}"]}).record())
            self.grant(user_grant(fid, email(owner), "owner", "owner", self.next_id()))
            if shared:
                if org.departed(owner):
                    exp["leaver_owns_shared"] += 1
                for slot in range(6):
                    self.shared_slot(fid, owner, f, slot, j)
                    j += 1
            f += 1

    def shared_slot(self, fid: str, owner: int, f: int, slot: int, j: int) -> None:
        exp, m = self.expected, j % 200
        if j % 1000 == 7:
            self.grant(user_grant(fid, f"c{j % 40}@{ENDED}", "editor", "writer", self.next_id()))
            exp["contractor_after_end"] += 1
            exp["sharing_rows"] += 1
        elif m == 0:
            self.grant(anyone_grant(fid, self.next_id(), role="editor" if j % 1000 == 0 else "viewer"))
            exp["public_share"] += 1
            exp["public_share_critical"] += j % 1000 == 0
            exp["sharing_rows"] += 1
        elif m == 1:
            self.grant(user_grant(fid, f"x{j}@{UNAPPROVED}", "viewer", "reader", self.next_id()))
            exp["unapproved_domain"] += 1
            exp["sharing_rows"] += 1
        elif m == 2:
            self.grant(user_grant(fid, f"c{j % 40}@{CONTRACTOR}", "editor", "writer", self.next_id()))
            exp["share_without_expiry"] += 1
            exp["sharing_rows"] += 1
        elif m == 3:
            self.grant(user_grant(fid, f"c{j % 40}@{CONTRACTOR}", "viewer", "reader", self.next_id(), expiry=self.future))
            exp["sharing_rows"] += 1
        elif m == 4:  # expired: gives no access, not judged, no sharing row
            self.grant(user_grant(fid, f"y{j}@{UNAPPROVED}", "viewer", "reader", self.next_id(), expiry=self.past))
        elif m == 5:  # inherited from the parent folder: judged there, not here
            self.grant(anyone_grant(fid, self.next_id(), inherited_from=f"0fold{owner:06d}"))
        elif m == 6:
            self.grant(Grant(resource_id=fid, principal_id=f"domain:{DOMAIN}", principal_kind="domain", role="viewer",
                             raw_role="reader", via="link", principal_domain=DOMAIN, external=False,
                             link_scope="organization", grant_id=f"p{self.next_id():09d}").record())
            exp["sharing_rows"] += 1
        else:
            who = self.org.staff(f * 31 + slot * 7 + 1)
            if who == owner:
                who = self.org.staff(who + 1)
            role, raw = ("editor", "writer") if j % 3 == 0 else ("viewer", "reader")
            self.grant(user_grant(fid, email(who), role, raw, self.next_id()))


def write_context(config_dir: Path, org: Org, vault: Path, hr_drive: str, register_everything: bool) -> None:
    today = datetime.now(timezone.utc).astimezone(TZ).date()
    (config_dir / "connectors").mkdir(parents=True)
    key = config_dir / "dummy-key.json"
    key.write_text("{}\n", encoding="utf-8")
    (config_dir / "shoseki.toml").write_text(
        '[organization]\nname = "ベンチ株式会社"\ndomains = ["example.co.jp"]\ntimezone = "Asia/Tokyo"\n\n'
        f"[vault]\npath = {json.dumps(str(vault))}\n", encoding="utf-8")
    for cid, ctype in ((DIRECTORY_ID, "google_directory"), (DRIVE_ID, "google_drive")):
        (config_dir / "connectors" / f"{cid}.toml").write_text(
            f'[[connector]]\nid = "{cid}"\ntype = "{ctype}"\nservice_account_key_file = {json.dumps(str(key))}\n'
            f'admin_subject = "{email(0)}"\ncustomer = "{CUSTOMER}"\nroot_url = "http://127.0.0.1:9/"\n', encoding="utf-8")
    (config_dir / "contractors.toml").write_text(
        f'[[contractor]]\nname = "BPO 株式会社"\ndomains = ["{CONTRACTOR}"]\npurpose = "給与計算"\n'
        f'contract_end = {(today + timedelta(days=365)).isoformat()}\nresponsible = "{email(1)}"\n\n'
        f'[[contractor]]\nname = "ベンダー"\ndomains = ["{ENDED}"]\npurpose = "開発"\n'
        f'contract_end = {(today - timedelta(days=30)).isoformat()}\nresponsible = "{email(1)}"\n', encoding="utf-8")
    (config_dir / "register.toml").write_text(
        f'[[entry]]\nname = "人事情報"\nlocations = [{{ connector = "{DRIVE_ID}", resource_prefix = "{hr_drive}" }}]\n'
        f'allowed = ["group:hr@{DOMAIN}"]\nresponsible = "{email(1)}"\n'
        + (f'\n[[entry]]\nname = "顧客情報"\nlocations = [{{ connector = "{DRIVE_ID}" }}]\n'
           f'allowed = ["group:managers@{DOMAIN}"]\nresponsible = "{email(1)}"\n' if register_everything else ""),
        encoding="utf-8")
    with open(config_dir / "roster.csv", "w", encoding="utf-8", newline="") as out:
        rows = csv.writer(out)
        rows.writerow(("email", "name", "department", "manager", "status", "start", "end"))
        for i in range(org.n):
            if org.off_roster(i):
                continue
            leaver = org.leaver_enabled(i) or org.leaver_disabled(i)
            rows.writerow((email(i), f"社員 {i:06d}", f"部署{i % 20:02d}", "", "leaver" if leaver else "active",
                           "2020-04-01", (today - timedelta(days=20)).isoformat() if leaver else ""))


def generate(root: Path, users: int, grants: int, register_everything: bool = False) -> tuple[dict[str, Any], Counter[str]]:
    """The vault and config under ``root``; returns what the bags hold and the planted counts."""
    now = datetime.now(timezone.utc)
    org = Org(users)
    vault = Vault(root / "vault").ensure()
    expected: Counter[str] = Counter()
    directory = write_directory(vault, org, now, expected)
    dir_bag = directory.seal()
    drive = Drive(vault, org, now, grants, expected)
    dw = drive.write()
    drive_bag = dw.seal()
    write_context(root / "config", org, root / "vault", drive.hr_drive, register_everything)
    sizes = {}
    for bag in (dir_bag, drive_bag):
        sizes[bag] = sum(p.stat().st_size for p in (root / "vault" / bag / "data" / "records").iterdir())
    info = {"directory": dict(directory.counts), "drive": dict(dw.counts), "drive_shared_resources": dw.shared_resources,
            "records_gz_mb": {b.split("/")[-1]: s / 1e6 for b, s in sizes.items()}}
    return info, expected


CHILD = r"""
import json, resource, sys, time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

TRACE = sys.argv[2] == "trace"
if TRACE:
    import tracemalloc
    tracemalloc.start(6)

def peak_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20

def top(label, n=8):
    # each block is charged to the innermost frame of this project (a json.loads string to the line
    # that called it), so that what a dict holds counts where the dict is filled
    sites = {}
    for tr in tracemalloc.take_snapshot().traces:
        for frame in reversed(tr.traceback):  # a Traceback runs oldest first
            if "/evidence/" in frame.filename or "/collector/" in frame.filename:
                key = "/".join(frame.filename.rsplit("/", 2)[-2:]) + f":{frame.lineno}"
                size, count = sites.get(key, (0, 0))
                sites[key] = (size + tr.size, count + 1)
                break
    best = sorted(sites.items(), key=lambda kv: -kv[1][0])[:n]
    out["trace_sites"][label] = [{"site": k, "mb": round(v[0] / 2**20, 2), "blocks": v[1]} for k, v in best]

out = {"phases": {}, "state": {}, "trace_sites": {}}
t0 = time.perf_counter()
from collector.config import load_config
from collector.context import load_context
from evidence.findings import assess, iter_accounts, iter_sharing, select_bundles, settings_from_config
A = sys.modules["evidence.findings.assess"]  # the package's `assess` attribute is the function
from evidence.vault import Vault
try:
    from evidence.controls import load_catalogue
    catalogue = load_catalogue(None)
    out["catalogue"] = "evidence.controls.load_catalogue(None)"
except ImportError:
    class _NoControls:
        def controls_for(self, rule):
            return ()
    catalogue = _NoControls()
    out["catalogue"] = "stub (no evidence.controls): controls_for(rule) -> ()"

# read-only probe: the sizes of what assess keeps per bag for its pass over grants
_judge = A._judge_grants
def _judge_probe(source, state, world, accessors):
    yield from _judge(source, state, world, accessors)
    reg_bytes = sys.getsizeof(state.register) + sum(sys.getsizeof(k) for k in state.register) + sum(
        sys.getsizeof(v) + sum(sys.getsizeof(t) for t in v) for v in {id(v): v for v in state.register.values()}.values())
    out["state"][source.id] = {
        "register": len(state.register), "register_mb": round(reg_bytes / 2**20, 2),
        "locations": len(state.locations), "owner_grants": sum(len(v) for v in state.owner_grants.values()),
        "departed_owned": len(state.departed_owned), "shared_departed": len(state.shared_departed),
        "accessors": sum(len(v) for v in accessors.values())}
    if TRACE:
        top(f"end of grants of {source.id}")
A._judge_grants = _judge_probe

def phase(name, started):
    p = {"s": round(time.perf_counter() - started, 3), "peak_rss_mb": round(peak_mb(), 1), "rss_mb": round(rss_mb(), 1)}
    if TRACE:
        cur, pk = tracemalloc.get_traced_memory()
        p.update(py_heap_mb=round(cur / 2**20, 1), py_heap_peak_mb=round(pk / 2**20, 1))
        tracemalloc.reset_peak()
    out["phases"][name] = p

config = load_config(Path(sys.argv[1]))
context = load_context(config.path.parent, connector_ids={c.id for c in config.connectors})
vault = Vault(config.vault_path)
o = config.main.organization
phase("load", t0)

as_of = datetime.now(timezone.utc)
t = time.perf_counter()
bundles = select_bundles(vault, config.connectors, as_of)
phase("select", t)
out["bundles"] = [{"id": b.connector_id, "type": b.connector_type, "status": b.status, "freshness": b.freshness} for b in bundles]

t = time.perf_counter()
assessment = assess(vault, bundles, context, as_of=as_of, settings=settings_from_config(config), catalogue=catalogue,
                    organization=o.name, domains=o.domains)
phase("assess", t)
rules = Counter(f.rule for f in assessment.findings)
out["findings"] = dict(sorted(rules.items()))
out["findings_total"] = len(assessment.findings)
out["public_share_critical"] = sum(1 for f in assessment.findings if f.rule == "public_share" and f.severity == "critical")
out["privileged"] = len(assessment.privileged)
out["register_accessors"] = sum(len(r.accessors) for r in assessment.register)

t = time.perf_counter()
accounts = sum(1 for _ in iter_accounts(vault, bundles, context))
phase("accounts", t)
out["account_rows"] = accounts

t = time.perf_counter()
rows = 0
audiences = Counter()
for row in iter_sharing(vault, bundles, context, as_of=as_of, domains=o.domains):
    if rows == 0 and TRACE:
        top("first sharing row")
    rows += 1
    audiences[row["audience"]] += 1
phase("sharing", t)
out["sharing_rows"] = rows
out["sharing_audiences"] = dict(sorted(audiences.items()))
out["child_s"] = round(time.perf_counter() - t0, 3)
print(json.dumps(out))
"""


def run_child(config: Path, trace: bool) -> dict[str, Any]:
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(config), "trace" if trace else "plain"],
                            stdout=subprocess.PIPE, cwd=ROOT)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    if code:
        sys.exit(f"the judging child failed (exit code {code})")
    result = json.loads(out)
    result.update(wall_s=wall, maxrss_mb=usage.ru_maxrss / 1024)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--users", type=int, default=10_000, help="users of the directory (default 10,000)")
    parser.add_argument("--grants", type=int, default=1_000_000, help="grants of the drive bag (default 1,000,000)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write every figure as JSON to FILE")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="write the vault and config to DIR and keep them")
    parser.add_argument("--register-everything", action="store_true",
                        help="add a register entry covering the whole drive connector")
    parser.add_argument("--trace", action="store_true", help="run the child under tracemalloc (times and RSS not representative)")
    args = parser.parse_args()
    if args.users < 500:
        parser.error("--users must be at least 500 (the planted fractions need them)")
    root = Path(tempfile.mkdtemp(prefix="shoseki-bench-findings-")) if args.keep is None else args.keep
    root.mkdir(parents=True, exist_ok=True)
    try:
        t = time.perf_counter()
        info, expected = generate(root, args.users, args.grants, args.register_everything)
        generate_s = time.perf_counter() - t
        r = run_child(root / "config" / "shoseki.toml", args.trace)
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    found = r["findings"]
    mismatches = {rule: {"planted": expected[rule], "found": found.get(rule, 0)}
                  for rule in CHECKED if found.get(rule, 0) != expected[rule]}
    if r["sharing_rows"] != expected["sharing_rows"]:
        mismatches["sharing_rows"] = {"planted": expected["sharing_rows"], "found": r["sharing_rows"]}
    if r["public_share_critical"] != expected["public_share_critical"]:
        mismatches["public_share_critical"] = {"planted": expected["public_share_critical"], "found": r["public_share_critical"]}
    ph = r["phases"]
    figures: dict[str, Any] = {
        "users": args.users,
        "grants": info["drive"].get("grants", 0) + info["directory"].get("grants", 0),
        "drive_resources": info["drive"].get("resources", 0),
        "drive_shared_resources": info["drive_shared_resources"],
        "memberships": info["directory"].get("memberships", 0),
        "records_gz_mb": round(sum(info["records_gz_mb"].values()), 2),
        "generate_s": generate_s,
        "catalogue": r["catalogue"],
        "register_everything": args.register_everything,
        "load_s": ph["load"]["s"],
        "select_s": ph["select"]["s"],
        "assess_s": ph["assess"]["s"],
        "accounts_s": ph["accounts"]["s"],
        "sharing_s": ph["sharing"]["s"],
        "judge_wall_s": r["wall_s"],
        "grants_per_s_assess": round(info["drive"].get("grants", 0) / max(ph["assess"]["s"], 1e-9)),
        "peak_rss_mb": r["maxrss_mb"],
        **{f"peak_rss_mb_after_{name}": p["peak_rss_mb"] for name, p in ph.items()},
        **{f"rss_mb_after_{name}": p["rss_mb"] for name, p in ph.items()},
        **({f"py_heap_peak_mb_{name}": p["py_heap_peak_mb"] for name, p in ph.items()} if args.trace else {}),
        "findings_total": r["findings_total"],
        **{f"findings_{rule}": n for rule, n in r["findings"].items()},
        "account_rows": r["account_rows"],
        "sharing_rows": r["sharing_rows"],
        **{f"state_{cid}_{k}": v for cid, s in r["state"].items() for k, v in s.items()},
        "counts_as_planted": not mismatches,
        "rss_under_aim": r["maxrss_mb"] < AIM_RSS_MB,
        "rss_under_design_aim": r["maxrss_mb"] < DESIGN_RSS_MB,
    }
    for name, value in figures.items():
        print(f"{name}: {value:.2f}" if isinstance(value, float) else f"{name}: {value}")
    for label, sites in r["trace_sites"].items():
        print(f"largest allocation sites at {label}:")
        for s in sites:
            print(f"  {s['site']}: {s['mb']:.2f} MB in {s['blocks']} blocks")
    for rule, m in mismatches.items():
        print(f"MISMATCH {rule}: planted {m['planted']}, found {m['found']}")
    if args.json:
        out = {**figures, "expected": dict(expected), "mismatches": mismatches, "phases": ph, "state": r["state"],
               "trace_sites": r["trace_sites"], "bundles": r["bundles"], "sharing_audiences": r["sharing_audiences"],
               "bag_counts": {"directory": info["directory"], "drive": info["drive"]},
               "aim_rss_mb": AIM_RSS_MB, "design_rss_mb": DESIGN_RSS_MB, "python": sys.version.split()[0],
               "machine": platform.platform(), "cpus": os.cpu_count()}
        args.json.write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if mismatches:
        sys.exit("the findings differ from those planted")


if __name__ == "__main__":
    main()

"""The synthetic organisation every stand-in serves: deterministic from a seed and a size.

Nothing is stored per person or per file: person ``i``, file ``j`` of person ``i``, shared
drive ``d`` … are computed on demand from ``(seed, kind, index)``, so a 100k-user tenant with
millions of files costs no memory. Only *mutations* (tests share, unshare, disable a user …)
are stored, as a small overlay with a change log that the changes/delta feeds read.

The same people appear in Google Workspace, Entra ID and AWS IAM (engineering and IT staff),
with the things findings must catch planted on purpose at fixed indices (so small tenants have
every kind) and sprinkled at random rates (so large tenants look real). :meth:`Org.truth`
walks everything once and lists every planted problem in source terms.

Reference time: generated timestamps are relative to :data:`REFERENCE_TIME`, not the clock,
so the same seed gives the same bytes on any day.
"""

from __future__ import annotations

import hashlib
import random
import threading
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from typing import Any, Iterator

REFERENCE_TIME = datetime(2026, 11, 1, 0, 0, tzinfo=timezone.utc)
SIZES = {"small": 20, "medium": 500, "large": 100_000}
FILES_PER_USER = 8  # average My Drive / OneDrive files per person
FILES_PER_DRIVE = 20  # average files per shared drive / SharePoint library

DOMAIN = "example.co.jp"
AWS_ACCOUNT_ID = "111122223333"


@dataclass(frozen=True)
class Department:
    key: str
    name_ja: str
    name_en: str


DEPARTMENTS = (
    Department("soumu", "総務部", "General Affairs"),
    Department("jinji", "人事部", "Human Resources"),
    Department("keiri", "経理部", "Finance"),
    Department("eigyo", "営業部", "Sales"),
    Department("kaihatsu", "開発部", "Engineering"),
    Department("jousys", "情報システム部", "IT"),
)
AWS_DEPARTMENTS = ("kaihatsu", "jousys")


@dataclass(frozen=True)
class Partner:
    key: str
    name: str
    domain: str
    approved: bool
    contract_end: date | None
    purpose: str
    aws_account_id: str | None = None


PARTNERS = (
    Partner("bpo", "株式会社BPOサービス (BPO Service K.K.)", "bpo.example.net", True, date(2027, 3, 31), "給与計算の委託 / payroll processing", None),
    Partner("vendor", "開発ベンダー株式会社 (Dev Vendor Co.)", "vendor.example.org", True, date(2026, 9, 30), "システム開発の委託 / system development", "444455556666"),
    Partner("freemail", "(未承認 / not approved)", "freemail.example.com", False, None, "", None),
)

FAMILY = ("sato", "suzuki", "takahashi", "tanaka", "ito", "watanabe", "yamamoto", "nakamura", "kobayashi", "kato",
          "yoshida", "yamada", "sasaki", "yamaguchi", "matsumoto", "inoue", "kimura", "hayashi", "shimizu", "mori")
FAMILY_JA = ("佐藤", "鈴木", "高橋", "田中", "伊藤", "渡辺", "山本", "中村", "小林", "加藤",
             "吉田", "山田", "佐々木", "山口", "松本", "井上", "木村", "林", "清水", "森")
GIVEN = ("hiroshi", "yuki", "akira", "kenta", "haruka", "misaki", "daiki", "aoi", "ren", "sakura",
         "takumi", "yui", "sota", "hina", "riku", "mei", "kaito", "rin", "yuto", "saki")
GIVEN_JA = ("浩", "由紀", "明", "健太", "遥", "美咲", "大輝", "葵", "蓮", "さくら",
            "拓海", "結衣", "颯太", "陽菜", "陸", "芽衣", "海斗", "凛", "悠斗", "咲")


def _rng(seed: int, *parts: Any) -> random.Random:
    digest = hashlib.blake2b(":".join(map(str, (seed, *parts))).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "little"))


def iso(t: datetime | None) -> str | None:
    return None if t is None else t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


@dataclass(frozen=True)
class Person:
    """An account holder of the organisation (employee or a contractor with an org account)."""

    index: int
    uid: str                      # stable opaque id shared by every provider ("p000042")
    family: str
    given: str
    name_ja: str
    email: str
    department: Department
    manager: int | None           # index of the manager (None for department heads)
    status: str                   # active | leaver | contractor
    partner: str | None           # partner key for contractors
    start: date
    end: date | None              # leavers: the day they left; contractors: contract end
    suspended: bool               # Google suspended / Entra accountEnabled=false
    admin: bool                   # super admin / Global Administrator
    delegated_admin: bool
    mfa: bool
    last_login: datetime | None
    created: datetime
    aws: bool                     # has an IAM user

    @property
    def display_name(self) -> str:
        return f"{self.given.capitalize()} {self.family.capitalize()}"


@dataclass(frozen=True)
class Guest:
    """An external identity (B2B guest / external group member) from a partner domain."""

    index: int
    uid: str
    email: str
    display_name: str
    partner: Partner
    invited_by: int | None        # sponsor (person index) or None
    last_login: datetime | None
    created: datetime
    state: str                    # PendingAcceptance | Accepted


@dataclass(frozen=True)
class Group:
    key: str                      # stable id suffix
    email: str
    name: str
    kind: str                     # department | project | all | partner
    department: Department | None = None


@dataclass(frozen=True)
class Share:
    """One permission on a file, in provider-neutral terms."""

    id: str
    type: str                     # user | group | domain | anyone
    role: str                     # owner | writer | commenter | reader
    email: str | None = None
    domain: str | None = None
    expiration: datetime | None = None
    discoverable: bool = False    # Google allowFileDiscovery for domain/anyone
    deleted: bool = False         # the account behind it was deleted


@dataclass(frozen=True)
class File:
    id: str
    name: str
    owner: int | None             # person index (My Drive / OneDrive); None for shared drives
    drive: int | None             # shared drive index
    folder: bool
    size: int
    modified: datetime
    shares: tuple[Share, ...]     # permissions beyond the owner (My Drive) / the drive (shared)
    parent: str | None = None


@dataclass(frozen=True)
class SharedDrive:
    index: int
    id: str
    name: str
    department: Department
    members: tuple[Share, ...]    # drive-level permissions (organizer/fileOrganizer/writer/…)
    files: int


@dataclass
class Overlay:
    """Mutations since start; the only state that grows, and only with what tests change."""

    people: dict[int, dict[str, Any]] = field(default_factory=dict)
    file_shares: dict[str, tuple[Share, ...]] = field(default_factory=dict)
    removed_files: set[str] = field(default_factory=set)
    group_added: dict[str, set[str]] = field(default_factory=dict)
    group_removed: dict[str, set[str]] = field(default_factory=dict)
    changes: list[dict[str, Any]] = field(default_factory=list)


class Org:
    def __init__(self, seed: int = 1, users: int | str = "small", *, files_per_user: int = FILES_PER_USER):
        self.seed = seed
        self.files_per_user = files_per_user  # average My Drive / OneDrive files; 10M files = 100k users × 100
        self.n = SIZES[users] if isinstance(users, str) else int(users)
        if self.n < 10:
            raise ValueError("the sandbox organisation needs at least 10 users")
        self.domain = DOMAIN
        self.partners = PARTNERS
        self.n_guests = max(4, self.n // 25)
        self.n_drives = max(3, self.n // 40)
        self.n_projects = max(2, self.n // 100)
        self.overlay = Overlay()
        self._lock = threading.Lock()
        self.person = lru_cache(maxsize=4096)(self._person)

    # -- people ---------------------------------------------------------------------------
    def _person(self, i: int) -> Person:
        if not 0 <= i < self.n:
            raise IndexError(i)
        r = _rng(self.seed, "person", i)
        fam, giv = r.randrange(len(FAMILY)), r.randrange(len(GIVEN))
        dept = DEPARTMENTS[i % len(DEPARTMENTS)]
        head = i % len(DEPARTMENTS)
        manager = None if i == head else head
        created = REFERENCE_TIME - timedelta(days=r.randint(30, 3000))
        # status: planted at fixed indices, then random rates
        status, partner, end, suspended = "active", None, None, False
        if i in (3, 9) or (i > 20 and r.random() < 0.03):
            status, end = "leaver", (REFERENCE_TIME - timedelta(days=r.randint(10, 200))).date()
            suspended = i == 9 or (i > 20 and r.random() < 0.5)  # 3 stays enabled: planted
        elif i in (4, 11) or (i > 20 and r.random() < 0.08):
            status, partner = "contractor", ("bpo" if i == 4 or (i != 11 and r.random() < 0.6) else "vendor")
            end = next(p.contract_end for p in PARTNERS if p.key == partner)
        admin = i in (0, 1) or (i > 20 and r.random() < 0.01)
        mfa = i != 1 and i != 5 and (i < 20 or r.random() < 0.85)  # 1: admin without MFA
        if i == 7 or (i > 20 and r.random() < 0.05):
            last = REFERENCE_TIME - timedelta(days=r.randint(120, 400))  # inactive
        elif i == 8 or (i > 20 and r.random() < 0.02):
            last = None  # never signed in
        else:
            last = REFERENCE_TIME - timedelta(hours=r.randint(1, 24 * 20))
        email = f"{GIVEN[giv]}.{FAMILY[fam]}{i}@{self.domain}"
        person = Person(
            index=i, uid=f"p{i:06d}", family=FAMILY[fam], given=GIVEN[giv],
            name_ja=f"{FAMILY_JA[fam]} {GIVEN_JA[giv]}", email=email, department=dept, manager=manager,
            status=status, partner=partner, start=created.date(), end=end, suspended=suspended,
            admin=admin, delegated_admin=(i == 2), mfa=mfa, last_login=last, created=created,
            aws=dept.key in AWS_DEPARTMENTS or i in (0, 1, 9),  # 9: a leaver whose IAM user was forgotten
        )
        override = self.overlay.people.get(i)
        return replace(person, **override) if override else person

    def people(self) -> Iterator[Person]:
        for i in range(self.n):
            yield self.person(i)

    def person_by_email(self, email: str) -> Person | None:
        local = email.split("@", 1)[0]
        digits = "".join(ch for ch in local.split(".")[-1] if ch.isdigit())
        if not digits:
            return None
        i = int(digits)
        if i < self.n and self.person(i).email.lower() == email.lower():
            return self.person(i)
        return None

    # -- guests ---------------------------------------------------------------------------
    @lru_cache(maxsize=1024)
    def guest(self, g: int) -> Guest:
        r = _rng(self.seed, "guest", g)
        if g < 4:  # 0: unapproved domain, 1 and 3: the BPO, 2: the vendor
            partner = (PARTNERS[2], PARTNERS[0], PARTNERS[1], PARTNERS[0])[g]
        else:
            x = r.random()
            partner = PARTNERS[0] if x < 0.5 else PARTNERS[1] if x < 0.95 else PARTNERS[2]
        fam, giv = r.randrange(len(FAMILY)), r.randrange(len(GIVEN))
        last = None if g in (0, 3) else REFERENCE_TIME - timedelta(days=r.randint(1, 300))
        return Guest(
            index=g, uid=f"g{g:06d}", email=f"{GIVEN[giv]}.{FAMILY[fam]}{g}@{partner.domain}",
            display_name=f"{GIVEN[giv].capitalize()} {FAMILY[fam].capitalize()} ({partner.key})",
            partner=partner, invited_by=None if g == 3 else (g * 7) % self.n, last_login=last,
            created=REFERENCE_TIME - timedelta(days=r.randint(20, 600)),
            state="PendingAcceptance" if g == 0 else "Accepted",
        )

    def guests(self) -> Iterator[Guest]:
        for g in range(self.n_guests):
            yield self.guest(g)

    def guest_by_email(self, email: str) -> Guest | None:
        """The guest with that address (case-insensitive): like people's, it ends in the index."""
        local = email.split("@", 1)[0]
        digits = ""
        for ch in reversed(local):
            if not ch.isdigit():
                break
            digits = ch + digits
        if not digits:
            return None
        g = int(digits)
        if g < self.n_guests and self.guest(g).email.lower() == email.lower():
            return self.guest(g)
        return None

    # -- groups ---------------------------------------------------------------------------
    def groups(self) -> Iterator[Group]:
        yield Group("all", f"all-staff@{self.domain}", "全社員 / All staff", "all")
        for d in DEPARTMENTS:
            yield Group(f"dept-{d.key}", f"{d.key}@{self.domain}", f"{d.name_ja} / {d.name_en}", "department", d)
        for p in range(self.n_projects):
            yield Group(f"proj-{p}", f"project-{p}@{self.domain}", f"プロジェクト{p} / Project {p}", "project")
        yield Group("partners", f"partner-collab@{self.domain}", "委託先連携 / Partner collaboration", "partner")

    def group(self, key: str) -> Group:
        for g in self.groups():
            if g.key == key:
                return g
        raise KeyError(key)

    def group_members(self, group: Group) -> Iterator[tuple[str, str]]:
        """``(email, role)`` of each direct member: role OWNER | MANAGER | MEMBER."""
        for _pos, email, role in self.group_members_from(group, 0):
            yield email, role

    def group_members_from(self, group: Group, start: int) -> Iterator[tuple[int, str, str]]:
        """``(position, email, role)`` of the rows of :meth:`group_members` from position ``start``
        on: the base members not removed, then the added ones (sorted). Base rows are index
        arithmetic and removed members are located by address, so no row before ``start`` is
        walked: paging a 100k-member group stays linear."""
        added = self.overlay.group_added.get(group.key, set())
        removed = self.overlay.group_removed.get(group.key, set())
        gone = sorted({b for email in tuple(removed) for b in self._base_positions(group, email)})
        kept = self._base_size(group) - len(gone)  # base rows listed
        if start < kept:
            first = start  # the base row at position ``start``: step over the removed rows up to it
            for b in gone:
                if b > first:
                    break
                first += 1
            pos = start
            for email, role in self._base_members(group, first):
                if email not in removed:
                    yield pos, email, role
                    pos += 1
        for pos, email in enumerate(sorted(added)[max(start - kept, 0):], max(start, kept)):
            yield pos, email, "MEMBER"

    def is_base_member(self, group: Group, email: str) -> bool:
        """Whether ``email`` is a member of ``group`` before mutations (the overlay not applied)."""
        return bool(self._base_positions(group, email))

    def _base_members(self, group: Group, start: int = 0) -> Iterator[tuple[str, str]]:
        """The membership before mutations, from row ``start`` on (index arithmetic, no walk)."""
        if group.kind == "all":
            for i in range(start, self.n):
                yield self.person(i).email, "OWNER" if i == 0 else "MEMBER"
        elif group.kind == "department":
            k = DEPARTMENTS.index(group.department)
            for i in range(k + start * len(DEPARTMENTS), self.n, len(DEPARTMENTS)):
                yield self.person(i).email, "OWNER" if i == k else "MEMBER"
        elif group.kind == "project":
            for i in self._project_members(group)[start:]:
                yield self.person(i).email, "MEMBER"
        else:  # partner collaboration: internal owner plus external guests
            if start == 0:
                yield self.person(0).email, "OWNER"
            for g in range(max(start - 1, 0), self.n_guests):
                yield self.guest(g).email, "MEMBER"

    def _project_members(self, group: Group) -> list[int]:
        r = _rng(self.seed, "project", int(group.key.split("-")[1]))
        return sorted(r.sample(range(self.n), min(self.n, 8)))

    def _base_size(self, group: Group) -> int:
        if group.kind == "all":
            return self.n
        if group.kind == "department":
            return len(range(DEPARTMENTS.index(group.department), self.n, len(DEPARTMENTS)))
        if group.kind == "project":
            return len(self._project_members(group))
        return 1 + self.n_guests

    def _base_positions(self, group: Group, email: str) -> list[int]:
        """The rows of :meth:`_base_members` that list exactly ``email``, found by address."""
        if group.kind == "project":
            return [b for b, i in enumerate(self._project_members(group)) if self.person(i).email == email]
        if group.kind == "partner":
            rows = [0] if self.person(0).email == email else []
            g = self.guest_by_email(email)
            return rows + [1 + g.index] if g is not None and g.email == email else rows
        # all staff, a department: whoever holds the address (generated, or set by a mutation)
        holders = {i for i, fields in tuple(self.overlay.people.items()) if fields.get("email") == email}
        p = self.person_by_email(email)
        if p is not None:
            holders.add(p.index)
        rows = sorted(i for i in holders if 0 <= i < self.n and self.person(i).email == email)
        if group.kind == "all":
            return rows
        k = DEPARTMENTS.index(group.department)
        return [i // len(DEPARTMENTS) for i in rows if i % len(DEPARTMENTS) == k]

    # -- files ----------------------------------------------------------------------------
    def file_count(self, i: int) -> int:
        avg = self.files_per_user
        return _rng(self.seed, "nfiles", i).randint(0, 2 * avg) if i >= 12 else min(avg, FILES_PER_USER)

    def user_files(self, i: int) -> Iterator[File]:
        for j in range(self.file_count(i)):
            f = self.user_file(i, j)
            if f is not None:
                yield f

    def user_file(self, i: int, j: int) -> File | None:
        fid = f"uf{i:06d}x{j:04d}"
        if fid in self.overlay.removed_files:
            return None
        r = _rng(self.seed, "file", i, j)
        owner = self.person(i)
        folder = j == 0
        shares = self.overlay.file_shares.get(fid)
        if shares is None:
            shares = self._shares_for(r, i, j, fid)
        ext = ("xlsx", "docx", "pdf", "csv", "pptx")[r.randrange(5)]
        name = f"{owner.department.name_ja}資料" if folder else f"{('顧客リスト', '議事録', '見積書', '給与明細', '企画書')[r.randrange(5)]}_{j}.{ext}"
        return File(
            id=fid, name=name, owner=i, drive=None, folder=folder, size=0 if folder else r.randint(1_000, 5_000_000),
            modified=REFERENCE_TIME - timedelta(minutes=r.randint(10, 60 * 24 * 365)), shares=shares,
            parent=None if folder else f"uf{i:06d}x0000",
        )

    def _shares_for(self, r: random.Random, i: int, j: int, fid: str) -> tuple[Share, ...]:
        planted = {  # (person, file) -> kind, so a small tenant has every kind
            (2, 1): "anyone", (2, 2): "unapproved", (3, 1): "external_expiring", (3, 2): "anyone",
            (4, 1): "domain", (5, 1): "colleague", (6, 1): "group", (6, 2): "external", (10, 1): "expired",
            (9, 1): "anyone", (9, 2): "external",  # 9 is a suspended leaver: shares that outlive the account
        }
        kind = planted.get((i, j))
        if kind is None:
            x = r.random()
            kind = (
                "private" if x < 0.70 else "colleague" if x < 0.80 else "group" if x < 0.86 else
                "domain" if x < 0.90 else "anyone" if x < 0.93 else "external" if x < 0.96 else
                "external_expiring" if x < 0.975 else "expired" if x < 0.98 else "unapproved"
            )
        sid = lambda n: f"{fid}p{n}"
        if kind == "private":
            return ()
        if kind == "colleague":
            other = self.person((i + 1 + r.randrange(self.n - 1)) % self.n)
            return (Share(sid(1), "user", "writer" if r.random() < 0.5 else "reader", email=other.email),)
        if kind == "group":
            d = DEPARTMENTS[i % len(DEPARTMENTS)]
            return (Share(sid(1), "group", "reader", email=f"{d.key}@{self.domain}"),)
        if kind == "domain":
            return (Share(sid(1), "domain", "reader", domain=self.domain, discoverable=r.random() < 0.3),)
        if kind == "anyone":
            return (Share(sid(1), "anyone", "reader" if r.random() < 0.8 else "writer", discoverable=False),)
        guest = self.guest(1 + r.randrange(self.n_guests - 1)) if kind != "unapproved" else self.guest(0)
        role = "writer" if r.random() < 0.4 else "reader"
        if kind == "external":
            return (Share(sid(1), "user", role, email=guest.email),)
        if kind == "external_expiring":
            return (Share(sid(1), "user", role, email=guest.email, expiration=REFERENCE_TIME + timedelta(days=30)),)
        if kind == "expired":
            return (Share(sid(1), "user", "reader", email=guest.email, expiration=REFERENCE_TIME - timedelta(days=3)),)
        return (Share(sid(1), "user", role, email=self.guest(0).email),)  # unapproved domain

    # -- shared drives / SharePoint sites -------------------------------------------------
    @lru_cache(maxsize=1024)
    def _drive_base(self, d: int) -> SharedDrive:
        r = _rng(self.seed, "drive", d)
        dept = DEPARTMENTS[d % len(DEPARTMENTS)]
        organizer = self.person(d % len(DEPARTMENTS) if d % len(DEPARTMENTS) < self.n else 0)
        members = [Share(f"sd{d}m0", "user", "organizer", email=organizer.email)]
        if d != 1:  # drive 1 has a single organizer and nothing else: planted
            members.append(Share(f"sd{d}m1", "group", "writer", email=f"{dept.key}@{self.domain}"))
            second = self.person((d * 13 + 6) % self.n)  # a second manager: no drive depends on one person
            members.append(Share(f"sd{d}m2", "user", "organizer", email=second.email))
            if d % 3 == 2:
                third = self.person((d * 7 + 11) % self.n)
                members.append(Share(f"sd{d}m5", "user", "fileOrganizer", email=third.email))
        if d == 2 or (d > 3 and r.random() < 0.1):
            members.append(Share(f"sd{d}m3", "user", "reader", email=self.guest(2).email))
        if d == 0:  # an unapproved-domain member of a shared drive: planted
            members.append(Share(f"sd{d}m4", "user", "writer", email=self.guest(0).email))
        return SharedDrive(
            index=d, id=f"0AD{d:05d}", name=f"{dept.name_ja}共有ドライブ{d}", department=dept,
            members=tuple(members), files=FILES_PER_DRIVE if d < 4 else r.randint(0, 2 * FILES_PER_DRIVE),
        )

    def drive(self, d: int) -> SharedDrive:
        return self._drive_base(d)

    def drives(self) -> Iterator[SharedDrive]:
        for d in range(self.n_drives):
            yield self.drive(d)

    def drive_files(self, d: int) -> Iterator[File]:
        for j in range(self.drive(d).files):
            f = self.drive_file(d, j)
            if f is not None:
                yield f

    def drive_file(self, d: int, j: int) -> File | None:
        fid = f"df{d:05d}x{j:04d}"
        if fid in self.overlay.removed_files:
            return None
        r = _rng(self.seed, "dfile", d, j)
        shares = self.overlay.file_shares.get(fid)
        if shares is None:
            shares = ()
            x = r.random()
            if (d, j) == (0, 1) or x < 0.03:
                shares = (Share(f"{fid}p1", "anyone", "reader"),)
            elif (d, j) == (0, 2) or x < 0.05:
                shares = (Share(f"{fid}p1", "user", "reader", email=self.guest(1).email),)
        return File(
            id=fid, name="共有フォルダ" if j == 0 else f"共有資料_{j}.xlsx", owner=None, drive=d, folder=j == 0,
            size=0 if j == 0 else r.randint(1_000, 2_000_000),
            modified=REFERENCE_TIME - timedelta(minutes=r.randint(10, 60 * 24 * 365)), shares=shares,
            parent=None if j == 0 else f"df{d:05d}x0000",
        )

    def find_file(self, fid: str) -> File | None:
        try:
            if fid.startswith("uf"):
                i, j = fid[2:].split("x")
                i, j = int(i), int(j)
                return self.user_file(i, j) if i < self.n and j < self.file_count(i) else None
            if fid.startswith("df"):
                d, j = fid[2:].split("x")
                d, j = int(d), int(j)
                return self.drive_file(d, j) if d < self.n_drives and j < self.drive(d).files else None
        except ValueError:
            return None
        return None

    # -- mutations (tests and the demo change the organisation; feeds report it) ----------
    def _log(self, kind: str, **target: Any) -> int:
        seq = len(self.overlay.changes) + 1
        self.overlay.changes.append({"seq": seq, "kind": kind, "time": iso(datetime.now(timezone.utc)), **target})
        return seq

    def share(self, file_id: str, share: Share) -> int:
        with self._lock:
            f = self.find_file(file_id)
            if f is None:
                raise KeyError(file_id)
            self.overlay.file_shares[file_id] = f.shares + (share,)
            return self._log("file", file_id=file_id, drive=f.drive, owner=f.owner)

    def unshare(self, file_id: str, share_id: str) -> int:
        with self._lock:
            f = self.find_file(file_id)
            if f is None:
                raise KeyError(file_id)
            self.overlay.file_shares[file_id] = tuple(s for s in f.shares if s.id != share_id)
            return self._log("file", file_id=file_id, drive=f.drive, owner=f.owner)

    def delete_file(self, file_id: str) -> int:
        with self._lock:
            f = self.find_file(file_id)
            if f is None:
                raise KeyError(file_id)
            self.overlay.removed_files.add(file_id)
            return self._log("file_removed", file_id=file_id, drive=f.drive, owner=f.owner)

    def set_person(self, i: int, **fields: Any) -> int:
        with self._lock:
            self.overlay.people.setdefault(i, {}).update(fields)
            self.person.cache_clear()
            return self._log("person", index=i)

    def add_member(self, group_key: str, email: str) -> int:
        with self._lock:
            self.overlay.group_added.setdefault(group_key, set()).add(email)
            self.overlay.group_removed.get(group_key, set()).discard(email)
            return self._log("group", group=group_key)

    def remove_member(self, group_key: str, email: str) -> int:
        with self._lock:
            self.overlay.group_removed.setdefault(group_key, set()).add(email)
            self.overlay.group_added.get(group_key, set()).discard(email)
            return self._log("group", group=group_key)

    @property
    def change_seq(self) -> int:
        return len(self.overlay.changes)

    def changes_since(self, seq: int) -> list[dict[str, Any]]:
        return self.overlay.changes[seq:]

    def group_overlay(self) -> tuple[int, dict[str, frozenset[str]], dict[str, frozenset[str]]]:
        """``(change seq, added, removed)``: the group membership overlay as of that seq, read
        together under the lock (a mutation changes the overlay and the log as one step)."""
        with self._lock:
            ov = self.overlay
            return (self.change_seq, {k: frozenset(v) for k, v in ov.group_added.items()},
                    {k: frozenset(v) for k, v in ov.group_removed.items()})

    # -- classification helpers (source terms) --------------------------------------------
    def partner_for_domain(self, domain: str | None) -> Partner | None:
        for p in self.partners:
            if domain and domain.lower() == p.domain:
                return p
        return None

    def is_internal(self, email_or_domain: str | None) -> bool:
        if not email_or_domain:
            return False
        return email_or_domain.rsplit("@", 1)[-1].lower() == self.domain

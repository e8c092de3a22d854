"""The two ways a Drive snapshot is taken: a full listing, and a complete bag built from the
previous complete bag plus the changes feed. Both go through the same readers and the same
mapping, so they write the same records for the same state."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable, Iterator

from connectors._google import GoogleClients, SubjectRefused, scopes
from connectors.base import Cancelled, ConnectorError, PermissionDenied, RunContext
from connectors.google_drive import mapping as m
from connectors.google_drive.pool import run_pool
from evidence.model import Record, canonical_json, utc_iso

DRIVE_ADMIN = scopes("drive.readonly")            # drives.list / permissions.list with useDomainAdminAccess
DRIVE_USER = scopes("drive.metadata.readonly")    # everything done as a user: metadata only
DIRECTORY = scopes("admin.directory.user.readonly")
REPORTS = scopes("admin.reports.audit.readonly")
MY_DRIVE_Q = "'me' in owners and trashed = false"
CURSOR_VERSION = 1
MAX_CHANGES_LISTED = 10_000  # run.json lists the changes applied, up to this many


@dataclass
class Drive:
    """A shared drive as re-read this run: its API object, members, and whom to list it as."""

    obj: dict[str, Any]
    members: list[dict[str, Any]]
    subject: str | None

    @property
    def id(self) -> str:
        return self.obj["id"]

    def members_digest(self) -> str:
        return hashlib.sha256(canonical_json(sorted(self.members, key=lambda p: p.get("id", ""))).encode()).hexdigest()[:32]


@dataclass
class Plan:
    """What one run reads: users (email → suspended) and shared drives."""

    users: dict[str, bool] = field(default_factory=dict)
    drives: dict[str, Drive] = field(default_factory=dict)


class DriveReader:
    """The calls, with their precise field masks, shared by both modes."""

    def __init__(self, config: Any, clients: GoogleClients, ctx: RunContext):
        self.config, self.clients, self.ctx = config, clients, ctx
        self.admin = config.admin_subject

    # -- who and what ---------------------------------------------------------------------------
    def plan(self) -> Plan:
        plan = Plan()
        if self.config.my_drives:
            plan.users = self.users()
        if self.config.shared_drives:
            for d in self.drives():
                plan.drives[d["id"]] = Drive(d, [], None)
            members = self.drive_members(list(plan.drives))
            for drive_id, perms in members.items():
                drive = plan.drives[drive_id]
                drive.members = perms
                drive.subject = self.config.drive_member_subject or _pick_member(perms, plan.users)
        return plan

    def users(self) -> dict[str, bool]:
        if self.config.users is not None:
            return {u: False for u in self.config.users}
        d = self.clients.service("directory")
        out: dict[str, bool] = {}
        fields = "nextPageToken,users(primaryEmail,suspended,archived)"
        params = {"customer": self.config.customer, "maxResults": 500, "fields": fields}
        self.ctx.source(endpoint="directory.users.list", subject=self.admin, **params)
        for page in self.clients.pages(
            self.ctx, "directory.users.list",
            lambda tok: d.users().list(pageToken=tok, **params), subject=self.admin, scopes=DIRECTORY, params=params,
        ):
            for u in page.get("users", []):
                if self.config.include_suspended or not (u.get("suspended") or u.get("archived")):
                    out[u["primaryEmail"].lower()] = bool(u.get("suspended") or u.get("archived"))
        return out

    def drives(self) -> Iterator[dict[str, Any]]:
        svc = self.clients.service("drive")
        params = {"useDomainAdminAccess": True, "pageSize": 100, "fields": f"nextPageToken,drives({m.DRIVE_FIELDS})"}
        self.ctx.source(endpoint="drive.drives.list", subject=self.admin, **params)
        for page in self.clients.pages(self.ctx, "drive.drives.list", lambda tok: svc.drives().list(pageToken=tok, **params),
                                       subject=self.admin, scopes=DRIVE_ADMIN, params=params):
            yield from page.get("drives", [])

    def drive_members(self, drive_ids: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Every shared drive's member permissions, batched 100 per HTTP call, pages followed."""
        svc = self.clients.service("drive")
        base = {"useDomainAdminAccess": True, "supportsAllDrives": True, "pageSize": 100, "fields": m.MEMBER_FIELDS}
        if drive_ids:
            self.ctx.source(endpoint="drive.permissions.list", subject=self.admin, batched=True, drives=len(drive_ids), **base)
        out: dict[str, list[dict[str, Any]]] = {d: [] for d in drive_ids}
        todo = [(d, None) for d in drive_ids]
        while todo:
            calls = []
            for drive_id, token in todo:
                params = {"fileId": drive_id, **base, **({"pageToken": token} if token else {})}
                calls.append((f"{drive_id}|{token or ''}", svc.permissions().list(**params), params))
            results = self.clients.batch(self.ctx, "drive", "drive.permissions.list", calls, subject=self.admin,
                                         scopes=DRIVE_ADMIN, size=self.config.batch_size)
            todo = []
            for key, result in results.items():
                drive_id = key.split("|", 1)[0]
                if not isinstance(result, dict):
                    raise _fatal(result.error, f"members of shared drive {drive_id}")
                out[drive_id].extend(result.get("permissions", []))
                if result.get("nextPageToken"):
                    todo.append((drive_id, result["nextPageToken"]))
        return out

    # -- per user / per drive ---------------------------------------------------------------------
    def start_token(self, subject: str, drive_id: str | None = None) -> str:
        svc = self.clients.service("drive")
        params: dict[str, Any] = {"driveId": drive_id, "supportsAllDrives": True} if drive_id else {}
        resp = self.clients.execute(self.ctx, "drive.changes.getStartPageToken", svc.changes().getStartPageToken(**params),
                                    subject=subject, scopes=DRIVE_USER, params=params)
        return resp["startPageToken"]

    def my_files(self, user: str) -> Iterator[list[dict[str, Any]]]:
        svc = self.clients.service("drive")
        params = {"corpora": "user", "q": MY_DRIVE_Q, "pageSize": 1000, "fields": f"nextPageToken,files({m.MY_FILE_FIELDS})"}
        for page in self.clients.pages(self.ctx, "drive.files.list", lambda tok: svc.files().list(pageToken=tok, **params),
                                       subject=user, scopes=DRIVE_USER, params=params, where=f"My Drive of {user}"):
            yield page.get("files", [])

    def drive_files(self, drive: Drive) -> Iterator[list[dict[str, Any]]]:
        svc = self.clients.service("drive")
        params = {"corpora": "drive", "driveId": drive.id, "includeItemsFromAllDrives": True, "supportsAllDrives": True,
                  "q": "trashed = false", "pageSize": 1000, "fields": f"nextPageToken,files({m.DRIVE_FILE_FIELDS})"}
        for page in self.clients.pages(self.ctx, "drive.files.list", lambda tok: svc.files().list(pageToken=tok, **params),
                                       subject=drive.subject, scopes=DRIVE_USER, params=params,
                                       where=f"shared drive {drive.id}"):
            yield page.get("files", [])

    def file_permissions(self, subject: str, file_ids: list[str]) -> dict[str, list[dict[str, Any]] | Exception]:
        """Permissions of shared-drive items that have their own, batched; pages followed."""
        svc = self.clients.service("drive")
        out: dict[str, list[dict[str, Any]] | Exception] = {f: [] for f in file_ids}
        todo = [(f, None) for f in file_ids]
        while todo:
            calls = []
            for fid, token in todo:
                params = {"fileId": fid, "supportsAllDrives": True, "pageSize": 100, "fields": m.FILE_PERMISSION_FIELDS,
                          **({"pageToken": token} if token else {})}
                calls.append((f"{fid}|{token or ''}", svc.permissions().list(**params), params))
            results = self.clients.batch(self.ctx, "drive", "drive.permissions.list", calls, subject=subject,
                                         scopes=DRIVE_USER, size=self.config.batch_size)
            todo = []
            for key, result in results.items():
                fid = key.split("|", 1)[0]
                if isinstance(out.get(fid), Exception):
                    continue
                if not isinstance(result, dict):
                    out[fid] = result.error
                    continue
                out[fid].extend(result.get("permissions", []))  # type: ignore[union-attr]
                if result.get("nextPageToken"):
                    todo.append((fid, result["nextPageToken"]))
        return out

    def activity(self, since: str) -> tuple[set[str], set[str], int]:
        """Owners and shared drives the Drive audit log names since ``since``: (users, drives, events)."""
        svc = self.clients.service("reports")
        params = {"userKey": "all", "applicationName": "drive", "startTime": since, "maxResults": 1000,
                  "fields": "nextPageToken,items(id(time),events(name,parameters(name,value,boolValue)))"}
        self.ctx.source(endpoint="reports.activities.list", subject=self.admin, **params)
        users: set[str] = set()
        drives: set[str] = set()
        events = 0
        for page in self.clients.pages(self.ctx, "reports.activities.list",
                                       lambda tok: svc.activities().list(pageToken=tok, **params),
                                       subject=self.admin, scopes=REPORTS, params=params):
            for item in page.get("items", []):
                for event in item.get("events", []):
                    events += 1
                    values = {p.get("name"): p.get("value", p.get("boolValue")) for p in event.get("parameters", [])}
                    if values.get("shared_drive_id"):
                        drives.add(values["shared_drive_id"])
                    elif values.get("owner") and not values.get("owner_is_shared_drive"):
                        users.add(str(values["owner"]).lower())
        return users, drives, events

    def changes(self, subject: str, token: str, drive_id: str | None = None) -> tuple[list[dict[str, Any]], str]:
        """Every change since ``token`` and the token to start from next time."""
        svc = self.clients.service("drive")
        inner = m.MY_FILE_FIELDS if drive_id is None else m.DRIVE_FILE_FIELDS
        params: dict[str, Any] = {"pageSize": 1000, "includeRemoved": True,
                                  "fields": f"nextPageToken,newStartPageToken,changes(fileId,removed,driveId,file({inner}))"}
        if drive_id:
            params.update(driveId=drive_id, includeItemsFromAllDrives=True, supportsAllDrives=True)
        out: list[dict[str, Any]] = []
        page_no = 0
        while True:
            resp = self.clients.execute(self.ctx, "drive.changes.list", svc.changes().list(pageToken=token, **params),
                                        subject=subject, scopes=DRIVE_USER, params={**params, "pageToken": token},
                                        page=page_no, where=f"changes of {drive_id or subject}")
            out.extend(resp.get("changes", []))
            if resp.get("newStartPageToken"):
                return out, resp["newStartPageToken"]
            token = resp["nextPageToken"]
            page_no += 1


def _pick_member(members: list[dict[str, Any]], users: dict[str, bool]) -> str | None:
    """An internal, active member to list a shared drive as: organizers first."""
    order = {"organizer": 0, "fileOrganizer": 1, "writer": 2, "commenter": 3, "reader": 4}
    candidates = []
    for p in members:
        email = (p.get("emailAddress") or "").lower()
        if p.get("type") != "user" or not email or p.get("deleted"):
            continue
        if users and email not in users:
            continue  # not one of ours (an external member cannot be impersonated)
        candidates.append((users.get(email, False), order.get(p.get("role", ""), 9), email))
    return min(candidates)[2] if candidates else None


def _fatal(error: Exception, where: str) -> Exception:
    if isinstance(error, ConnectorError):
        error.where = where
        return error
    return PermissionDenied(str(error), where=where)


class Snapshot:
    """One run: full, or incremental on top of ``ctx.base``."""

    def __init__(self, config: Any, clients: GoogleClients, ctx: RunContext):
        self.config, self.clients, self.ctx = config, clients, ctx
        self.read = DriveReader(config, clients, ctx)
        self.org = ctx.organization
        self.tokens_users: dict[str, str] = {}
        self.tokens_drives: dict[str, dict[str, str]] = {}

    # -- the pieces both modes emit ----------------------------------------------------------------
    def drive_records(self, drive: Drive) -> list[Record]:
        out = [m.shared_drive_resource(drive.obj, drive.members)]
        out.extend(m.grant(drive.id, p, self.org, extra={"permission_type": "member"}) for p in drive.members)
        return out

    def scan_task(self, item: tuple[str, Any], emit: Callable[[list[Record]], None]) -> None:
        """One pool task: ``("drive", Drive)`` scans a shared drive, ``("user", email)`` a My Drive."""
        kind, what = item
        if kind == "drive":
            self.shared_drive_task(what, emit)
        else:
            self.my_drive_task(what, emit)

    def my_drive_task(self, user: str, emit: Callable[[list[Record]], None]) -> None:
        """List one user's My Drive (token first, so nothing changed during the listing is missed)."""
        try:
            if self.config.incremental:
                self.tokens_users[user] = self.read.start_token(user)
            for files in self.read.my_files(user):
                out: list[Record] = []
                for f in files:
                    out.append(m.my_drive_resource(f, user))
                    out.extend(m.file_grants(f["id"], f.get("permissions", []), self.org))
                emit(out)
        except SubjectRefused as exc:
            self.tokens_users.pop(user, None)
            self.ctx.error(f"My Drive of {user}", f"not listed: {exc.message}")
        except Cancelled:
            raise
        except ConnectorError as exc:
            self.tokens_users.pop(user, None)
            self.ctx.error(f"My Drive of {user}", f"listing stopped: {exc}")

    def shared_drive_task(self, drive: Drive, emit: Callable[[list[Record]], None]) -> None:
        where = f"shared drive {drive.obj.get('name')} ({drive.id})"
        if drive.subject is None:
            self.ctx.error(where, "no member account of ours to list its files as; add one (or set drive_member_subject)")
            return
        try:
            if self.config.incremental:
                self.tokens_drives[drive.id] = {"token": self.read.start_token(drive.subject, drive.id),
                                                "members": drive.members_digest()}
            own: list[dict[str, Any]] = []
            for files in self.read.drive_files(drive):
                out: list[Record] = []
                for f in files:
                    if m.needs_own_permissions(f):
                        own.append(f)
                        continue
                    out.append(m.drive_file_resource(f, drive.id))
                    out.extend(m.member_grants(f["id"], drive.id, drive.members, self.org))
                emit(out)
                if len(own) >= self.config.batch_size:
                    emit(self.with_own_permissions(drive, own))
                    own = []
            if own:
                emit(self.with_own_permissions(drive, own))
        except Cancelled:
            raise
        except ConnectorError as exc:
            self.tokens_drives.pop(drive.id, None)
            self.ctx.error(where, f"listing stopped: {exc}")

    def with_own_permissions(self, drive: Drive, files: list[dict[str, Any]]) -> list[Record]:
        perms = self.read.file_permissions(drive.subject, [f["id"] for f in files])
        out: list[Record] = []
        for f in files:
            got = perms.get(f["id"])
            if isinstance(got, Exception):
                self.ctx.error(f"permissions of {f['id']} in shared drive {drive.id}", str(got))
                continue
            out.append(m.drive_file_resource(f, drive.id))
            out.extend(m.file_grants(f["id"], got or [], self.org))
        return out

    # -- full ----------------------------------------------------------------------------------------
    def full(self, plan: Plan) -> Iterator[Record]:
        for drive in plan.drives.values():
            yield from self.drive_records(drive)

        tasks = [("drive", d) for d in plan.drives.values()] + [("user", u) for u in plan.users]
        yield from run_pool(iter(tasks), self.scan_task, workers=self.config.workers)

    def cursor(self, plan: Plan) -> dict[str, Any]:
        out = {"v": CURSOR_VERSION, "baseline_utc": self.baseline, "config": self.config_digest(),
               "users": dict(sorted(self.tokens_users.items())), "drives": dict(sorted(self.tokens_drives.items()))}
        if self.config.change_detection == "activity":
            # the next run reads the audit log from a little before this one started (the log lags)
            out["activity_from"] = utc_iso(self.ctx.started - timedelta(minutes=self.config.activity_lag_minutes))
        return out

    baseline: str | None = None

    def config_digest(self) -> str:
        """The settings that change *what* is collected: a change forces a full run."""
        c = self.config
        what = {"users": c.users, "include_suspended": c.include_suspended, "my_drives": c.my_drives,
                "shared_drives": c.shared_drives, "customer": c.customer, "domains": list(self.org.domains)}
        return hashlib.sha256(canonical_json(what).encode()).hexdigest()[:16]

    # -- incremental ----------------------------------------------------------------------------------
    def incremental(self, plan: Plan, cursor: dict[str, Any]) -> Iterator[Record]:
        """Apply the changes feed to the base bag's records; yields the complete new state."""
        ctx, base = self.ctx, self.ctx.base
        old_users: dict[str, str] = cursor.get("users", {})
        old_drives: dict[str, dict[str, str]] = cursor.get("drives", {})
        new_users = [u for u in plan.users if u not in old_users]
        gone_users = {u for u in old_users if u not in plan.users}
        new_drives = [d for d in plan.drives.values() if d.id not in old_drives]
        gone_drives = {d for d in old_drives if d not in plan.drives}
        member_changed = {d.id for d in plan.drives.values()
                          if d.id in old_drives and old_drives[d.id].get("members") != d.members_digest()}

        # 1. the feeds: My Drive per user, shared drives per drive (in the pool)
        changed_my: dict[str, tuple[str, dict[str, Any]]] = {}   # file id -> (owner, file)
        gone_for: dict[str, set[str]] = {}                       # file id -> users it left / was removed for
        changed_drive: dict[str, tuple[str, dict[str, Any] | None]] = {}  # file id -> (drive, file | None)
        failed_users: set[str] = set()
        failed_drives: set[str] = set()

        def feed(item: tuple[str, Any], emit: Callable[[list[Any]], None]) -> None:
            kind, what = item
            try:
                if kind == "user":
                    changes, token = self.read.changes(what, old_users[what])
                    emit([("user", what, changes, token)])
                else:
                    changes, token = self.read.changes(what.subject, old_drives[what.id]["token"], what.id)
                    emit([("drive", what, changes, token)])
            except SubjectRefused as exc:
                emit([("failed", item, exc.message)])
            except Cancelled:
                raise
            except ConnectorError as exc:
                emit([("failed", item, str(exc))])

        tasks = [("user", u) for u in plan.users if u in old_users]
        tasks += [("drive", d) for d in plan.drives.values() if d.id in old_drives and d.subject is not None]
        if self.config.change_detection == "activity":
            # only the feeds the audit log names; the others keep their tokens (nothing is lost:
            # a change the log has not shown yet is read the next time that feed is read)
            named_users, named_drives, events = self.read.activity(cursor["activity_from"])
            ctx.note("activity", {"since": cursor["activity_from"], "events": events,
                                  "users_named": len(named_users), "shared_drives_named": len(named_drives)})
            named = [(t[1] in named_users) if t[0] == "user" else (t[1].id in named_drives) for t in tasks]
            kept = [t for t, n in zip(tasks, named) if not n]
            tasks = [t for t, n in zip(tasks, named) if n]
            for kind, what in kept:
                if kind == "user":
                    self.tokens_users[what] = old_users[what]
                else:
                    self.tokens_drives[what.id] = {"token": old_drives[what.id]["token"], "members": what.members_digest()}
        applied = {"my_drive": 0, "shared_drive": 0}
        for result in run_pool(iter(tasks), feed, workers=self.config.workers):
            if result[0] == "failed":
                kind, what = result[1]
                if kind == "user":
                    failed_users.add(what)
                    ctx.error(f"changes of My Drive of {what}", f"not read: {result[2]}")
                else:
                    failed_drives.add(what.id)
                    ctx.error(f"changes of shared drive {what.id}", f"not read: {result[2]}")
                continue
            kind, what, changes, token = result
            if kind == "user":
                self.tokens_users[what] = token
                for c in changes:
                    if c.get("driveId"):
                        continue
                    f = c.get("file")
                    owners = {o.get("emailAddress", "").lower() for o in (f or {}).get("owners", [])}
                    if not c.get("removed") and f and not f.get("trashed") and what in owners:
                        changed_my[c["fileId"]] = (what, f)
                    else:
                        gone_for.setdefault(c["fileId"], set()).add(what)
                    applied["my_drive"] += 1
            else:
                self.tokens_drives[what.id] = {"token": token, "members": what.members_digest()}
                for c in changes:
                    f = c.get("file")
                    gone = c.get("removed") or not f or f.get("trashed")
                    changed_drive[c["fileId"]] = (what.id, None if gone else f)
                    applied["shared_drive"] += 1
        # drives whose subject could not be found keep no token: the next run lists them in full
        for d in plan.drives.values():
            if d.id in old_drives and d.subject is None:
                failed_drives.add(d.id)
                ctx.error(f"shared drive {d.obj.get('name')} ({d.id})", "no member account of ours to read its changes as")
        ctx.note("changes_applied", applied)
        listed = [{"file_id": fid, "in": f"my_drive:{owner}", "change": "updated"} for fid, (owner, _) in changed_my.items()]
        listed += [{"file_id": fid, "in": "my_drive:" + ",".join(sorted(users)), "change": "removed or no longer owned"}
                   for fid, users in gone_for.items() if fid not in changed_my]
        listed += [{"file_id": fid, "in": f"shared_drive:{d}", "change": "updated" if f else "removed"}
                   for fid, (d, f) in changed_drive.items()]
        listed.sort(key=lambda c: (c["in"], c["file_id"]))
        ctx.note("changes", listed[:MAX_CHANGES_LISTED])
        if len(listed) > MAX_CHANGES_LISTED:
            ctx.note("changes_not_listed", len(listed) - MAX_CHANGES_LISTED)
        if member_changed:
            ctx.note("shared_drives_with_changed_members", sorted(member_changed))
        ctx.note("base", {"run_id": base.run_id, "bag": base.relpath, "tagmanifest_sha256": base.digest})

        # 2. the drives themselves, re-read every run
        for drive in plan.drives.values():
            yield from self.drive_records(drive)

        # 3. the base, minus what changed, plus what changed
        rescanned_users = set(new_users)
        rescanned_drives = {d.id for d in new_drives}
        replaced: set[str] = set()        # resources (and their grants) not carried over
        regrant: dict[str, list[dict[str, Any]]] = {}  # drive -> own-permission files to re-ask
        for _, data in base.records("resources"):
            rid = data["id"]
            attrs = data.get("attributes") or {}
            if data["kind"] == "shared_drive":
                replaced.add(rid)
                continue
            drive_id = attrs.get("drive_id")
            if drive_id:
                if drive_id in gone_drives or drive_id in rescanned_drives or rid in changed_drive:
                    replaced.add(rid)
                    continue
                if drive_id in member_changed and attrs.get("has_augmented_permissions") or (
                        drive_id in member_changed and attrs.get("inherited_permissions_disabled")):
                    regrant.setdefault(drive_id, []).append(_file_from_record(data))
                    replaced.add(rid)
                    continue
                yield Record("resources", rid, data)
                if drive_id in member_changed:
                    yield from m.member_grants(rid, drive_id, plan.drives[drive_id].members, self.org)
            else:
                owner = attrs.get("owner_email") or ""
                if (owner in gone_users or owner in rescanned_users or rid in changed_my
                        or owner in gone_for.get(rid, ())):
                    replaced.add(rid)
                    continue
                yield Record("resources", rid, data)
        for key, data in base.records("grants"):
            rid = data["resource_id"]
            if rid in replaced:
                continue
            if data.get("via") == "inherited" and data.get("inherited_from") in member_changed:
                continue
            yield Record("grants", key, data)

        # 4. what changed, new users and drives listed in full
        for fid, (owner, f) in sorted(changed_my.items()):
            yield m.my_drive_resource(f, owner)
            yield from m.file_grants(fid, f.get("permissions", []), self.org)
        own_by_drive: dict[str, list[dict[str, Any]]] = dict(regrant)
        for fid, (drive_id, f) in sorted(changed_drive.items()):
            if f is None or drive_id not in plan.drives:
                continue
            if m.needs_own_permissions(f):
                own_by_drive.setdefault(drive_id, []).append(f)
            else:
                yield m.drive_file_resource(f, drive_id)
                yield from m.member_grants(fid, drive_id, plan.drives[drive_id].members, self.org)
        for drive_id, files in sorted(own_by_drive.items()):
            drive = plan.drives[drive_id]
            for n in range(0, len(files), self.config.batch_size):
                yield from self.with_own_permissions(drive, files[n:n + self.config.batch_size])

        tasks2 = [("drive", d) for d in new_drives] + [("user", u) for u in new_users]
        ctx.note("listed_in_full", {"users": len(new_users), "shared_drives": len(new_drives)})
        yield from run_pool(iter(tasks2), self.scan_task, workers=self.config.workers)
        # a feed that could not be read leaves its owner's records as they were: say so, and
        # drop its token so the next run lists it in full
        for u in failed_users:
            self.tokens_users.pop(u, None)
        for d in failed_drives:
            self.tokens_drives.pop(d, None)


def _file_from_record(data: dict[str, Any]) -> dict[str, Any]:
    """The API fields a resource record was made from (for re-asking an item's permissions)."""
    a = data.get("attributes") or {}
    f = {"id": data["id"], "name": data.get("name"), "mimeType": a.get("mime_type"), "parents": a.get("parents") or [],
         "webViewLink": data.get("web_url"), "driveId": a.get("drive_id"),
         "hasAugmentedPermissions": a.get("has_augmented_permissions"),
         "inheritedPermissionsDisabled": a.get("inherited_permissions_disabled")}
    if data.get("size") is not None:
        f["size"] = str(data["size"])
    if data.get("modified"):
        f["modifiedTime"] = data["modified"]
    if a.get("created"):
        f["createdTime"] = a["created"]
    return f


__all__ = ["CURSOR_VERSION", "Drive", "DriveReader", "Plan", "Snapshot"]

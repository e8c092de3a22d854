"""Drive v3: files, permissions, shared drives and changes, and who may see what."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from datetime import timedelta
from typing import Any

from sandbox.google.common import _Ctx, _digest, _num, _page
from sandbox.google.errors import ApiError, _drive_not_found, _file_not_found, _invalid, google_error
from sandbox.org import REFERENCE_TIME, File, Person, Share, SharedDrive, iso

_ROLE_RANK = {"owner": 6, "organizer": 6, "fileOrganizer": 5, "writer": 4, "commenter": 3, "reader": 2}
_MIME = {
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "pdf": "application/pdf",
    "csv": "text/csv",
}
FOLDER_MIME = "application/vnd.google-apps.folder"

_Q_TERM = (
    ("owner_me", re.compile(r"^'me'\s+in\s+owners$", re.IGNORECASE)),
    ("trashed", re.compile(r"^trashed\s*=\s*(true|false)$", re.IGNORECASE)),
    ("parent", re.compile(r"^'((?:[^'\\]|\\.)+)'\s+in\s+parents$", re.IGNORECASE)),
)


def parse_q(q: str | None) -> dict[str, Any]:
    """The ``q`` forms the stand-in understands; anything else is Google's 400 invalid query."""
    out: dict[str, Any] = {"owner_me": False, "trashed": None, "parents": []}
    if q is None or not q.strip():
        return out
    text = q.strip()
    while text.startswith("(") and text.endswith(")"):
        text = text[1:-1].strip()
    for term in re.split(r"\s+and\s+", text, flags=re.IGNORECASE):
        term = term.strip()
        while term.startswith("(") and term.endswith(")"):
            term = term[1:-1].strip()
        for kind, rx in _Q_TERM:
            m = rx.match(term)
            if m:
                if kind == "owner_me":
                    out["owner_me"] = True
                elif kind == "trashed":
                    out["trashed"] = m.group(1).lower() == "true"
                else:
                    out["parents"].append(m.group(1).replace("\\'", "'"))
                break
        else:
            raise _invalid("q")
    return out


class DriveMixin:
    """The Drive methods of :class:`sandbox.google.GoogleStandIn` and the access rules they share."""

    def permission_id(self, i: int) -> str:
        return f"{self._pid_base + i:020d}"

    # -- who may see what ---------------------------------------------------------------------
    def _visible(self, shares: tuple[Share, ...]) -> tuple[Share, ...]:
        if self.expired_shares == "show":
            return shares
        return tuple(s for s in shares if s.expiration is None or s.expiration > REFERENCE_TIME)

    def _drive_role(self, drive: SharedDrive, person: Person | None) -> str | None:
        if person is None:
            return None
        best = None
        for m in drive.members:
            matches = (m.type == "user" and (m.email or "").lower() == person.email.lower()) or (
                m.type == "group" and self._in_group_email(m.email, person.email)) or (
                m.type == "domain" and m.domain == self.org.domain) or m.type == "anyone"
            if matches and (best is None or _ROLE_RANK.get(m.role, 0) > _ROLE_RANK.get(best, 0)):
                best = m.role
        return best

    def _grant_role(self, shares: Iterable[Share], person: Person, direct_only: bool = False) -> str | None:
        best = None
        for s in shares:
            ok = (s.type == "user" and (s.email or "").lower() == person.email.lower()) or (
                s.type == "group" and self._in_group_email(s.email, person.email))
            if not ok and not direct_only:
                ok = (s.type == "domain" and s.domain == self.org.domain) or s.type == "anyone"
            if ok and (best is None or _ROLE_RANK.get(s.role, 0) > _ROLE_RANK.get(best, 0)):
                best = s.role
        return best

    def _access(self, person: Person | None, f: File) -> str | None:
        """The caller's role on a file, or None if the caller cannot see it."""
        if person is None:
            return None
        if f.drive is None:
            if f.owner == person.index:
                return "owner"
            return self._grant_role(self._visible(f.shares), person)
        role = self._drive_role(self.org.drive(f.drive), person)
        own = self._grant_role(self._visible(f.shares), person)
        if own and (role is None or _ROLE_RANK[own] > _ROLE_RANK.get(role, 0)):
            return own
        return role

    def _drive_index(self, drive_id: str | None) -> int | None:
        if not drive_id or not re.fullmatch(r"0AD\d{5}", drive_id):
            return None
        d = int(drive_id[3:])
        return d if d < self.org.n_drives else None

    def _root_id(self, i: int) -> str:
        return f"0AP{i:09d}Uk9PVA"

    def _display_name(self, email: str | None, kind: str) -> str | None:
        if not email:
            return None
        if kind == "group":
            g = self._group_by_email.get(email.lower())
            return g.name if g else None
        p = self.org.person_by_email(email)
        if p is not None:
            return p.name_ja
        g = self.org.guest_by_email(email)
        return g.display_name if g is not None else None

    # -- Drive resources --------------------------------------------------------------------------
    def _perm(self, s: Share) -> dict[str, Any]:
        p: dict[str, Any] = {"kind": "drive#permission", "id": s.id, "type": s.type, "role": s.role}
        if s.type in ("user", "group"):
            p["emailAddress"] = s.email
            name = self._display_name(s.email, s.type)
            if name:
                p["displayName"] = name
            if s.expiration is not None:
                p["expirationTime"] = iso(s.expiration)
            p["deleted"] = s.deleted
            if s.type == "user":
                p["pendingOwner"] = False
        elif s.type == "domain":
            p["domain"] = s.domain
            p["displayName"] = s.domain
            p["allowFileDiscovery"] = s.discoverable
        else:
            p["allowFileDiscovery"] = s.discoverable
        return p

    def _owner_perm(self, owner: Person) -> dict[str, Any]:
        return {"kind": "drive#permission", "id": self.permission_id(owner.index), "type": "user", "role": "owner",
                "emailAddress": owner.email, "displayName": owner.name_ja, "deleted": False, "pendingOwner": False}

    def _file(self, f: File, caller: Person | None) -> dict[str, Any]:
        shares = self._visible(f.shares)
        ext = f.name.rsplit(".", 1)[-1] if "." in f.name else ""
        d: dict[str, Any] = {
            "kind": "drive#file", "id": f.id, "name": f.name,
            "mimeType": FOLDER_MIME if f.folder else _MIME.get(ext, "application/octet-stream"),
            "starred": False, "trashed": False, "explicitlyTrashed": False,
            "spaces": ["drive"], "version": str(1 + int.from_bytes(_digest(f.id, f.modified, size=2), "big")),
            "webViewLink": (f"https://drive.google.com/drive/folders/{f.id}" if f.folder
                            else f"https://drive.google.com/file/d/{f.id}/view?usp=drivesdk"),
            "createdTime": iso(f.modified - timedelta(days=30)), "modifiedTime": iso(f.modified),
            "inheritedPermissionsDisabled": False,
        }
        if not f.folder:
            d["size"] = str(f.size)
            d["fileExtension"] = ext
        if f.drive is None:
            owner = self.org.person(f.owner)
            d["parents"] = [f.parent or self._root_id(f.owner)]
            d["owners"] = [{"kind": "drive#user", "displayName": owner.name_ja, "emailAddress": owner.email,
                            "permissionId": self.permission_id(owner.index),
                            "me": caller is not None and caller.index == owner.index}]
            d["ownedByMe"] = caller is not None and caller.index == owner.index
            d["shared"] = bool(shares)
            perms = [self._owner_perm(owner)] + [self._perm(s) for s in shares]
            d["permissionIds"] = [p["id"] for p in perms]
            role = self._access(caller, f)
            if role in ("owner", "writer"):        # "only available if the requesting user can share the file"
                d["permissions"] = perms
        else:
            drive = self.org.drive(f.drive)
            d["parents"] = [f.parent or drive.id]
            d["driveId"] = drive.id
            d["teamDriveId"] = drive.id
            d["hasAugmentedPermissions"] = bool(shares)
            d["permissionIds"] = [m.id for m in drive.members] + [s.id for s in shares]
        return d

    def _file_permissions(self, f: File) -> list[dict[str, Any]]:
        shares = self._visible(f.shares)
        if f.drive is None:
            return [self._owner_perm(self.org.person(f.owner))] + [self._perm(s) for s in shares]
        drive = self.org.drive(f.drive)
        out = []
        for m in drive.members:
            p = self._perm(m)
            p["permissionDetails"] = [{"permissionType": "member", "role": m.role, "inheritedFrom": drive.id, "inherited": True}]
            out.append(p)
        for s in shares:
            p = self._perm(s)
            p["permissionDetails"] = [{"permissionType": "file", "role": s.role, "inherited": False}]
            out.append(p)
        return out

    def _drive(self, drive: SharedDrive, admin_view: bool) -> dict[str, Any]:
        d = {
            "kind": "drive#drive", "id": drive.id, "name": drive.name,
            "createdTime": iso(REFERENCE_TIME - timedelta(days=100 + int.from_bytes(_digest(drive.id, size=2), "big") % 900)),
            "hidden": False, "themeId": "abacus",
            "restrictions": {"adminManagedRestrictions": False, "copyRequiresWriterPermission": False,
                             "domainUsersOnly": False, "driveMembersOnly": False,
                             "sharingFoldersRequiresOrganizerPermission": False},
        }
        if admin_view:
            d["orgUnitId"] = _num(self.org.seed, "ou", drive.department.key)
        return d

    # -- Drive: files ---------------------------------------------------------------------------
    def _own_files(self, i: int, start: int) -> Iterator[tuple[int, File]]:
        for j in range(start, self.org.file_count(i)):
            f = self.org.user_file(i, j)
            if f is not None:
                yield j, f

    def _drive_files(self, d: int, start: int) -> Iterator[tuple[int, File]]:
        for j in range(start, self.org.drive(d).files):
            f = self.org.drive_file(d, j)
            if f is not None:
                yield j, f

    def _scan_user_files(self, start: tuple[int, int], keep: Callable[[File], bool]) -> Iterator[tuple[tuple[int, int], File]]:
        i0, j0 = start
        for i in range(i0, self.org.n):
            for j, f in self._own_files(i, j0 if i == i0 else 0):
                if keep(f):
                    yield (i, j), f

    def _children(self, parent: str, start: int, caller: Person | None = None) -> Iterator[tuple[int, File]]:
        if parent == "root" and caller is not None:
            parent = self._root_id(caller.index)
        m = re.fullmatch(r"0AP(\d{9})Uk9PVA", parent)
        if m and int(m.group(1)) < self.org.n:
            if start == 0 and self.org.file_count(int(m.group(1))) > 0:
                f = self.org.user_file(int(m.group(1)), 0)
                if f is not None:
                    yield 0, f
            return
        d = self._drive_index(parent)
        if d is not None:
            if start == 0 and self.org.drive(d).files > 0:
                f = self.org.drive_file(d, 0)
                if f is not None:
                    yield 0, f
            return
        folder = self.org.find_file(parent)
        if folder is None or not folder.folder:
            return
        if folder.drive is None:
            for j, f in self._own_files(folder.owner, max(start, 1)):
                if f.parent == folder.id:
                    yield j, f
        else:
            for j, f in self._drive_files(folder.drive, max(start, 1)):
                if f.parent == folder.id:
                    yield j, f

    def _files_list(self, ctx: _Ctx) -> dict[str, Any]:
        caller = ctx.caller
        corpora = ctx.arg("corpora") or ctx.arg("corpus") or "user"
        if corpora not in ("user", "domain", "drive", "allDrives"):
            raise _invalid("corpora")
        supports = ctx.flag("supportsAllDrives", "supportsTeamDrives")
        include = ctx.flag("includeItemsFromAllDrives", "includeTeamDriveItems")
        drive_id = ctx.arg("driveId") or ctx.arg("teamDriveId")
        if bool(drive_id) != (corpora == "drive"):
            raise _invalid("driveId", "The driveId parameter must be specified if and only if corpora is set to drive.",
                           status=403, reason="teamDriveIdRequiresTeamDriveCorpora")
        if include and not supports:
            raise _invalid("includeItemsFromAllDrives", "The includeItemsFromAllDrives parameter can only be set to true "
                           "when supportsAllDrives is also set to true.", status=403, reason="invalid")
        if corpora in ("drive", "allDrives") and not include:
            raise _invalid("includeItemsFromAllDrives", "The includeItemsFromAllDrives parameter must be set to true when "
                           "driveId is specified or corpora contains drive or allDrives.", status=403, reason="invalid")
        d = None
        if corpora == "drive":
            d = self._drive_index(drive_id)
            if d is None or self._drive_role(self.org.drive(d), caller) is None:
                raise _drive_not_found(drive_id or "")
        size = self._size(ctx, "pageSize", 100, 1000, coerce=True)
        q = parse_q(ctx.arg("q"))
        fingerprint = _num(corpora, drive_id, ctx.arg("q"), include, ctx.token.subject, digits=8)
        got = self._untok(ctx.arg("pageToken"), "files:" + fingerprint, 3)
        cursor = tuple(got) if got else (0, 0, 0)
        me = caller.index if caller is not None else -1

        def source() -> Iterator[tuple[tuple[int, int, int], File]]:
            phase, a, b = cursor
            if q["trashed"] is True or caller is None:
                return
            if q["parents"]:
                # one parent term: that folder's children (several: their intersection is empty)
                if len(q["parents"]) > 1 and len(set(q["parents"])) > 1:
                    return
                for j, f in self._children(q["parents"][0], a if phase == 0 else 0, caller):
                    if f.drive is not None and (not include or (d is not None and f.drive != d)):
                        continue
                    if f.drive is None and corpora == "drive":
                        continue
                    if q["owner_me"] and f.owner != me:
                        continue
                    if self._access(caller, f) is not None:
                        yield (0, j, 0), f
                return
            if corpora == "drive":
                if q["owner_me"]:
                    return
                for j, f in self._drive_files(d, a):
                    yield (0, j, 0), f
                return
            # corpora user | domain | allDrives: own files, then others' files, then member drives
            if phase == 0:
                for j, f in self._own_files(me, a):
                    yield (0, j, 0), f
                phase, a, b = 1, 0, 0
            if q["owner_me"]:
                return
            if phase == 1:
                if corpora == "domain":
                    keep = lambda f: f.owner != me and any(
                        s.type == "domain" and s.domain == self.org.domain and s.discoverable for s in self._visible(f.shares))
                else:
                    keep = lambda f: f.owner != me and self._grant_role(self._visible(f.shares), caller, direct_only=True) is not None
                for (i, j), f in self._scan_user_files((a, b), keep):
                    yield (1, i, j), f
                phase, a, b = 2, 0, 0
            if corpora == "allDrives":
                for dd in range(a, self.org.n_drives):
                    if self._drive_role(self.org.drive(dd), caller) is None:
                        continue
                    for j, f in self._drive_files(dd, b if dd == a else 0):
                        yield (2, dd, j), f

        items, nxt = _page(source(), size)
        body: dict[str, Any] = {"kind": "drive#fileList", "incompleteSearch": False}
        if nxt is not None:
            body["nextPageToken"] = self._tok("files:" + fingerprint, *nxt)
        body["files"] = [self._file(f, caller) for f in items]
        return body

    def _find_file(self, ctx: _Ctx, file_id: str) -> File:
        f = self.org.find_file(file_id)
        if f is None:
            raise _file_not_found(file_id)
        if f.drive is not None and not ctx.flag("supportsAllDrives", "supportsTeamDrives"):
            raise _file_not_found(file_id)
        if self._access(ctx.caller, f) is None:
            raise _file_not_found(file_id)
        return f

    def _files_get(self, ctx: _Ctx) -> dict[str, Any]:
        return self._file(self._find_file(ctx, ctx.path["fileId"]), ctx.caller)

    # -- Drive: permissions -------------------------------------------------------------------
    def _permission_source(self, ctx: _Ctx) -> tuple[list[dict[str, Any]], bool]:
        """All permissions of the target and whether it lives in a shared drive."""
        file_id = ctx.path["fileId"]
        supports = ctx.flag("supportsAllDrives", "supportsTeamDrives")
        d = self._drive_index(file_id)
        if d is not None:
            if not supports:
                raise _file_not_found(file_id)
            drive = self.org.drive(d)
            if ctx.flag("useDomainAdminAccess"):
                if ctx.caller is None or not ctx.caller.admin:
                    raise ApiError(google_error(403, "The user does not have sufficient permissions for this file.",
                                                "insufficientFilePermissions"))
            elif self._drive_role(drive, ctx.caller) is None:
                raise _file_not_found(file_id)
            perms = []
            for m in drive.members:
                p = self._perm(m)
                p["permissionDetails"] = [{"permissionType": "member", "role": m.role, "inherited": False}]
                perms.append(p)
            return perms, True
        f = self._find_file(ctx, file_id)
        return self._file_permissions(f), f.drive is not None

    def _permissions_list(self, ctx: _Ctx) -> dict[str, Any]:
        perms, shared_drive = self._permission_source(ctx)
        size = self._size(ctx, "pageSize", 100 if shared_drive else 10 ** 9, 100, coerce=True)
        start = self._start(ctx, "perms:" + ctx.path["fileId"])
        body: dict[str, Any] = {"kind": "drive#permissionList"}
        if start + size < len(perms):
            body["nextPageToken"] = self._tok("perms:" + ctx.path["fileId"], start + size)
        body["permissions"] = perms[start:start + size]
        return body

    def _permissions_get(self, ctx: _Ctx) -> dict[str, Any]:
        perms, _ = self._permission_source(ctx)
        for p in perms:
            if p["id"] == ctx.path["permissionId"]:
                return p
        raise ApiError(google_error(404, f"Permission not found: {ctx.path['permissionId']}.", "notFound",
                                    location="permissionId"))

    # -- Drive: shared drives -------------------------------------------------------------------
    def _drives_list(self, ctx: _Ctx) -> dict[str, Any]:
        admin_view = ctx.flag("useDomainAdminAccess")
        if admin_view and (ctx.caller is None or not ctx.caller.admin):
            raise ApiError(google_error(403, "The user does not have sufficient permissions for this operation.",
                                        "insufficientFilePermissions"))
        if ctx.arg("q"):
            raise _invalid("q")
        size = self._size(ctx, "pageSize", 10, 100, coerce=True)
        tag = f"drives:{int(admin_view)}:{ctx.token.subject}"
        start = self._start(ctx, tag)

        def source() -> Iterator[tuple[int, SharedDrive]]:
            for d in range(start, self.org.n_drives):
                drive = self.org.drive(d)
                if admin_view or self._drive_role(drive, ctx.caller) is not None:
                    yield d, drive

        items, nxt = _page(source(), size)
        body: dict[str, Any] = {"kind": "drive#driveList"}
        if nxt is not None:
            body["nextPageToken"] = self._tok(tag, nxt)
        body["drives"] = [self._drive(x, admin_view) for x in items]
        return body

    def _drives_get(self, ctx: _Ctx) -> dict[str, Any]:
        drive_id = ctx.path["driveId"]
        d = self._drive_index(drive_id)
        admin_view = ctx.flag("useDomainAdminAccess") and ctx.caller is not None and ctx.caller.admin
        if d is None or not (admin_view or self._drive_role(self.org.drive(d), ctx.caller)):
            raise _drive_not_found(drive_id)
        return self._drive(self.org.drive(d), admin_view)

    # -- Drive: changes ---------------------------------------------------------------------------
    def _change_scope(self, ctx: _Ctx) -> str:
        drive_id = ctx.arg("driveId") or ctx.arg("teamDriveId")
        if drive_id:
            if not ctx.flag("supportsAllDrives", "supportsTeamDrives"):
                raise _invalid("driveId", "The supportsAllDrives parameter must be set to true when driveId is specified.",
                               status=403, reason="invalid")
            d = self._drive_index(drive_id)
            if d is None or self._drive_role(self.org.drive(d), ctx.caller) is None:
                raise _drive_not_found(drive_id)
            return f"d{d}"
        return f"u{ctx.token.subject}" if ctx.token.subject is not None else "sa"

    def _changes_start(self, ctx: _Ctx) -> dict[str, Any]:
        scope = self._change_scope(ctx)
        return {"kind": "drive#startPageToken", "startPageToken": self._tok("changes", scope, self.org.change_seq)}

    def _change_visible(self, scope: str, change: dict[str, Any], person: Person | None) -> bool:
        if change.get("kind") not in ("file", "file_removed"):
            return False
        if scope.startswith("d"):
            return change.get("drive") == int(scope[1:])
        if person is None or change.get("drive") is not None:
            return False
        if change.get("owner") == person.index:
            return True
        f = self.org.find_file(change["file_id"])
        return f is not None and self._grant_role(self._visible(f.shares), person, direct_only=True) is not None

    def _changes_list(self, ctx: _Ctx) -> dict[str, Any]:
        scope = self._change_scope(ctx)
        token = ctx.arg("pageToken")
        if not token:
            raise _invalid("pageToken", "Required parameter: pageToken", reason="required")
        got = self._untok(token, "changes", 2)
        if got[0] != scope:
            raise _invalid("pageToken")
        seq = int(got[1])
        size = self._size(ctx, "pageSize", 100, 1000, coerce=True)
        include_removed = ctx.arg("includeRemoved", "true").lower() != "false"
        caller = ctx.caller
        changes: list[dict[str, Any]] = []
        log = self.org.changes_since(seq)
        next_seq = None
        for offset, change in enumerate(log):
            if len(changes) == size:
                next_seq = seq + offset
                break
            if not self._change_visible(scope, change, caller):
                continue
            f = self.org.find_file(change["file_id"])
            item: dict[str, Any] = {"kind": "drive#change", "type": "file", "changeType": "file",
                                    "time": change.get("time"), "fileId": change["file_id"]}
            if change.get("drive") is not None:
                item["driveId"] = self.org.drive(change["drive"]).id
                item["teamDriveId"] = item["driveId"]
            if f is None or (scope.startswith("u") and self._access(caller, f) is None):
                if not include_removed:
                    continue
                item["removed"] = True
            else:
                item["removed"] = False
                item["file"] = self._file(f, caller)
            changes.append(item)
        body: dict[str, Any] = {"kind": "drive#changeList"}
        if next_seq is not None:
            body["nextPageToken"] = self._tok("changes", scope, next_seq)
        else:
            body["newStartPageToken"] = self._tok("changes", scope, seq + len(log))
        body["changes"] = changes
        return body

"""Files part of the Microsoft stand-in: SharePoint sites and OneDrive, their drives, drive items,
``root/delta`` (the four ``Prefer`` values, ``@microsoft.graph.sharedChanged``, ``410
resyncRequired``) and driveItem permissions."""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from sandbox.microsoft.common import (
    NAMESPACE,
    PERMS_FILES,
    PERMS_SITES,
    RESYNC_MESSAGE,
    ROLE_MAP,
    GraphError,
    _b64u,
    _dec_token,
    _enc_token,
    gtime,
)
from sandbox.microsoft.identity import _Token
from sandbox.org import REFERENCE_TIME, File, Person, Share
from sandbox.server import Request, Response


class _Files:
    """Sites, drives, drive items and permissions (methods of :class:`MicrosoftStandIn`)."""

    # -- public helpers ----------------------------------------------------------------------------
    def invalidate_delta_tokens(self, drive_id: str | None = None) -> None:
        """Make drive delta tokens issued so far answer ``410 Gone`` (one drive, or all)."""
        with self._snap_lock:
            key = drive_id or "*"
            self._delta_epoch[key] = self._delta_epoch.get(key, 0) + 1

    # -- sites and drives --------------------------------------------------------------------------
    def _owner_person(self, kind: str, index: int) -> Person | None:
        return self.org.person(index) if kind == "od" else None

    def site_obj(self, kind: str, index: int) -> dict[str, Any]:
        if kind == "sp":
            d = self.org.drive(index)
            slug = f"{d.department.key}-{index}"
            return {
                "id": self.site_id(kind, index), "name": slug, "displayName": d.name,
                "webUrl": f"https://{self.sp_host}/sites/{slug}", "isPersonalSite": False,
                "createdDateTime": gtime(REFERENCE_TIME - timedelta(days=700 - index)),
                "lastModifiedDateTime": gtime(REFERENCE_TIME - timedelta(days=1)),
                "description": f"{d.department.name_en} team site", "root": {},
                "siteCollection": {"hostName": self.sp_host},
            }
        person = self.org.person(index)
        slug = re.sub(r"[^a-z0-9]", "_", person.email.lower())
        return {
            "id": self.site_id(kind, index), "name": person.display_name, "displayName": person.display_name,
            "webUrl": f"https://{self.my_host}/personal/{slug}", "isPersonalSite": True,
            "createdDateTime": gtime(person.created), "lastModifiedDateTime": gtime(REFERENCE_TIME - timedelta(days=1)),
            "description": None, "root": {}, "siteCollection": {"hostName": self.my_host},
        }

    def drive_obj(self, kind: str, index: int) -> dict[str, Any]:
        site = self.site_obj(kind, index)
        if kind == "sp":
            d = self.org.drive(index)
            grp = self._group_by_email(f"{d.department.key}@{self.org.domain}")
            owner = ({"group": {"id": self.guid("group", grp[0]), "displayName": grp[1].name, "email": grp[1].email}}
                     if grp else {"user": {"displayName": "System Account"}})
            return {"id": self.drive_id(kind, index), "driveType": "documentLibrary", "name": "Documents",
                    "description": "", "createdDateTime": site["createdDateTime"],
                    "lastModifiedDateTime": site["lastModifiedDateTime"], "webUrl": site["webUrl"] + "/Shared%20Documents",
                    "owner": owner}
        person = self.org.person(index)
        return {"id": self.drive_id(kind, index), "driveType": "business", "name": "OneDrive", "description": "",
                "createdDateTime": site["createdDateTime"], "lastModifiedDateTime": site["lastModifiedDateTime"],
                "webUrl": site["webUrl"] + "/Documents", "owner": {"user": self._identity(person)}}

    def _sites_all(self, req: Request, p: dict[str, str], token: _Token) -> Response:
        self._require(token, PERMS_SITES, sharepoint=True)
        select = self._select(req, None, "microsoft.graph.site")
        clauses = self._parse_filter(req.arg("$filter"), {"isPersonalSite", "siteCollection/hostName", "name"}, "site")
        top = self._top(req, 200)
        total = self.org.n_drives + self.org.n
        pos = int(self._skip(req).get("p", 0))
        for prop, op, value in clauses:
            if prop == "isPersonalSite" and op == "eq" and value is False:
                total = self.org.n_drives
            elif prop == "isPersonalSite" and op == "eq" and value is True:
                pos = max(pos, self.org.n_drives)
        out = []
        while pos < total and len(out) < top:
            kind, index = ("sp", pos) if pos < self.org.n_drives else ("od", pos - self.org.n_drives)
            pos += 1
            obj = self.site_obj(kind, index)
            if self._matches(obj, clauses):
                out.append(self._project(obj, select, list(obj)))
        body: dict[str, Any] = {"@odata.context": self._context("sites"), "value": out}
        if pos < total:
            body["@odata.nextLink"] = self._next_link(req, "/v1.0/sites/getAllSites", p=pos)
        return self._json(req, body)

    def _site(self, sid: str) -> tuple[str, int]:
        parsed = self.parse_site_id(sid)
        if parsed is None:
            raise GraphError(404, "itemNotFound", "Requested site could not be found")
        return parsed

    def _sites_get(self, req: Request, p: dict[str, str], token: _Token) -> Response:
        self._require(token, PERMS_SITES, sharepoint=True)
        kind, index = self._site(p["sid"])
        obj = self.site_obj(kind, index)
        return self._json(req, {"@odata.context": self._context("sites/$entity"),
                                **self._project(obj, self._select(req, None, "site"), list(obj))})

    def _sites_drives(self, req: Request, p: dict[str, str], token: _Token) -> Response:
        self._require(token, PERMS_FILES, sharepoint=True)
        kind, index = self._site(p["sid"])
        obj = self.drive_obj(kind, index)
        return self._json(req, {"@odata.context": self._context("drives"),
                                "value": [self._project(obj, self._select(req, None, "drive"), list(obj))]})

    def _sites_drive(self, req: Request, p: dict[str, str], token: _Token) -> Response:
        self._require(token, PERMS_FILES, sharepoint=True)
        return self._drive_entity(req, *self._site(p["sid"]))

    def _users_drive(self, req: Request, p: dict[str, str], token: _Token) -> Response:
        self._require(token, PERMS_FILES, sharepoint=True)
        try:
            u = self._resolve_user(p["uid"])
        except GraphError:
            raise GraphError(404, "itemNotFound", "The resource could not be found.") from None
        if not isinstance(u, Person):
            raise GraphError(404, "ResourceNotFound", "User's mysite not found.")
        return self._drive_entity(req, "od", u.index)

    def _drive(self, did: str) -> tuple[str, int]:
        parsed = self.parse_drive_id(did)
        if parsed is None:
            raise GraphError(404, "itemNotFound", "The provided drive id appears to be malformed, or does not represent a valid drive.")
        return parsed

    def _drives_get(self, req: Request, p: dict[str, str], token: _Token) -> Response:
        self._require(token, PERMS_FILES, sharepoint=True)
        return self._drive_entity(req, *self._drive(p["did"]))

    def _drive_entity(self, req: Request, kind: str, index: int) -> Response:
        obj = self.drive_obj(kind, index)
        return self._json(req, {"@odata.context": self._context("drives/$entity"),
                                **self._project(obj, self._select(req, None, "drive"), list(obj))})

    # -- drive items -------------------------------------------------------------------------------
    def _file_count(self, kind: str, index: int) -> int:
        return self.org.drive(index).files if kind == "sp" else self.org.file_count(index)

    def _file_at(self, kind: str, index: int, j: int) -> File | None:
        return self.org.drive_file(index, j) if kind == "sp" else self.org.user_file(index, j)

    def _file_in_drive(self, kind: str, index: int, fid: str) -> File | None:
        f = self.org.find_file(fid)
        if f is None:
            return None
        if (kind == "sp" and f.drive == index) or (kind == "od" and f.drive is None and f.owner == index):
            return f
        return None

    def _root_item(self, kind: str, index: int, prefer: set[str]) -> dict[str, Any]:
        drive = self.drive_obj(kind, index)
        item: dict[str, Any] = {
            "id": self.item_id(self.root_item_key(kind, index)), "name": "root",
            "createdDateTime": drive["createdDateTime"], "lastModifiedDateTime": drive["lastModifiedDateTime"],
            "webUrl": drive["webUrl"], "size": 0,
            "parentReference": {"driveId": drive["id"], "driveType": drive["driveType"]},
            "folder": {"childCount": 1 if self._file_count(kind, index) else 0}, "root": {},
            "fileSystemInfo": {"createdDateTime": drive["createdDateTime"], "lastModifiedDateTime": drive["lastModifiedDateTime"]},
        }
        if "hierarchicalsharing" in prefer:
            # the root of the permission hierarchy carries the (possibly empty) facet
            item["shared"] = {"scope": "users"} if kind == "sp" else {}
        return item

    def _file_item(self, kind: str, index: int, f: File, prefer: set[str]) -> dict[str, Any]:
        drive_id = self.drive_id(kind, index)
        parent_id = self.item_id(f.parent) if f.parent else self.item_id(self.root_item_key(kind, index))
        owner = self._owner_person(kind, index)
        by = {"user": self._identity(owner)} if owner else {"user": {"displayName": "System Account"}}
        t = gtime(f.modified)
        base_url = self.drive_obj(kind, index)["webUrl"]
        item: dict[str, Any] = {
            "id": self.item_id(f.id), "name": f.name, "eTag": f'"{{{uuid.uuid5(NAMESPACE, f.id)}}},1"',
            "createdDateTime": t, "lastModifiedDateTime": t, "size": f.size,
            "webUrl": f"{base_url}/{quote(f.name)}",
            "createdBy": by, "lastModifiedBy": by,
            "parentReference": {"driveId": drive_id, "driveType": "documentLibrary" if kind == "sp" else "business", "id": parent_id},
            "fileSystemInfo": {"createdDateTime": t, "lastModifiedDateTime": t},
        }
        if f.folder:
            item["folder"] = {"childCount": max(self._file_count(kind, index) - 1, 0)}
        else:
            item["cTag"] = f'"c:{{{uuid.uuid5(NAMESPACE, f.id)}}},1"'
            item["file"] = {"mimeType": _mime(f.name), "hashes": {"quickXorHash": _b64u(hashlib.sha1(f.id.encode()).digest()[:20]) + "="}}
        shares = list(f.shares)
        if "hierarchicalsharing" not in prefer and f.parent:
            parent = self.org.find_file(f.parent)
            if parent is not None:
                shares = list(parent.shares) + shares  # without it, inherited sharing shows on every item
        if shares:
            item["shared"] = {"scope": _scope(shares), **({"owner": {"user": self._identity(owner)}} if owner else {})}
        return item

    def _items_get(self, req: Request, p: dict[str, str], token: _Token) -> Response:
        self._require(token, PERMS_FILES, sharepoint=True)
        kind, index = self._drive(p["did"])
        select = self._select(req, None, "driveItem")
        iid = p.get("iid")
        key = self.parse_item_id(iid) if iid else self.root_item_key(kind, index)
        if key == self.root_item_key(kind, index):
            item = self._root_item(kind, index, set())
        else:
            f = self._file_in_drive(kind, index, key or "")
            if f is None:
                raise GraphError(404, "itemNotFound", "The resource could not be found.")
            item = self._file_item(kind, index, f, set())
        return self._json(req, {"@odata.context": self._context("drives('{}')/items/$entity".format(p["did"])),
                                **self._project(item, select, list(item))})

    @staticmethod
    def _prefer(req: Request) -> set[str]:
        return {v.strip().lower() for v in req.headers.get("prefer", "").split(",") if v.strip()}

    def _drive_for_delta(self, p: dict[str, str]) -> tuple[str, int, str]:
        if "did" in p:
            kind, index = self._drive(p["did"])
        elif "sid" in p:
            kind, index = self._site(p["sid"])
        else:
            try:
                u = self._resolve_user(p["uid"])
            except GraphError:
                raise GraphError(404, "itemNotFound", "The resource could not be found.") from None
            if not isinstance(u, Person):
                raise GraphError(404, "ResourceNotFound", "User's mysite not found.")
            kind, index = "od", u.index
        return kind, index, self.drive_id(kind, index)

    def _drive_delta(self, req: Request, p: dict[str, str], token: _Token) -> Response:
        self._require(token, PERMS_FILES, sharepoint=True)
        kind, index, did = self._drive_for_delta(p)
        prefer = self._prefer(req)
        show_sharing = {"deltashowsharingchanges", "deltashowremovedasdeleted", "deltatraversepermissiongaps"} <= prefer
        path = f"/v1.0/drives/{did}/root/delta"
        raw = p.get("tok") or req.arg("token")
        select = self._select(req, None, "driveItem")
        top = self._top(req, self.delta_page_size)
        epoch = (self._delta_epoch.get("*", 0), self._delta_epoch.get(did, 0))
        if raw in (None, ""):
            state: dict[str, Any] = {"d": did, "m": "full", "p": 0, "s": self.org.change_seq, "t": time.time(),
                                     "e": list(epoch), "sel": select, "n": top}
        elif raw == "latest":
            state = {"d": did, "m": "chg", "s": self.org.change_seq, "t": time.time(), "e": list(epoch), "sel": select}
            return self._json(req, {"@odata.context": self._context("Collection(driveItem)"), "value": [],
                                    "@odata.deltaLink": f"{self.base_url}{path}?token={_enc_token(state)}"})
        elif re.match(r"^\d{4}-\d{2}-\d{2}T", raw):  # ODB/SharePoint accept a timestamp as the token
            try:
                since = datetime.fromisoformat(raw.replace("Z", "+00:00"))
            except ValueError:
                raise GraphError(400, "invalidRequest", "Invalid timestamp token.") from None
            seq = next((c["seq"] - 1 for c in self.org.overlay.changes
                        if datetime.fromisoformat(c["time"].replace("Z", "+00:00")) >= since), self.org.change_seq)
            state = {"d": did, "m": "chg", "s": seq, "t": time.time(), "e": list(epoch), "sel": select}
        else:
            dec = _dec_token(raw)
            if dec is None or dec.get("d") != did or "m" not in dec:
                raise GraphError(400, "invalidRequest", "Provided sync token is malformed.")
            state = dec
            if tuple(state.get("e", (0, 0))) != epoch or time.time() - float(state.get("t", 0)) > self.delta_horizon_s:
                fresh = f"{self.base_url}{path}" + (f"?$select={','.join(state['sel'])}" if state.get("sel") else "")
                raise GraphError(410, "resyncRequired", RESYNC_MESSAGE, {"Location": fresh},
                                 {"code": "resyncChangesApplyDifferences"})
        select = state.get("sel")
        top = int(state.get("n") or top)
        out: list[dict[str, Any]] = []
        applied = sorted(prefer & {"hierarchicalsharing", "deltashowremovedasdeleted", "deltatraversepermissiongaps", "deltashowsharingchanges"})
        headers = {"Preference-Applied": ", ".join(applied)} if applied else {}
        if state["m"] == "full":
            pos, count = int(state["p"]), self._file_count(kind, index)
            while pos <= count and len(out) < top:
                if pos == 0:
                    out.append(self._root_item(kind, index, prefer))
                else:
                    f = self._file_at(kind, index, pos - 1)
                    if f is not None:
                        out.append(self._file_item(kind, index, f, prefer))
                pos += 1
            if pos <= count:
                nxt = f"{self.base_url}{path}?token={_enc_token({**state, 'p': pos})}"
                return self._json(req, {"@odata.context": self._context("Collection(driveItem)"),
                                        "value": [self._project(i, select, list(i), keep=("deleted", "@microsoft.graph.sharedChanged")) for i in out],
                                        "@odata.nextLink": nxt}, headers=headers)
            seq = int(state["s"])
        else:
            seq_from = int(state["s"])
            seq = self.org.change_seq
            latest: dict[str, str] = {}  # fid -> "file" | "file_removed" (latest state wins)
            for change in self.org.changes_since(seq_from)[: seq - seq_from]:
                if change["kind"] not in ("file", "file_removed"):
                    continue
                mine = (kind == "sp" and change.get("drive") == index) or (
                    kind == "od" and change.get("drive") is None and change.get("owner") == index)
                if mine:
                    latest.pop(change["file_id"], None)
                    latest[change["file_id"]] = change["kind"]
            items: dict[str, dict[str, Any]] = {}  # latest occurrence wins, in emission order

            def put(item: dict[str, Any]) -> None:
                items.pop(item["id"], None)
                items[item["id"]] = item

            root_id = self.item_id(self.root_item_key(kind, index))
            for fid, what in latest.items():
                f = self.org.find_file(fid)
                if "deltaexcludeparent" not in prefer:  # parents come along unless excluded
                    if root_id not in items:
                        put(self._root_item(kind, index, prefer))
                    parent_key = (f.parent if f else None) or _parent_of(fid)
                    parent = self.org.find_file(parent_key) if parent_key else None
                    if parent is not None and parent.id != fid and self.item_id(parent.id) not in items:
                        put(self._file_item(kind, index, parent, prefer))
                if f is None or what == "file_removed":
                    put({"id": self.item_id(fid), "deleted": {"state": "deleted"},
                         "parentReference": {"driveId": did, "id": self.item_id(_parent_of(fid) or self.root_item_key(kind, index))},
                         "file": {}})
                    continue
                item = self._file_item(kind, index, f, prefer)
                if "hierarchicalsharing" in prefer and "shared" not in item:
                    item["shared"] = {}  # sharing removed: the empty facet tells it from inherited
                if show_sharing and not (f.folder and self.folder_shared_changed_gap):
                    item["@microsoft.graph.sharedChanged"] = "True"
                put(item)
            out = list(items.values())
        state_next = {"d": did, "m": "chg", "s": seq, "t": time.time(), "e": list(epoch), "sel": select, "n": top}
        return self._json(req, {"@odata.context": self._context("Collection(driveItem)"),
                                "value": [self._project(i, select, list(i), keep=("deleted", "@microsoft.graph.sharedChanged")) for i in out],
                                "@odata.deltaLink": f"{self.base_url}{path}?token={_enc_token(state_next)}"}, headers=headers)

    # -- permissions -------------------------------------------------------------------------------
    def _share_perm(self, kind: str, index: int, s: Share, owner: Person | None, n: int) -> dict[str, Any]:
        roles = [ROLE_MAP.get(s.role, "read")]
        perm: dict[str, Any] = {"id": self.perm_id(s.id), "roles": roles, "shareId": "u!" + _b64u(s.id.encode())}
        site = self.site_obj(kind, index)["webUrl"]
        link_url = f"{site}/:{'w' if roles != ['read'] else 'r'}:/g/{_b64u(hashlib.sha256(s.id.encode()).digest()[:18])}"
        if s.expiration is not None:
            perm["expirationDateTime"] = gtime(s.expiration)
        if s.type == "anyone":
            perm["link"] = {"scope": "anonymous", "type": "edit" if roles == ["write"] else "view",
                            "webUrl": link_url, "preventsDownload": False}
            perm["hasPassword"] = False
        elif s.type == "domain":
            perm["link"] = {"scope": "organization", "type": "edit" if roles == ["write"] else "view",
                            "webUrl": link_url, "preventsDownload": False}
        elif s.type == "group":
            found = self._group_by_email(s.email or "")
            if found:
                k, g = found
                ident = {"id": self.guid("group", k), "displayName": g.name, "email": g.email}
                perm["grantedToV2"] = {"group": ident}
                perm["grantedTo"] = {"user": {"id": ident["id"], "displayName": g.name}}
            else:
                perm["grantedToV2"] = {"siteGroup": {"id": str(n), "displayName": s.email or "group", "loginName": s.email or "group"}}
        else:  # a person
            kind_p, who = self._principal_for_email(s.email or "")
            if kind_p == "user":
                perm["grantedToV2"] = {"user": self._identity(who), "siteUser": self._site_user(who, n)}
                perm["grantedTo"] = {"user": {"id": self.user_id(who), "displayName": who.display_name, "email": who.email}}
            elif kind_p == "guest":
                # external people get a "specific people" link (scope users) naming the guest account
                ident = {"user": self._identity(who), "siteUser": self._site_user(who, n)}
                perm["link"] = {"scope": "users", "type": "edit" if roles == ["write"] else "view",
                                "webUrl": link_url, "preventsDownload": False}
                perm["grantedToIdentitiesV2"] = [ident]
                perm["grantedToIdentities"] = [{"user": ident["user"]}]
                if who.state == "PendingAcceptance":
                    perm["invitation"] = {"email": who.email, "signInRequired": True}
            else:
                # nobody in the directory: an invitation by e-mail, not redeemed (no grantedTo yet)
                perm["invitation"] = {"email": s.email, "signInRequired": True,
                                      **({"invitedBy": {"user": self._identity(owner)}} if owner else {})}
        return perm

    def _base_perms(self, kind: str, index: int) -> list[dict[str, Any]]:
        if kind == "od":
            person = self.org.person(index)
            return [{"id": self.perm_id(f"owner:{person.uid}"), "roles": ["owner"],
                     "grantedToV2": {"user": self._identity(person), "siteUser": self._site_user(person, 3)},
                     "grantedTo": {"user": {"id": self.user_id(person), "displayName": person.display_name, "email": person.email}}}]
        d = self.org.drive(index)
        return [self._share_perm(kind, index, m, None, 10 + n) for n, m in enumerate(d.members)]

    def permissions_for(self, kind: str, index: int, key: str) -> list[dict[str, Any]]:
        """Effective permissions of one item (root key or file id): the drive's own (owner or library
        members), the parent folder's sharing, then the item's own sharing."""
        owner = self._owner_person(kind, index)
        did = self.drive_id(kind, index)
        root_ref = {"driveId": did, "id": self.item_id(self.root_item_key(kind, index)), "path": "/drive/root:"}
        if key == self.root_item_key(kind, index):
            return self._base_perms(kind, index)
        f = self._file_in_drive(kind, index, key)
        if f is None:
            raise GraphError(404, "itemNotFound", "The resource could not be found.")
        perms = [self._inherit(p, root_ref) for p in self._base_perms(kind, index)]
        parent = self.org.find_file(f.parent) if f.parent else None
        if parent is not None:
            ref = {"driveId": did, "id": self.item_id(parent.id), "path": f"/drive/root:/{parent.name}"}
            perms += [self._inherit(self._share_perm(kind, index, s, owner, 20 + n), ref) for n, s in enumerate(parent.shares)]
        perms += [self._share_perm(kind, index, s, owner, 40 + n) for n, s in enumerate(f.shares)]
        return perms

    def _inherit(self, perm: dict[str, Any], ref: dict[str, str]) -> dict[str, Any]:
        # The docs: "OneDrive for Business and SharePoint document libraries don't return the
        # inheritedFrom property" -> off by default; ``inherited_from=True`` adds it.
        return {**perm, "inheritedFrom": ref} if self.inherited_from else perm

    def _items_permissions(self, req: Request, p: dict[str, str], token: _Token) -> Response:
        self._require(token, PERMS_FILES, sharepoint=True)
        kind, index = self._drive(p["did"])
        key = self.parse_item_id(p["iid"])
        if key is None:
            raise GraphError(400, "invalidRequest", "Invalid request")
        select = self._select(req, None, "permission")
        perms = self.permissions_for(kind, index, key)
        return self._json(req, {"@odata.context": self._context("Collection(permission)"),
                                "value": [self._project(x, select, list(x)) for x in perms]})


# -- module helpers --------------------------------------------------------------------------------


def _scope(shares: Iterable[Share]) -> str:
    kinds = {s.type for s in shares}
    return "anonymous" if "anyone" in kinds else "organization" if "domain" in kinds else "users"


def _parent_of(fid: str) -> str | None:
    if fid.startswith(("uf", "df")) and "x" in fid and not fid.endswith("x0000"):
        return fid.rsplit("x", 1)[0] + "x0000"
    return None


def _mime(name: str) -> str:
    ext = name.rsplit(".", 1)[-1].lower()
    return {
        "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "pdf": "application/pdf", "csv": "text/csv",
    }.get(ext, "application/octet-stream")

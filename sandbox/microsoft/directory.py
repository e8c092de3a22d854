"""Directory part of the Microsoft stand-in: users (``$filter``, ``signInActivity``, sponsors,
``users/delta``), groups (members, owners, ``groups/delta`` with ``members@delta``), directory roles
(definitions, assignments, PIM eligibility) and the authentication-methods registration report.

Sponsors as Graph serves them: ``$expand=sponsors`` on ``/users`` and ``/users/{id}``, and
``/users/{id}/sponsors`` (users and groups with ``@odata.type``); a ``/users`` listing with
``$expand`` pages at most 100 users whatever ``$top`` asks (Graph's known limit). ``users/delta``
neither expands nor tracks sponsors (Graph: no ``$expand`` on user delta; ``$select`` tracks only
the ``manager`` relationship), and the stand-in ignores a ``$expand`` there."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any, ClassVar

from sandbox.microsoft.common import (
    GLOBAL_ADMIN,
    GROUP_PROPS,
    MAX_TOP,
    NAMESPACE,
    PERMS_ELIGIBILITY,
    PERMS_GROUPS,
    PERMS_ROLES,
    PERMS_USERS,
    ROLE_DEFINITIONS,
    USER_ADMIN,
    USER_DEFAULT_PROPS,
    USER_PROPS,
    GraphError,
    _b64u,
    gtime,
)
from sandbox.microsoft.identity import _Token
from sandbox.org import REFERENCE_TIME, Guest, Person
from sandbox.server import Request, Response

EXPAND_PAGE_MAX = 100  # /users with $expand: at most 100 a page (Graph known issue; $top above it is not refused)


class _Directory:
    """Users, groups, roles and reports (methods of :class:`MicrosoftStandIn`)."""

    # -- representations ---------------------------------------------------------------------------
    def _signin(self, last: datetime | None, key: str) -> dict[str, Any] | None:
        if last is None:
            return None
        rid = str(uuid.uuid5(NAMESPACE, f"{self.org.seed}:signin:{key}:{last.isoformat()}"))
        return {
            "lastSignInDateTime": gtime(last), "lastSignInRequestId": rid,
            "lastNonInteractiveSignInDateTime": gtime(last + timedelta(minutes=7)),
            "lastNonInteractiveSignInRequestId": rid,
            "lastSuccessfulSignInDateTime": gtime(last), "lastSuccessfulSignInRequestId": rid,
        }

    def user_full(self, u: Person | Guest, signin: bool = True) -> dict[str, Any]:
        """Every property the stand-in knows for a user (``signin=False`` skips signInActivity)."""
        if isinstance(u, Person):
            local = u.email.split("@")[0]
            return {
                "id": self.user_id(u), "businessPhones": [], "displayName": u.display_name,
                "givenName": u.given.capitalize(), "surname": u.family.capitalize(),
                "jobTitle": "Contractor" if u.status == "contractor" else None, "mail": u.email,
                "mobilePhone": None, "officeLocation": None, "preferredLanguage": "ja-JP",
                "userPrincipalName": u.email, "accountEnabled": not u.suspended, "userType": "Member",
                "createdDateTime": gtime(u.created), "externalUserState": None,
                "externalUserStateChangeDateTime": None, "creationType": None,
                "department": u.department.name_en,
                "companyName": next((p.name for p in self.org.partners if p.key == u.partner), None),
                "employeeType": "Contractor" if u.status == "contractor" else "Employee",
                "employeeHireDate": f"{u.start.isoformat()}T00:00:00Z", "usageLocation": "JP",
                "otherMails": [], "onPremisesSyncEnabled": None, "mailNickname": local,
                "identities": [{"signInType": "userPrincipalName", "issuer": self.tenant_domain, "issuerAssignedId": u.email}],
                "signInActivity": self._signin(u.last_login, u.uid) if signin else None,
            }
        upn = self.guest_upn(u)
        return {
            "id": self.guest_id(u), "businessPhones": [], "displayName": u.display_name,
            "givenName": None, "surname": None, "jobTitle": None, "mail": u.email, "mobilePhone": None,
            "officeLocation": None, "preferredLanguage": None, "userPrincipalName": upn,
            "accountEnabled": True, "userType": "Guest", "createdDateTime": gtime(u.created),
            "externalUserState": u.state,
            "externalUserStateChangeDateTime": gtime(u.created if u.state == "PendingAcceptance" else u.created + timedelta(days=1)),
            "creationType": "Invitation", "department": None, "companyName": None, "employeeType": None,
            "employeeHireDate": None, "usageLocation": None, "otherMails": [u.email],
            "onPremisesSyncEnabled": None, "mailNickname": u.email.replace("@", "_") + "#EXT#",
            "identities": [{"signInType": "userPrincipalName", "issuer": self.tenant_domain, "issuerAssignedId": upn}],
            "signInActivity": self._signin(u.last_login, u.uid) if signin else None,
        }

    def _sponsors(self, u: Person | Guest) -> list[dict[str, Any]]:
        if isinstance(u, Guest) and u.invited_by is not None and u.invited_by < self.org.n:
            p = self.org.person(u.invited_by)
            return [{"@odata.type": "#microsoft.graph.user", "id": self.user_id(p), "displayName": p.display_name,
                     "mail": p.email, "userPrincipalName": p.email, "jobTitle": None}]
        return []

    def group_obj(self, k: int, g: Any) -> dict[str, Any]:
        nick = g.email.split("@")[0]
        return {
            "id": self.guid("group", k), "displayName": g.name,
            "description": {"all": "All employees", "department": "Department group", "project": "Project team",
                            "partner": "Collaboration with contractors"}.get(g.kind),
            "mail": g.email, "mailEnabled": True, "mailNickname": nick, "securityEnabled": g.kind != "partner",
            "groupTypes": ["Unified"], "visibility": "Private",
            "createdDateTime": gtime(REFERENCE_TIME - timedelta(days=900 - 3 * k)),
            "renewedDateTime": gtime(REFERENCE_TIME - timedelta(days=900 - 3 * k)),
            "securityIdentifier": f"S-1-12-1-{int(self.guid('group', k)[:8], 16)}-{k}",
            "membershipRule": None, "classification": None, "proxyAddresses": [f"SMTP:{g.email}"],
        }

    def _member_ref(self, email: str, full: bool = False, select: list[str] | None = None) -> dict[str, Any]:
        kind, obj = self._principal_for_email(email)
        if kind in ("user", "guest"):
            if full:
                body = self._project(self.user_full(obj), select, USER_DEFAULT_PROPS)
                return {"@odata.type": "#microsoft.graph.user", **body}
            return {"@odata.type": "#microsoft.graph.user", "id": self.user_id(obj) if kind == "user" else self.guest_id(obj)}
        if kind == "group":
            k, g = obj
            body = {"id": self.guid("group", k)}
            if full:
                body.update(displayName=g.name, mail=g.email)
            return {"@odata.type": "#microsoft.graph.group", **body}
        # an address with no directory object behind it (a test added a stranger): stable synthetic id
        body = {"id": str(uuid.uuid5(NAMESPACE, f"{self.org.seed}:email:{email.lower()}"))}
        if full:
            body.update(displayName=email, mail=email, userPrincipalName=email)
        return {"@odata.type": "#microsoft.graph.user", **body}

    def _user_at(self, pos: int) -> Person | Guest:
        return self.org.person(pos) if pos < self.org.n else self.org.guest(pos - self.org.n)

    # -- users -------------------------------------------------------------------------------------
    USER_FILTERABLE: ClassVar[set[str]] = {"userType", "accountEnabled", "mail", "userPrincipalName", "displayName", "creationType",
                       "externalUserState", "department", "companyName", "employeeType", "createdDateTime", "id",
                       "signInActivity/lastSignInDateTime", "signInActivity/lastNonInteractiveSignInDateTime",
                       "signInActivity/lastSuccessfulSignInDateTime"}

    def _users_list(self, req: Request, p: dict[str, str], token: _Token) -> Response:
        self._require(token, PERMS_USERS)
        select = self._select(req, USER_PROPS, "microsoft.graph.user")
        clauses = self._parse_filter(req.arg("$filter"), self.USER_FILTERABLE, "User")
        wants_signin = bool(select and "signInActivity" in select) or any(c[0].startswith("signInActivity") for c in clauses)
        if wants_signin:
            self._require_audit(token)
        top = self._top(req, self.page_size)
        if wants_signin and top > self.signin_page_max:
            raise GraphError(400, "BadRequest", f"Cannot query data for more than {self.signin_page_max} users at a time.")
        expand = self._expand(req, {"sponsors"})
        if expand:  # Graph: a directory listing with $expand stops at 100 a page, whatever $top says
            top = min(top, EXPAND_PAGE_MAX)
        total = self.org.n + self.org.n_guests
        lo, hi = 0, total
        for prop, op, value in clauses:  # index arithmetic for the common partitions
            if prop == "userType" and op == "eq" and isinstance(value, str):
                lo, hi = (self.org.n, total) if value.lower() == "guest" else (0, self.org.n) if value.lower() == "member" else (0, 0)
            if prop == "accountEnabled" and op == "eq" and value is False:
                hi = min(hi, self.org.n)  # guests are never disabled here
        pos = max(int(self._skip(req).get("p", 0)), lo)
        out: list[dict[str, Any]] = []
        while pos < hi and len(out) < top:
            u = self._user_at(pos)
            pos += 1
            full = self.user_full(u, signin=wants_signin)
            if clauses and not self._matches(full, clauses):
                continue
            row = self._project(full, select, USER_DEFAULT_PROPS)
            if "sponsors" in expand:
                row["sponsors"] = self._sponsors(u)
            out.append(row)
        while pos < hi and clauses:  # do not hand out a nextLink to an empty page
            if self._matches(self.user_full(self._user_at(pos), signin=wants_signin), clauses):
                break
            pos += 1
        body: dict[str, Any] = {"@odata.context": self._context("users"), "value": out}
        if pos < hi:
            body["@odata.nextLink"] = self._next_link(req, "/v1.0/users", p=pos)
        return self._json(req, body)

    def _users_get(self, req: Request, p: dict[str, str], token: _Token) -> Response:
        self._require(token, PERMS_USERS)
        select = self._select(req, USER_PROPS, "microsoft.graph.user")
        if select and "signInActivity" in select:
            self._require_audit(token)
        u = self._resolve_user(p["uid"])
        row = self._project(self.user_full(u), select, USER_DEFAULT_PROPS)
        if "sponsors" in self._expand(req, {"sponsors"}):
            row["sponsors"] = self._sponsors(u)
        return self._json(req, {"@odata.context": self._context("users/$entity"), **row})

    def _users_sponsors(self, req: Request, p: dict[str, str], token: _Token) -> Response:
        self._require(token, PERMS_USERS)
        u = self._resolve_user(p["uid"])
        return self._json(req, {"@odata.context": self._context("directoryObjects"), "value": self._sponsors(u)})

    def _users_delta(self, req: Request, p: dict[str, str], token: _Token) -> Response:
        self._require(token, PERMS_USERS)
        state = self._delta_state(req)
        if state is None:  # a new round: enumerate everything, the deltaLink will hold the seq at start
            select = self._select(req, USER_PROPS, "microsoft.graph.user")
            state = {"m": "full", "p": 0, "s": self.org.change_seq, "sel": select, "n": self._top(req, self.delta_page_size)}
        select = [f for f in (state.get("sel") or []) if f != "signInActivity"] or None  # not tracked by delta
        top = int(state.get("n") or self.delta_page_size)
        out: list[dict[str, Any]] = []
        total = self.org.n + self.org.n_guests
        if state["m"] == "full":
            pos = int(state["p"])
            while pos < total and len(out) < top:
                out.append(self._project(self.user_full(self._user_at(pos)), select, USER_DEFAULT_PROPS))
                pos += 1
            if pos < total:
                return self._json(req, {"@odata.context": self._context("users"), "value": out,
                                        "@odata.nextLink": self._delta_link(req, "/v1.0/users/delta", "$skiptoken", {**state, "p": pos})})
            seq = int(state["s"])
        else:
            seq_from = int(state["s"])
            seq = self.org.change_seq
            seen: list[int] = []
            for change in self.org.changes_since(seq_from)[: seq - seq_from]:
                if change["kind"] == "person" and change["index"] not in seen:
                    seen.append(change["index"])
            out = [self._project(self.user_full(self.org.person(i)), select, USER_DEFAULT_PROPS) for i in seen]
        link = self._delta_link(req, "/v1.0/users/delta", "$deltatoken", {"m": "chg", "s": seq, "sel": state.get("sel")})
        return self._json(req, {"@odata.context": self._context("users"), "value": out, "@odata.deltaLink": link})

    # -- groups ------------------------------------------------------------------------------------
    def _groups_list(self, req: Request, p: dict[str, str], token: _Token) -> Response:
        self._require(token, PERMS_GROUPS)
        select = self._select(req, GROUP_PROPS - {"members"}, "microsoft.graph.group")
        clauses = self._parse_filter(req.arg("$filter"), {"displayName", "mail", "mailEnabled", "securityEnabled", "id"}, "Group")
        top = self._top(req, self.page_size)
        groups = self._groups()
        pos = int(self._skip(req).get("p", 0))
        out = []
        while pos < len(groups) and len(out) < top:
            obj = self.group_obj(pos, groups[pos])
            pos += 1
            if clauses and not self._matches(obj, clauses):
                continue
            out.append(self._project(obj, select, sorted(GROUP_PROPS - {"members"})))
        body: dict[str, Any] = {"@odata.context": self._context("groups"), "value": out}
        if pos < len(groups):
            body["@odata.nextLink"] = self._next_link(req, "/v1.0/groups", p=pos)
        return self._json(req, body)

    def _groups_get(self, req: Request, p: dict[str, str], token: _Token) -> Response:
        self._require(token, PERMS_GROUPS)
        select = self._select(req, GROUP_PROPS - {"members"}, "microsoft.graph.group")
        k, g = self._resolve_group(p["gid"])
        return self._json(req, {"@odata.context": self._context("groups/$entity"),
                                **self._project(self.group_obj(k, g), select, sorted(GROUP_PROPS - {"members"}))})

    def _member_page(self, req: Request, g: Any, rows: Callable[[Any, int], Iterator[tuple[str, str]]], path: str) -> Response:
        select = self._select(req, USER_PROPS, "microsoft.graph.directoryObject")
        top = self._top(req, self.page_size)
        pos = int(self._skip(req).get("p", 0))
        out = []
        end = True
        for email, _role in rows(g, pos):
            if len(out) == top:
                end = False
                break
            out.append(self._member_ref(email, full=True, select=select))
        body: dict[str, Any] = {"@odata.context": self._context("directoryObjects"), "value": out}
        if not end:
            body["@odata.nextLink"] = self._next_link(req, path, p=pos + len(out))
        return self._json(req, body)

    def _groups_members(self, req: Request, p: dict[str, str], token: _Token) -> Response:
        self._require(token, PERMS_GROUPS)
        _k, g = self._resolve_group(p["gid"])
        return self._member_page(req, g, self._members_from, f"/v1.0/groups/{p['gid']}/members")

    def _groups_owners(self, req: Request, p: dict[str, str], token: _Token) -> Response:
        self._require(token, PERMS_GROUPS)
        _k, g = self._resolve_group(p["gid"])
        owners = lambda grp, start: itertools.islice(((e, r) for e, r in self.org.group_members(grp) if r == "OWNER"), start, None)
        return self._member_page(req, g, owners, f"/v1.0/groups/{p['gid']}/owners")

    def _members_from(self, g: Any, start: int) -> Iterator[tuple[str, str]]:
        """``org.group_members(g)`` from position ``start``, without walking the skipped rows."""
        return ((email, role) for _pos, email, role in self.org.group_members_from(g, start))

    def _snapshot_groups(self) -> int:
        """The membership overlay as of now, kept under the current change seq (small: only what
        tests changed), so a later ``groups/delta`` round can diff against it."""
        seq, added, removed = self.org.group_overlay()  # a consistent (seq, overlay) pair
        with self._snap_lock:
            self._group_snapshots.setdefault(seq, (added, removed))
        return seq

    def _groups_delta(self, req: Request, p: dict[str, str], token: _Token) -> Response:
        self._require(token, PERMS_GROUPS)
        state = self._delta_state(req)
        if state is None:
            select = self._select(req, GROUP_PROPS, "microsoft.graph.group")
            expand = self._expand(req, {"members"})
            with_members = select is None or "members" in select or "members" in expand
            sel = [f for f in select if f != "members"] if select else None
            state = {"m": "full", "g": 0, "o": 0, "s": self._snapshot_groups(), "sel": sel, "mem": with_members}
        sel, with_members = state.get("sel"), bool(state.get("mem"))
        groups = self._groups()
        defaults = sorted(GROUP_PROPS - {"members"})
        out: list[dict[str, Any]] = []
        if state["m"] == "full":
            gi, off, budget = int(state["g"]), int(state["o"]), self.group_delta_page_members
            page_groups = 0
            while gi < len(groups) and budget > 0 and page_groups < self.page_size:
                obj = self._project(self.group_obj(gi, groups[gi]), sel, defaults)
                if with_members:
                    chunk = []
                    more = False
                    for email, _r in self._members_from(groups[gi], off):
                        if len(chunk) == budget:
                            more = True
                            break
                        chunk.append(self._member_ref(email))
                    if chunk:
                        obj["members@delta"] = chunk
                    budget -= len(chunk)
                    out.append(obj)
                    page_groups += 1
                    if more:
                        off += len(chunk)
                        break
                else:
                    out.append(obj)
                    page_groups += 1
                gi, off = gi + 1, 0
            if gi < len(groups):
                return self._json(req, {"@odata.context": self._context("groups"), "value": out,
                                        "@odata.nextLink": self._delta_link(req, "/v1.0/groups/delta", "$skiptoken", {**state, "g": gi, "o": off})})
            seq = int(state["s"])
        else:
            seq_from = int(state["s"])
            seq = self._snapshot_groups()
            changed: list[str] = []
            for change in self.org.changes_since(seq_from)[: seq - seq_from]:
                if change["kind"] == "group" and change["group"] not in changed:
                    changed.append(change["group"])
            for key in changed:
                k = next((i for i, g in enumerate(groups) if g.key == key), None)
                if k is None:
                    continue
                obj = self._project(self.group_obj(k, groups[k]), sel, defaults)
                if with_members:
                    obj["members@delta"] = self._membership_diff(groups[k], seq_from, seq)
                out.append(obj)
        link = self._delta_link(req, "/v1.0/groups/delta", "$deltatoken", {"m": "chg", "s": seq, "sel": sel, "mem": with_members})
        return self._json(req, {"@odata.context": self._context("groups"), "value": out, "@odata.deltaLink": link})

    def _membership_diff(self, g: Any, seq_from: int, seq_to: int) -> list[dict[str, Any]]:
        with self._snap_lock:
            then, now = self._group_snapshots.get(seq_from), self._group_snapshots.get(seq_to)
        if then is None or now is None:  # no snapshot (token from another server): the full list
            return [self._member_ref(e) for e, _ in self.org.group_members(g)]
        candidates = set()
        for added, removed in (then, now):
            candidates |= added.get(g.key, frozenset()) | removed.get(g.key, frozenset())
        base = {e for e in candidates if self.org.is_base_member(g, e)}

        def member(email: str, snap: tuple[dict[str, frozenset[str]], dict[str, frozenset[str]]]) -> bool:
            added, removed = snap
            return email in added.get(g.key, frozenset()) or (email in base and email not in removed.get(g.key, frozenset()))

        out = []
        for email in sorted(candidates):
            was, is_ = member(email, then), member(email, now)
            if was and not is_:
                out.append({**self._member_ref(email), "@removed": {"reason": "deleted"}})
            elif is_ and not was:
                out.append(self._member_ref(email))
        return out

    # -- roles -------------------------------------------------------------------------------------
    def _role_definitions(self, req: Request, p: dict[str, str], token: _Token) -> Response:
        self._require(token, PERMS_ROLES)
        select = self._select(req, None, "microsoft.graph.unifiedRoleDefinition")
        clauses = self._parse_filter(req.arg("$filter"), {"displayName", "templateId", "id", "isBuiltIn"}, "unifiedRoleDefinition")
        out = []
        for rid, name, desc, actions in ROLE_DEFINITIONS:
            obj = {"id": rid, "description": desc, "displayName": name, "isBuiltIn": True, "isEnabled": True,
                   "resourceScopes": ["/"], "templateId": rid, "version": "1",
                   "rolePermissions": [{"allowedResourceActions": actions, "condition": None}]}
            if self._matches(obj, clauses):
                out.append(self._project(obj, select, list(obj)))
        return self._json(req, {"@odata.context": self._context("roleManagement/directory/roleDefinitions"), "value": out})

    def _admins(self) -> list[tuple[str, int]]:
        """``(role template id, person index)`` for every active directory-role assignment."""
        seq = self.org.change_seq
        cached = self._admin_cache
        if cached is not None and cached[0] == seq:
            return cached[1]
        rows: list[tuple[str, int]] = []
        for person in self.org.people():
            if person.admin:
                rows.append((GLOBAL_ADMIN, person.index))
            if person.delegated_admin:
                rows.append((USER_ADMIN, person.index))
        self._admin_cache = (seq, rows)
        return rows

    def _principal_obj(self, u: Person | Guest) -> dict[str, Any]:
        full = self.user_full(u)
        return {"@odata.type": "#microsoft.graph.user", **{k: full[k] for k in USER_DEFAULT_PROPS},
                "accountEnabled": full["accountEnabled"], "userType": full["userType"]}

    def _role_assignments(self, req: Request, p: dict[str, str], token: _Token) -> Response:
        self._require(token, PERMS_ROLES)
        expand = self._expand(req, {"principal", "roleDefinition"})
        clauses = self._parse_filter(req.arg("$filter"), {"roleDefinitionId", "principalId", "directoryScopeId"}, "unifiedRoleAssignment")
        top = self._top(req, MAX_TOP)
        rows = self._admins()
        pos = int(self._skip(req).get("p", 0))
        out = []
        while pos < len(rows) and len(out) < top:
            role, i = rows[pos]
            pos += 1
            person = self.org.person(i)
            pid = self.user_id(person)
            obj: dict[str, Any] = {
                "id": _b64u(uuid.UUID(role).bytes + uuid.UUID(pid).bytes) + "-1",
                "principalId": pid, "roleDefinitionId": role, "directoryScopeId": "/", "appScopeId": None,
                "principalOrganizationId": self.tenant_id,
            }
            if not self._matches(obj, clauses):
                continue
            if "principal" in expand:
                obj["principal"] = self._principal_obj(person)
            if "roleDefinition" in expand:
                obj["roleDefinition"] = next({"id": r, "displayName": n, "templateId": r, "isBuiltIn": True}
                                             for r, n, _, _ in ROLE_DEFINITIONS if r == role)
            out.append(obj)
        body: dict[str, Any] = {"@odata.context": self._context("roleManagement/directory/roleAssignments"), "value": out}
        if pos < len(rows):
            body["@odata.nextLink"] = self._next_link(req, "/v1.0/roleManagement/directory/roleAssignments", p=pos)
        return self._json(req, body)

    def eligible_assignments(self) -> list[tuple[str, int]]:
        """PIM: one eligible (not active) Global Administrator — person 6."""
        return [(GLOBAL_ADMIN, 6 % self.org.n)]

    def _role_eligibility(self, req: Request, p: dict[str, str], token: _Token) -> Response:
        self._require(token, PERMS_ELIGIBILITY)
        if not self.premium:
            raise GraphError(400, "AadPremiumLicenseRequired", "The tenant needs an AAD Premium 2 license.")
        expand = self._expand(req, {"principal", "roleDefinition"})
        out = []
        for role, i in self.eligible_assignments():
            person = self.org.person(i)
            obj: dict[str, Any] = {
                "id": str(uuid.uuid5(NAMESPACE, f"{self.org.seed}:eligible:{role}:{i}")),
                "principalId": self.user_id(person), "roleDefinitionId": role, "directoryScopeId": "/",
                "appScopeId": None, "createdUsing": None, "createdDateTime": gtime(REFERENCE_TIME - timedelta(days=60)),
                "modifiedDateTime": None, "status": "Provisioned", "memberType": "Direct",
                "scheduleInfo": {"startDateTime": gtime(REFERENCE_TIME - timedelta(days=60)), "recurrence": None,
                                 "expiration": {"type": "afterDateTime", "endDateTime": gtime(REFERENCE_TIME + timedelta(days=305)), "duration": None}},
            }
            if "principal" in expand:
                obj["principal"] = self._principal_obj(person)
            out.append(obj)
        return self._json(req, {"@odata.context": self._context("roleManagement/directory/roleEligibilitySchedules"), "value": out})

    # -- reports -----------------------------------------------------------------------------------
    def registration(self, u: Person | Guest) -> dict[str, Any]:
        person = isinstance(u, Person)
        mfa = bool(person and u.mfa)
        return {
            "id": self.user_id(u) if person else self.guest_id(u),
            "userPrincipalName": u.email if person else self.guest_upn(u),
            "userDisplayName": u.display_name,
            "userType": "member" if person else "guest",
            "isAdmin": bool(person and (u.admin or u.delegated_admin)),
            "isSsprRegistered": mfa, "isSsprEnabled": person, "isSsprCapable": mfa,
            "isMfaRegistered": mfa, "isMfaCapable": mfa, "isPasswordlessCapable": False,
            "isSystemPreferredAuthenticationMethodEnabled": True,
            "methodsRegistered": ["microsoftAuthenticatorPush", "softwareOneTimePasscode"] if mfa else [],
            "systemPreferredAuthenticationMethods": ["push"] if mfa else [],
            "userPreferredMethodForSecondaryAuthentication": "push" if mfa else "none",
            "lastUpdatedDateTime": gtime(REFERENCE_TIME - timedelta(hours=6)),
        }

    def _registration(self, req: Request, p: dict[str, str], token: _Token) -> Response:
        self._require_audit(token)
        clauses = self._parse_filter(req.arg("$filter"), {"isAdmin", "isMfaRegistered", "isMfaCapable", "userType",
                                                          "userPrincipalName", "isSsprRegistered"}, "userRegistrationDetails")
        total = self.org.n + self.org.n_guests
        pos = int(self._skip(req).get("p", 0))
        out = []
        while pos < total and len(out) < self.report_page_size:
            u = self._user_at(pos)
            pos += 1
            if isinstance(u, Person) and u.suspended:
                continue  # the report does not cover disabled users (documented)
            row = self.registration(u)
            if self._matches(row, clauses):
                out.append(row)
        body: dict[str, Any] = {"@odata.context": self._context("reports/authenticationMethods/userRegistrationDetails"), "value": out}
        if pos < total:
            body["@odata.nextLink"] = self._next_link(req, "/v1.0/reports/authenticationMethods/userRegistrationDetails", p=pos)
        return self._json(req, body)

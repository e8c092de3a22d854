"""Admin SDK Directory v1: users, groups, members, roles, role assignments and OAuth tokens."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

from sandbox.google.auth import SCOPE
from sandbox.google.common import _Ctx, _digest, _etag, _num, _page
from sandbox.google.errors import _bad_request, _dir_forbidden, _dir_not_found, _invalid
from sandbox.google.fields import _Pre, _sub_mask, apply_fields
from sandbox.org import DEPARTMENTS, Group, Person, iso

# Admin roles: (key, description, super admin?, privileges)
_ROLES = (
    ("_SEED_ADMIN_ROLE", "Google Workspace Administrator Seed Role", True, (("SUPER_ADMIN", "01ci93xb3tmzyin"),)),
    ("_GROUPS_ADMIN_ROLE", "Groups Administrator", False, (("GROUPS_ALL", "00haapch16h1ysv"),)),
    ("_USER_MANAGEMENT_ADMIN_ROLE", "User Management Administrator", False, (("USERS_ALL", "00haapch16h1ysv"),)),
    ("_HELP_DESK_ADMIN_ROLE", "Help Desk Administrator", False, (("USERS_RETRIEVE", "00haapch16h1ysv"), ("USERS_RESET_PASSWORD", "00haapch16h1ysv"))),
    ("_SERVICES_ADMIN_ROLE", "Services Administrator", False, (("MANAGE_SERVICES", "00haapch16h1ysv"),)),
    ("_MOBILE_ADMIN_ROLE", "Mobile Administrator", False, (("MANAGE_DEVICES", "03hv69ve4bjwe54"),)),
)

# Third-party OAuth apps for tokens.list: (clientId, displayText, scopes, anonymous, nativeApp)
_APPS = (
    ("407408718192.apps.googleusercontent.com", "Google APIs Explorer", (SCOPE + "drive.readonly",), False, False),
    ("1070009224336-sdh77n7uot3oc99ais00jmuft6sk2fg9.apps.googleusercontent.com", "Slack", ("openid", SCOPE + "userinfo.email", SCOPE + "calendar.readonly"), False, False),
    ("946018238758-bi6ni53dfoddlgn97pk3b8i7nphige40.apps.googleusercontent.com", "Microsoft Outlook", ("https://mail.google.com/", SCOPE + "calendar"), False, True),
    ("523906431284-freee.apps.googleusercontent.com", "会計freee", (SCOPE + "spreadsheets", "openid"), False, False),
    ("300553211155-unknown.apps.googleusercontent.com", "不明なファイル変換アプリ", (SCOPE + "drive",), True, False),
)


class DirectoryMixin:
    """The Directory methods of :class:`sandbox.google.GoogleStandIn` and group membership lookups."""

    def user_id(self, i: int) -> str:
        return str(self._id_base + i)

    def group_id(self, g: Group) -> str:
        return "0" + base64.b32encode(_digest(self.org.seed, "group", g.key, size=10)).decode().lower()[:14]

    # -- group membership (Drive's group grants use it too) ---------------------------------------
    def _group_has(self, group: Group, email: str) -> bool:
        ov = self.org.overlay
        if email in ov.group_added.get(group.key, ()):
            return True
        if email in ov.group_removed.get(group.key, ()):
            return False
        return self.org.is_base_member(group, email)

    def _in_group_email(self, group_email: str | None, email: str) -> bool:
        group = self._group_by_email.get((group_email or "").lower())
        return group is not None and self._group_has(group, email)

    def _direct_members_count(self, group: Group) -> int:
        ov = self.org.overlay
        if group.key in ov.group_added or group.key in ov.group_removed:
            return sum(1 for _ in self.org.group_members(group))
        # Org has no public group size: the two large kinds by index arithmetic (as Org does),
        # project / partner groups counted once (a partner group lists every guest)
        if group.kind == "all":
            return self.org.n
        if group.kind == "department":
            return len(range(DEPARTMENTS.index(group.department), self.org.n, len(DEPARTMENTS)))
        n = self._small_group_sizes.get(group.key)
        if n is None:
            n = self._small_group_sizes[group.key] = sum(1 for _ in self.org.group_members(group))
        return n

    # -- Directory ------------------------------------------------------------------------------
    def _require_admin(self, ctx: _Ctx) -> None:
        if ctx.caller is None or not ctx.caller.admin:
            raise _dir_forbidden()

    def _check_customer(self, customer: str | None) -> None:
        if customer not in ("my_customer", self.customer_id):
            raise _bad_request()

    def _person_by_key(self, key: str) -> Person | None:
        if key.isdigit():
            i = int(key) - self._id_base
            return self.org.person(i) if 0 <= i < self.org.n else None
        p = self.org.person_by_email(key)
        if p is None and "@" in key:
            for i in self._alias_candidates(key):
                if key.lower() in (a.lower() for a in self._aliases(self.org.person(i))):
                    return self.org.person(i)
        return p

    def _alias_candidates(self, key: str) -> list[int]:
        digits = "".join(ch for ch in key.split("@")[0] if ch.isdigit())
        return [int(digits)] if digits and int(digits) < self.org.n else []

    def _aliases(self, p: Person) -> list[str]:
        return [f"{p.family}{p.index}@{self.org.domain}"] if p.index % 10 == 0 else []

    def _user(self, i: int, projection: str = "basic") -> dict[str, Any]:
        version = self.org.change_seq
        key = (i, version)
        cached = self._user_cache.get(key)
        if cached is None:
            cached = self._build_user(self.org.person(i))
            if len(self._user_cache) > 4096:
                self._user_cache.clear()
            self._user_cache[key] = cached
        if projection == "full":
            p = self.org.person(i)
            return {**cached, "customSchemas": {"Employment": {"status": p.status, **({"partner": p.partner} if p.partner else {})}}}
        return cached

    def _user_json(self, i: int, projection: str, mask: Any, fields: str) -> bytes:
        """One user resource, filtered and encoded; cached per organisation version."""
        key = (i, self.org.change_seq, projection, fields)
        data = self._user_bytes.get(key)
        if data is None:
            data = json.dumps(apply_fields(self._user(i, projection), mask), ensure_ascii=False).encode()
            if len(self._user_bytes) > 20_000:   # bounded: ~25 MB at most, whatever the tenant size
                self._user_bytes.clear()
            self._user_bytes[key] = data
        return data

    def _build_user(self, p: Person) -> dict[str, Any]:
        family_ja, _, given_ja = p.name_ja.partition(" ")
        u: dict[str, Any] = {
            "kind": "admin#directory#user", "id": self.user_id(p.index),
            "etag": _etag(self.org.seed, "user", p.index, p.email, p.suspended, p.admin, p.delegated_admin, p.mfa, p.last_login),
            "primaryEmail": p.email,
            "name": {"givenName": given_ja, "familyName": family_ja, "fullName": p.name_ja},
            "isAdmin": p.admin, "isDelegatedAdmin": p.delegated_admin,
            "lastLoginTime": iso(p.last_login) or "1970-01-01T00:00:00.000Z",
            "creationTime": iso(p.created),
            "agreedToTerms": p.last_login is not None,
            "suspended": p.suspended,
            "archived": False,
            "changePasswordAtNextLogin": False,
            "ipWhitelisted": False,
            "emails": [{"address": p.email, "primary": True}],
            "languages": [{"languageCode": "ja", "preference": "preferred"}],
            "externalIds": [{"value": p.uid, "type": "organization"}],
            "organizations": [{"department": p.department.name_ja, "primary": True, "customType": ""}],
            "customerId": self.customer_id,
            "orgUnitPath": f"/{p.department.name_ja}" + ("/委託先" if p.status == "contractor" else ""),
            "isMailboxSetup": True,
            "isEnrolledIn2Sv": p.mfa,
            "isEnforcedIn2Sv": p.mfa and (p.admin or p.department.key == "jousys"),
            "includeInGlobalAddressList": True,
            "thumbnailPhotoUrl": f"https://lh3.googleusercontent.com/a-/sandbox-{p.uid}",
        }
        if p.suspended:
            u["suspensionReason"] = "ADMIN"
        if p.manager is not None:
            u["relations"] = [{"value": self.org.person(p.manager).email, "type": "manager"}]
        aliases = self._aliases(p)
        if aliases:
            u["aliases"] = aliases
        u["nonEditableAliases"] = [p.email.replace(f"@{self.org.domain}", f"@{self.org.domain.split('.')[0]}.test-google-a.com")]
        return u

    def _users_list(self, ctx: _Ctx) -> dict[str, Any]:
        self._require_admin(ctx)
        customer, domain = ctx.arg("customer"), ctx.arg("domain")
        if not customer and not domain:
            raise _bad_request()
        if customer:
            self._check_customer(customer)
        if domain and domain.lower() != self.org.domain:
            raise _dir_forbidden()
        projection = ctx.arg("projection", "basic")
        if projection not in ("basic", "full", "custom"):
            raise _invalid("projection", f"Invalid value '{projection}'. Valid values are: [basic, custom, full]")
        if ctx.arg("query"):
            raise _invalid("query", "Invalid Input: query is not supported by the shoseki sandbox", reason="invalidInput")
        size = self._size(ctx, "maxResults", 100, 500, coerce=False)
        start = self._start(ctx, "users")
        body: dict[str, Any] = {"kind": "admin#directory#users", "etag": _etag(self.org.seed, "users", start, self.org.change_seq)}
        if (ctx.arg("showDeleted") or "").lower() == "true":
            return body
        end = min(self.org.n, start + size)
        sub = _sub_mask(ctx.mask, "users")
        if sub is not False:
            body["users"] = _Pre(self._user_json(i, projection, sub, ctx.fields) for i in range(start, end))
        if end < self.org.n:
            body["nextPageToken"] = self._tok("users", end)
        return body

    def _users_get(self, ctx: _Ctx) -> dict[str, Any]:
        self._require_admin(ctx)
        p = self._person_by_key(ctx.path["userKey"])
        if p is None:
            raise _dir_not_found("userKey")
        return self._user(p.index, ctx.arg("projection", "basic"))

    def _group(self, g: Group) -> dict[str, Any]:
        local = g.email.split("@")[0]
        return {
            "kind": "admin#directory#group", "id": self.group_id(g), "etag": _etag(self.org.seed, "group", g.key),
            "email": g.email, "name": g.name, "directMembersCount": str(self._direct_members_count(g)),
            "description": g.name, "adminCreated": True,
            "nonEditableAliases": [f"{local}@{self.org.domain.split('.')[0]}.test-google-a.com"],
        }

    def _group_by_key(self, key: str) -> Group:
        g = self._group_by_id.get(key) or self._group_by_email.get(key.lower())
        if g is None:
            raise _dir_not_found("groupKey")
        return g

    def _groups_list(self, ctx: _Ctx) -> dict[str, Any]:
        self._require_admin(ctx)
        customer, domain, user_key = ctx.arg("customer"), ctx.arg("domain"), ctx.arg("userKey")
        if not customer and not domain and not user_key:
            raise _bad_request()
        if customer:
            self._check_customer(customer)
        if domain and domain.lower() != self.org.domain:
            raise _dir_forbidden()
        member_email = None
        if user_key:
            p = self._person_by_key(user_key) or self.org.guest_by_email(user_key)   # either: case-insensitive
            member_email = p.email if p else (user_key if "@" in user_key else None)
            if member_email is None:
                raise _dir_not_found("userKey")
        size = self._size(ctx, "maxResults", 200, 200, coerce=True)
        tag = f"groups:{member_email or ''}"
        start = self._start(ctx, tag)

        def source() -> Iterator[tuple[int, Group]]:
            for k in range(start, len(self._groups)):
                g = self._groups[k]
                if member_email is None or self._group_has(g, member_email):
                    yield k, g

        items, nxt = _page(source(), size)
        body: dict[str, Any] = {"kind": "admin#directory#groups", "etag": _etag(self.org.seed, "groups", start, self.org.change_seq)}
        if items:
            body["groups"] = [self._group(g) for g in items]
        if nxt is not None:
            body["nextPageToken"] = self._tok(tag, nxt)
        return body

    def _groups_get(self, ctx: _Ctx) -> dict[str, Any]:
        self._require_admin(ctx)
        return self._group(self._group_by_key(ctx.path["groupKey"]))

    def _member(self, email: str, role: str) -> dict[str, Any]:
        m: dict[str, Any] = {"kind": "admin#directory#member", "etag": _etag(self.org.seed, "member", email, role)}
        group = self._group_by_email.get(email.lower())
        if group is not None:
            m.update(id=self.group_id(group), email=email, role=role, type="GROUP", status="ACTIVE")
            return m
        p = self.org.person_by_email(email)
        if p is not None:
            m.update(id=self.user_id(p.index), email=email, role=role, type="USER",
                     status="SUSPENDED" if p.suspended else "ACTIVE")
            return m
        g = self.org.guest_by_email(email)
        ext = self._ext_base + g.index if g is not None else int(_num(email, digits=21)) // 10 + 7 * 10 ** 19
        m.update(id=str(ext), email=email, role=role, type="USER", status="ACTIVE")
        return m

    def _members_list(self, ctx: _Ctx) -> dict[str, Any]:
        self._require_admin(ctx)
        group = self._group_by_key(ctx.path["groupKey"])
        roles = {r.strip().upper() for r in (ctx.arg("roles") or "").split(",") if r.strip()}
        size = self._size(ctx, "maxResults", 200, 200, coerce=True)
        tag = f"members:{group.key}:{','.join(sorted(roles))}"
        start = self._start(ctx, tag)
        source = ((pos, (e, r)) for pos, e, r in self.org.group_members_from(group, start) if not roles or r in roles)
        items, nxt = _page(source, size)
        body: dict[str, Any] = {"kind": "admin#directory#members", "etag": _etag(self.org.seed, "members", group.key, start)}
        if items:
            body["members"] = [self._member(e, r) for e, r in items]
        if nxt is not None:
            body["nextPageToken"] = self._tok(tag, nxt)
        return body

    def role_id(self, key: str) -> str:
        return _num(self.org.seed, "role", key, digits=16)

    def _roles_list(self, ctx: _Ctx) -> dict[str, Any]:
        self._require_admin(ctx)
        self._check_customer(ctx.path["customer"])
        size = self._size(ctx, "maxResults", 100, 100, coerce=False)
        start = self._start(ctx, "roles")
        items = [{
            "kind": "admin#directory#role", "etag": _etag(self.org.seed, "role", key), "roleId": self.role_id(key),
            "roleName": key, "roleDescription": desc, "isSystemRole": True, "isSuperAdminRole": sup,
            "rolePrivileges": [{"privilegeName": n, "serviceId": s} for n, s in privs],
        } for key, desc, sup, privs in _ROLES[start:start + size]]
        body: dict[str, Any] = {"kind": "admin#directory#roles", "etag": _etag(self.org.seed, "roles", start), "items": items}
        if start + size < len(_ROLES):
            body["nextPageToken"] = self._tok("roles", start + size)
        return body

    def _assignments(self) -> tuple[tuple[str, int], ...]:
        """(role key, person index) of every admin-role assignment; scanned once per org version."""
        version = self.org.change_seq
        if self._admin_cache is None or self._admin_cache[0] != version:
            supers, delegated = [], []
            for p in self.org.people():
                if p.admin:
                    supers.append(("_SEED_ADMIN_ROLE", p.index))
                if p.delegated_admin:
                    delegated.append(("_HELP_DESK_ADMIN_ROLE", p.index))
            self._admin_cache = (version, tuple(supers + delegated))
        return self._admin_cache[1]

    def _role_assignments_list(self, ctx: _Ctx) -> dict[str, Any]:
        self._require_admin(ctx)
        self._check_customer(ctx.path["customer"])
        size = self._size(ctx, "maxResults", 100, 200, coerce=False)
        role_filter, user_key = ctx.arg("roleId"), ctx.arg("userKey")
        if role_filter and user_key:
            raise _bad_request("Only one of roleId and userKey may be specified.")
        user_index = None
        if user_key:
            p = self._person_by_key(user_key)
            if p is None:
                raise _dir_not_found("userKey")
            user_index = p.index
        tag = f"ra:{role_filter or ''}:{user_index if user_index is not None else ''}"
        start = self._start(ctx, tag)
        all_assignments = self._assignments()

        def source() -> Iterator[tuple[int, tuple[str, int]]]:
            for k in range(start, len(all_assignments)):
                key, i = all_assignments[k]
                if role_filter and self.role_id(key) != role_filter:
                    continue
                if user_index is not None and i != user_index:
                    continue
                yield k, (key, i)

        items, nxt = _page(source(), size)
        body: dict[str, Any] = {"kind": "admin#directory#roleAssignments", "etag": _etag(self.org.seed, "ra", start, self.org.change_seq),
                                "items": [{
                                    "kind": "admin#directory#roleAssignment", "etag": _etag(self.org.seed, "ra", key, i),
                                    "roleAssignmentId": _num(self.org.seed, "assignment", key, i, digits=16),
                                    "roleId": self.role_id(key), "assignedTo": self.user_id(i),
                                    "assigneeType": "USER", "scopeType": "CUSTOMER",
                                } for key, i in items]}
        if nxt is not None:
            body["nextPageToken"] = self._tok(tag, nxt)
        return body

    def user_tokens(self, i: int) -> list[tuple[str, str, tuple[str, ...], bool, bool]]:
        """The third-party apps person ``i`` has authorised (deterministic)."""
        if i == 2:  # planted: an anonymous app with full Drive access
            return [_APPS[1], _APPS[4]]
        r = _digest(self.org.seed, "tokens", i)
        if r[0] < 150:
            return []
        return [_APPS[k] for k in sorted({r[1] % 4, r[2] % 4})][: 1 + r[3] % 2]

    def _tokens_list(self, ctx: _Ctx) -> dict[str, Any]:
        self._require_admin(ctx)
        p = self._person_by_key(ctx.path["userKey"])
        if p is None:
            raise _dir_not_found("userKey")
        body: dict[str, Any] = {"kind": "admin#directory#tokenList", "etag": _etag(self.org.seed, "tokens", p.index)}
        apps = self.user_tokens(p.index)
        if apps:
            body["items"] = [{
                "kind": "admin#directory#token", "etag": _etag(self.org.seed, "token", p.index, client),
                "clientId": client, "displayText": text, "scopes": list(scopes), "anonymous": anonymous,
                "nativeApp": native, "userKey": self.user_id(p.index),
            } for client, text, scopes, anonymous, native in apps]
        return body

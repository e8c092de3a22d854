"""Google Workspace directory: users, groups and their members, admin roles, optional OAuth grants.

What it reads (Admin SDK Directory API v1, acting as ``admin_subject`` through the service
account's domain-wide delegation; the cheapest correct plan of apis.md §1.1):

* ``roles.list`` (100 a page) and ``roleAssignments.list`` (200 a page): the admin roles and who
  holds them;
* ``users.list`` (``projection=basic``, 500 a page, a ``fields=`` mask of exactly what is mapped);
* ``groups.list`` (200 a page);
* ``members.list`` for every group, 200 a page, sent in HTTP batches of ``batch_size`` inner
  calls (a group with more members has its next page in the next batch);
* with ``oauth_tokens = true`` only: ``tokens.list`` for every user (there is no tenant-wide
  list), batched the same way.

Every response page goes to the bag's raw stream and every call, retry and throttle is counted
in run.json by the shared client layer (:mod:`connectors._google`), which also keeps the
calls under ``requests_per_minute`` (Directory's documented 2,400 queries a minute per user per
project).

Mapping onto the record model (ids from :func:`connectors._google.user_pid` /
:func:`~connectors._google.group_pid`, so the Drive connector's grants join these principals):

* principals:
    - a user → ``user:<primary email>`` (kind ``user``): ``enabled`` = not suspended and not
      archived, ``mfa`` = enrolled in 2-Step Verification, ``admin`` = super or delegated admin,
      ``roles`` = names of the admin roles assigned to the user directly, ``last_sign_in``
      (``None`` for Google's "never", 1970-01-01), ``created``; ``attributes`` hold the Google
      id, aliases, org unit, suspended, archived, ``is_super_admin``, ``is_delegated_admin`` and
      ``mfa_enforced``;
    - a group → ``group:<email>`` (kind ``group``);
    - an admin role → ``role:<roleId>`` (kind ``role``);
    - every distinct member address outside the organisation's domains → ``user:<email>``
      (or ``group:<email>``) with ``external = true`` and ``attributes.source = "group
      membership"``, so external group members can be found among the principals too;
    - a ``CUSTOMER`` member (the whole organisation) → ``domain:<customer id>``.
* memberships: group → member, ``role`` = ``owner`` / ``manager`` / ``member``;
  ``attributes`` = member type, status, Google id and ``external``.
* resources: the tenant, ``google-workspace:<customer id>`` (kind ``account``); with
  ``oauth_tokens``, one ``oauth-client:<client id>`` (kind ``oauth_app``) per third-party app.
* grants: each admin role assignment → role ``admin`` on the tenant (``raw_role`` = role name,
  ``grant_id`` = the assignment id), so "who is an admin" is a query over grants; with
  ``oauth_tokens``, each user's token → role ``other``, ``raw_role = "oauth_token"`` on the app,
  with its scopes.

Scopes to grant the service account's client ID under domain-wide delegation (Admin console →
Security → API controls → Domain-wide delegation), all read-only:

* ``https://www.googleapis.com/auth/admin.directory.user.readonly``
* ``https://www.googleapis.com/auth/admin.directory.group.readonly``
* ``https://www.googleapis.com/auth/admin.directory.rolemanagement.readonly``

``tokens.list`` has no read-only scope: it needs
``https://www.googleapis.com/auth/admin.directory.user.security``, which also allows *revoking*
users' tokens and deleting their application-specific passwords. That is why ``oauth_tokens``
is off by default; turn it on only after granting that scope knowingly (and recording the
decision). ``admin_subject`` must be an administrator allowed to read users, groups and roles.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, Iterator

from pydantic import Field

from connectors._google import (
    ConnectorFailure,
    GoogleClients,
    GoogleSettings,
    SubjectRefused,
    email_domain,
    group_pid,
    scopes,
    user_pid,
)
from connectors.base import (
    AuthenticationError,
    CheckResult,
    Connector,
    ConnectorError,
    Organization,
    PermissionDenied,
    RunContext,
    SourceError,
)
from evidence.model import Grant, Membership, Principal, RawPage, Record, Resource, utc_iso

READ_SCOPES = scopes(
    "admin.directory.user.readonly",
    "admin.directory.group.readonly",
    "admin.directory.rolemanagement.readonly",
)
TOKEN_SCOPES = scopes("admin.directory.user.security")

USERS_PAGE, GROUPS_PAGE, MEMBERS_PAGE, ROLES_PAGE, ASSIGNMENTS_PAGE = 500, 200, 200, 100, 200
USER_FIELDS = (
    "nextPageToken,users(id,primaryEmail,aliases,name(fullName),suspended,archived,isAdmin,isDelegatedAdmin,"
    "isEnrolledIn2Sv,isEnforcedIn2Sv,lastLoginTime,creationTime,orgUnitPath,customerId)"
)
GROUP_FIELDS = "nextPageToken,groups(id,email,name,directMembersCount,aliases)"
MEMBER_FIELDS = "nextPageToken,members(id,email,role,type,status)"
ROLE_FIELDS = "nextPageToken,items(roleId,roleName,roleDescription,isSystemRole,isSuperAdminRole,rolePrivileges)"
ASSIGNMENT_FIELDS = "nextPageToken,items(roleAssignmentId,roleId,assignedTo,assigneeType,scopeType,orgUnitId)"
TOKEN_FIELDS = "items(clientId,displayText,scopes,anonymous,nativeApp)"
NEVER = "1970-01-01T00:00:00"  # Google's lastLoginTime for an account that never signed in
MEMBER_KINDS = {"USER": "user", "GROUP": "group", "CUSTOMER": "domain"}
DELEGATION_HINT = ("grant the service account's client ID {client} these scopes under domain-wide delegation "
                   "(Admin console → Security → API controls → Domain-wide delegation): {scopes}")


class GoogleDirectoryConfig(GoogleSettings):
    """The Google settings plus the Directory's quota, batching and the opt-in token listing.

    ``oauth_tokens = true`` lists every user's third-party OAuth grants (``tokens.list``), which
    needs the scope ``admin.directory.user.security``: it is **not** read-only (it can revoke
    tokens), so it is off by default.
    """

    requests_per_minute: int = Field(
        2400, ge=1, le=1_000_000,
        description="Directory quota: 2,400 queries/min per user per project (used for both budgets)",
    )
    oauth_tokens: bool = Field(
        False, description="also list users' third-party OAuth tokens (needs admin.directory.user.security, NOT read-only)",
    )
    batch_size: int = Field(100, ge=1, le=1000, description="inner calls per HTTP batch (Directory allows 1000)")


class GoogleDirectoryConnector(Connector):
    """Users, groups, memberships, admin roles (and optionally OAuth grants) of a Google Workspace."""

    kind = "google_directory"
    Config = GoogleDirectoryConfig
    streams = ("principals", "memberships", "resources", "grants")
    permissions = READ_SCOPES + (
        TOKEN_SCOPES[0] + " (only with oauth_tokens = true; NOT read-only: it also allows revoking users' tokens)",
    )
    description = (
        "Snapshots the Google Workspace directory through the Admin SDK: users with their 2-Step "
        "Verification, admin and suspension state, groups and every membership (external members "
        "flagged), admin roles and who holds them, and optionally users' third-party OAuth grants."
    )

    config: GoogleDirectoryConfig

    @classmethod
    def make_clients(cls, config: GoogleDirectoryConfig) -> GoogleClients:  # type: ignore[override]
        return GoogleClients(config, project_per_minute=config.requests_per_minute,
                             user_per_minute=config.requests_per_minute)

    # -- check ----------------------------------------------------------------------------------
    def check(self) -> CheckResult:
        result = CheckResult()
        cfg = self.config
        try:
            clients = self.ensure_clients()
        except ConnectorError as exc:
            return result.add("service-account key", False, f"{exc} (service_account_key_file = {cfg.service_account_key_file})")
        except Exception as exc:  # check never raises
            return result.add("service-account key", False, f"{type(exc).__name__}: {exc}")
        result.add("service-account key", True, f"{clients.service_account}, acting as {cfg.admin_subject}")
        ctx = RunContext.for_check()
        try:
            svc = clients.service("directory")
        except Exception as exc:  # check never raises
            return result.add("Directory API client", False, f"{type(exc).__name__}: {exc}")
        client_id = clients.key_info.get("client_id", "?")
        probes: list[tuple[str, str, Any, tuple[str, ...]]] = [
            ("users (principals)", "directory.users.list",
             lambda: svc.users().list(customer=cfg.customer, projection="basic", maxResults=1, fields="users(id)"), READ_SCOPES),
            ("groups (principals, memberships)", "directory.groups.list",
             lambda: svc.groups().list(customer=cfg.customer, maxResults=1, fields="groups(id)"), READ_SCOPES),
            ("admin roles (principals, grants)", "directory.roles.list",
             lambda: svc.roles().list(customer=cfg.customer, maxResults=1, fields="items(roleId)"), READ_SCOPES),
        ]
        if cfg.oauth_tokens:
            probes.append(("OAuth tokens (resources, grants)", "directory.tokens.list",
                           lambda: svc.tokens().list(userKey=cfg.admin_subject, fields="items(clientId)"), TOKEN_SCOPES))
        for name, endpoint, make, need in probes:
            try:
                clients.execute(ctx, endpoint, make(), subject=cfg.admin_subject, scopes=need, where=name)
            except Exception as exc:  # check never raises
                result.add(name, False, _explain(exc, cfg.admin_subject, client_id, need))
            else:
                result.add(name, True, f"{endpoint} answered")
        return result

    # -- snapshot -------------------------------------------------------------------------------
    def snapshot(self, ctx: RunContext) -> Iterator[Record | RawPage]:
        cfg = self.config
        clients = self.ensure_clients()
        subject = cfg.admin_subject
        ctx.identity = f"{clients.service_account} as {subject}"
        ctx.note("oauth_tokens", cfg.oauth_tokens)
        svc = clients.service("directory")
        org = ctx.organization

        def pages(endpoint: str, make: Any, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
            ctx.source(endpoint=endpoint, subject=subject, **params)
            return clients.pages(ctx, endpoint, make, subject=subject, scopes=READ_SCOPES, params=params)

        # 1. admin roles, then who holds them (small: kept in memory to fill users' ``roles``).
        #    An administrator whose role may read users and groups but not roles loses only this part.
        role_names: dict[str, str] = {}
        assignments: list[dict[str, Any]] = []
        rp = {"customer": cfg.customer, "maxResults": ROLES_PAGE, "fields": ROLE_FIELDS}
        ap = {"customer": cfg.customer, "maxResults": ASSIGNMENTS_PAGE, "fields": ASSIGNMENT_FIELDS}
        try:
            for page in pages("directory.roles.list", lambda t: svc.roles().list(pageToken=t, **rp), rp):
                for role in page.get("items") or []:
                    rid = str(role.get("roleId"))
                    role_names[rid] = role.get("roleName") or rid
                    yield Principal(
                        id=f"role:{rid}", kind="role", display_name=role.get("roleName"),
                        attributes={
                            "role_id": rid, "description": role.get("roleDescription"),
                            "is_super_admin_role": bool(role.get("isSuperAdminRole")),
                            "is_system_role": bool(role.get("isSystemRole")),
                            "privileges": len(role.get("rolePrivileges") or []),
                        },
                    ).record()
            for page in pages("directory.roleAssignments.list", lambda t: svc.roleAssignments().list(pageToken=t, **ap), ap):
                assignments.extend(page.get("items") or [])
        except PermissionDenied as exc:
            ctx.error("admin roles", f"{exc} (users' roles and the admin-role grants are missing from this run)")
            assignments = []
        assignments.sort(key=lambda a: str(a.get("roleAssignmentId")))
        roles_of: dict[str, set[str]] = {}
        for a in assignments:
            roles_of.setdefault(str(a.get("assignedTo")), set()).add(role_names.get(str(a.get("roleId")), str(a.get("roleId"))))

        # 2. users, streamed; ids → emails kept (role assignments and tokens name users by id)
        user_email: dict[str, str] = {}
        external_users: set[str] = set()
        customer_id: str | None = None
        up = {"customer": cfg.customer, "projection": "basic", "maxResults": USERS_PAGE, "fields": USER_FIELDS}
        for page in pages("directory.users.list", lambda t: svc.users().list(pageToken=t, **up), up):
            for u in page.get("users") or []:
                email = u.get("primaryEmail")
                if not email:
                    ctx.error(f"user {u.get('id')}", "the directory returned a user without a primary email")
                    continue
                user_email[str(u.get("id"))] = email.lower()
                customer_id = customer_id or u.get("customerId")
                principal = self._user(u, email, org, roles_of.get(str(u.get("id")), ()))
                if principal.external:
                    external_users.add(email.lower())
                yield principal.record()

        # 3. the tenant: the resource admin roles are granted on
        customer_id = customer_id or cfg.customer
        tenant = f"google-workspace:{customer_id}"
        yield Resource(
            id=tenant, kind="account", name=email_domain(subject) or customer_id,
            attributes={"customer_id": customer_id, "customer": cfg.customer, "users": len(user_email)},
        ).record()

        # 4. groups, streamed; (id, email) kept for the member listing
        groups: list[tuple[str, str]] = []
        group_email: dict[str, str] = {}
        gp = {"customer": cfg.customer, "maxResults": GROUPS_PAGE, "fields": GROUP_FIELDS}
        for page in pages("directory.groups.list", lambda t: svc.groups().list(pageToken=t, **gp), gp):
            for g in page.get("groups") or []:
                gid, email = str(g.get("id")), (g.get("email") or "").lower()
                if not email:
                    ctx.error(f"group {gid}", "the directory returned a group without an email")
                    continue
                groups.append((gid, email))
                group_email[gid] = email
                domain = email_domain(email)
                internal = org.is_internal_domain(domain)
                count = g.get("directMembersCount")
                yield Principal(
                    id=group_pid(email), kind="group", email=email, display_name=g.get("name"), domain=domain,
                    external=None if internal is None else not internal,
                    attributes={
                        "google_id": gid, "aliases": sorted(g.get("aliases") or []),
                        "direct_members_count": int(count) if str(count or "").isdigit() else None,
                    },
                ).record()

        # 5. admin role assignments → grants on the tenant
        for a in assignments:
            yield self._assignment_grant(a, tenant, role_names, user_email, group_email, org).record()

        # 6. members of every group, batched
        yield from self._memberships(ctx, clients, svc, groups, group_email, external_users, org)

        # 7. optional: third-party OAuth grants, one tokens.list per user, batched
        if cfg.oauth_tokens:
            yield from self._tokens(ctx, clients, svc, user_email, org)

    # -- mapping --------------------------------------------------------------------------------
    @staticmethod
    def _user(u: dict[str, Any], email: str, org: Organization, roles: Any) -> Principal:
        domain = email_domain(email)
        internal = org.is_internal_domain(domain)
        suspended, archived = bool(u.get("suspended")), bool(u.get("archived"))
        is_admin, delegated = bool(u.get("isAdmin")), bool(u.get("isDelegatedAdmin"))
        return Principal(
            id=user_pid(email), kind="user", email=email, display_name=(u.get("name") or {}).get("fullName"),
            domain=domain, external=None if internal is None else not internal,
            enabled=not (suspended or archived), mfa=bool(u.get("isEnrolledIn2Sv")), admin=is_admin or delegated,
            roles=tuple(sorted(roles)), last_sign_in=_time(u.get("lastLoginTime")), created=_time(u.get("creationTime")),
            attributes={
                "google_id": str(u.get("id")), "aliases": sorted(u.get("aliases") or []), "org_unit": u.get("orgUnitPath"),
                "suspended": suspended, "archived": archived, "is_super_admin": is_admin,
                "is_delegated_admin": delegated, "mfa_enforced": bool(u.get("isEnforcedIn2Sv")),
            },
        )

    @staticmethod
    def _assignment_grant(a: dict[str, Any], tenant: str, role_names: dict[str, str], user_email: dict[str, str],
                          group_email: dict[str, str], org: Organization) -> Grant:
        assigned, rid = str(a.get("assignedTo")), str(a.get("roleId"))
        assignee_type = a.get("assigneeType")
        email = None
        if assignee_type != "GROUP" and assigned in user_email:
            email, pid, kind = user_email[assigned], user_pid(user_email[assigned]), "user"
        elif assignee_type != "USER" and assigned in group_email:
            email, pid, kind = group_email[assigned], group_pid(group_email[assigned]), "group"
        else:
            pid, kind = f"unknown:{assigned}", "unknown"
        domain = email_domain(email)
        internal = org.is_internal_domain(domain)
        return Grant(
            resource_id=tenant, principal_id=pid, principal_kind=kind, role="admin",  # type: ignore[arg-type]
            raw_role=role_names.get(rid, rid), via="direct", principal_email=email, principal_domain=domain,
            external=None if internal is None else not internal, grant_id=str(a.get("roleAssignmentId")),
            attributes={"role_id": rid, "assigned_to": assigned, "assignee_type": assignee_type,
                        "scope_type": a.get("scopeType"), "org_unit_id": a.get("orgUnitId")},
        )

    def _memberships(self, ctx: RunContext, clients: GoogleClients, svc: Any, groups: list[tuple[str, str]],
                     group_email: dict[str, str], external_users: set[str], org: Organization) -> Iterator[Record]:
        cfg = self.config
        endpoint = "directory.members.list"
        ctx.source(endpoint=endpoint, subject=cfg.admin_subject, groups=len(groups), maxResults=MEMBERS_PAGE,
                   fields=MEMBER_FIELDS, batch_size=cfg.batch_size)
        seen: set[str] = set()   # extra principals already yielded (external members, the customer)
        listed_groups = set(group_email.values())

        def send(chunk: list[tuple[str, str, str | None]]) -> dict[str, Any]:
            calls = []
            for gid, _email, token in chunk:
                params: dict[str, Any] = {"groupKey": gid, "maxResults": MEMBERS_PAGE, "fields": MEMBER_FIELDS}
                if token:
                    params["pageToken"] = token
                calls.append((gid, svc.members().list(**params), params))
            return clients.batch(ctx, "directory", endpoint, calls, subject=cfg.admin_subject, scopes=READ_SCOPES,
                                 size=cfg.batch_size)

        # Rounds: every group's first page, then the next pages of the groups that have more. The
        # batches of a round are sent by ``workers`` threads (so one batch's round trip overlaps
        # the quota wait of the next) and read in listing order, whatever order they answer in.
        pending: list[tuple[str, str, str | None]] = [(gid, email, None) for gid, email in groups]
        with ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="shoseki-directory") as pool:
            while pending:
                chunks = [pending[n:n + cfg.batch_size] for n in range(0, len(pending), cfg.batch_size)]
                follow: list[tuple[str, str, str | None]] = []
                for chunk, results in zip(chunks, pool.map(send, chunks)):
                    for gid, email, _token in chunk:
                        answer = results.get(gid)
                        if isinstance(answer, ConnectorFailure) or answer is None:
                            error = answer.error if answer is not None else "no answer"
                            ctx.error(f"group {email} members", str(error))
                            continue
                        for m in answer.get("members") or []:
                            yield from self._member(m, email, listed_groups, external_users, org, seen)
                        if answer.get("nextPageToken"):
                            follow.append((gid, email, answer["nextPageToken"]))
                pending = follow

    @staticmethod
    def _member(m: dict[str, Any], group: str, listed_groups: set[str], external_users: set[str],
                org: Organization, seen: set[str]) -> Iterator[Record]:
        mtype = str(m.get("type") or "")
        email = (m.get("email") or "").lower() or None
        google_id = str(m.get("id")) if m.get("id") is not None else None
        kind = MEMBER_KINDS.get(mtype, "unknown")
        domain = email_domain(email)
        if mtype == "CUSTOMER":
            mid, external = f"domain:{google_id}", False
        elif email:
            mid = group_pid(email) if kind == "group" else user_pid(email)
            internal = org.is_internal_domain(domain)
            external = not internal
        else:
            mid, kind, external = f"unknown:{google_id}", "unknown", None
        yield Membership(
            group_id=group_pid(group), member_id=mid, member_kind=kind,  # type: ignore[arg-type]
            role=(m.get("role") or "").lower() or None,
            attributes={"type": mtype or None, "status": m.get("status"), "external": external, "google_id": google_id},
        ).record()
        if mid in seen:
            return
        if mtype == "CUSTOMER":
            seen.add(mid)
            yield Principal(id=mid, kind="domain", display_name="everyone in the organisation", external=False,
                            attributes={"customer_id": google_id, "source": "group membership"}).record()
        elif external and email and email not in (external_users if kind == "user" else listed_groups):
            seen.add(mid)
            yield Principal(id=mid, kind=kind, email=email, domain=domain, external=True,  # type: ignore[arg-type]
                            attributes={"source": "group membership"}).record()

    def _tokens(self, ctx: RunContext, clients: GoogleClients, svc: Any, user_email: dict[str, str],
                org: Organization) -> Iterator[Record]:
        cfg = self.config
        endpoint = "directory.tokens.list"
        ctx.source(endpoint=endpoint, subject=cfg.admin_subject, users=len(user_email), fields=TOKEN_FIELDS,
                   batch_size=cfg.batch_size, scope=TOKEN_SCOPES[0])
        apps: set[str] = set()
        users = list(user_email.items())
        for start in range(0, len(users), cfg.batch_size):
            chunk = users[start:start + cfg.batch_size]
            calls = []
            for uid, _email in chunk:
                params = {"userKey": uid, "fields": TOKEN_FIELDS}
                calls.append((uid, svc.tokens().list(**params), params))
            try:
                results = clients.batch(ctx, "directory", endpoint, calls, subject=cfg.admin_subject, scopes=TOKEN_SCOPES,
                                        size=cfg.batch_size)
            except (AuthenticationError, PermissionDenied) as exc:  # the opt-in scope is missing: say so, keep the rest
                ctx.error("oauth tokens", f"{exc} — {TOKEN_SCOPES[0]} is needed for oauth_tokens = true")
                return
            failures = [a for a in results.values() if isinstance(a, ConnectorFailure)]
            if len(failures) == len(chunk) and all(f.google is not None and f.google.status == 403 for f in failures):
                ctx.error("oauth tokens", f"every tokens.list call was refused: {failures[0].error}")  # not per user
                return
            for uid, email in chunk:
                answer = results.get(uid)
                if isinstance(answer, ConnectorFailure) or answer is None:
                    ctx.error(f"user {email} tokens", str(answer.error if answer is not None else "no answer"))
                    continue
                domain = email_domain(email)
                internal = org.is_internal_domain(domain)
                for t in sorted(answer.get("items") or [], key=lambda t: str(t.get("clientId"))):
                    client = str(t.get("clientId"))
                    rid = f"oauth-client:{client}"
                    if client not in apps:
                        apps.add(client)
                        yield Resource(id=rid, kind="oauth_app", name=t.get("displayText"),
                                       attributes={"client_id": client, "native_app": bool(t.get("nativeApp")),
                                                   "anonymous": bool(t.get("anonymous"))}).record()
                    yield Grant(
                        resource_id=rid, principal_id=user_pid(email), principal_kind="user", role="other",
                        raw_role="oauth_token", via="direct", principal_email=email, principal_domain=domain,
                        external=None if internal is None else not internal,
                        attributes={"scopes": sorted(t.get("scopes") or []), "anonymous": bool(t.get("anonymous")),
                                    "native_app": bool(t.get("nativeApp")), "app": t.get("displayText")},
                    ).record()


def _time(value: str | None) -> str | None:
    """Google's RFC 3339 time as the model's UTC ISO text; ``None`` for absent or "never"."""
    if not value or value.startswith(NEVER):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value  # unparseable: kept as Google said it rather than lost
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return utc_iso(parsed)


def _explain(exc: BaseException, subject: str, client_id: str, need: tuple[str, ...]) -> str:
    """A check failure in words an administrator can act on."""
    text = str(exc)
    if isinstance(exc, SubjectRefused) or isinstance(exc, AuthenticationError):
        if "unauthorized_client" in text:
            return ("the domain-wide delegation does not grant the scopes this read needs; "
                    + DELEGATION_HINT.format(client=client_id, scopes=", ".join(need))
                    + (" (or set oauth_tokens = false: this scope is not read-only)" if need == TOKEN_SCOPES else ""))
        if "invalid_grant" in text:
            return (f"Google will not let the service account act as {subject}: check that admin_subject is an "
                    f"existing, active administrator's address and that the key file is current ({text})")
        return f"authentication failed: {text}"
    if isinstance(exc, PermissionDenied):
        if "insufficientPermissions" in text or "insufficient" in text.lower():
            return "the access token lacks a scope: " + DELEGATION_HINT.format(client=client_id, scopes=", ".join(need))
        return (f"{subject} may not read this ({text}); admin_subject must be an administrator whose role can "
                "read users, groups and admin roles (a super admin, or a custom role with those read privileges)")
    if isinstance(exc, SourceError):
        return f"the Directory API did not answer usefully: {text}"
    return f"{type(exc).__name__}: {text}"

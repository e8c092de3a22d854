"""The calls of an Entra ID run (:class:`Reader`) and the two ways its records are assembled
(:class:`Snapshot`): a full listing, or the previous complete bag with the users and groups delta
changes applied. Both map through :mod:`connectors.entra_id.mapping`, so they write the same
records for the same state."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Iterator

from connectors._graph import DeltaReset, GraphClients, GraphFailure, graph_failure
from connectors.base import Cancelled, ConnectorError, RunContext, SourceError
from connectors.entra_id import mapping as m
from evidence.model import Principal, Record, canonical_json, utc_iso

CURSOR_VERSION = 2        # 2: guests' sponsors in the records and their availability in the cursor
USER_SELECT = "id,userPrincipalName,displayName,mail,userType,accountEnabled,createdDateTime,externalUserState,creationType"
GROUP_SELECT = "id,displayName,mail,securityEnabled,groupTypes,mailEnabled,members"
ROLE_SELECT = "id,displayName,description,templateId,isBuiltIn,isEnabled"
USERS_PAGE = 999          # users.list maximum
SIGNIN_PAGE = 500         # the signInActivity maximum (older documents say 120)
EXPAND_PAGE = 100         # a directory listing with $expand stops at 100 a page, whatever $top says
GUEST_FILTER = "userType eq 'Guest'"
USERS_PERMISSION = "User.Read.All"
ROLES_PERMISSION = "RoleManagement.Read.Directory"
AUDIT_PERMISSION = "AuditLog.Read.All"
PIM_PERMISSION = "RoleManagement.Read.Directory (or RoleEligibilitySchedule.Read.Directory)"
REGISTRATION_PATH = "/reports/authenticationMethods/userRegistrationDetails"
MAX_CHANGES_LISTED = 10_000


class Unavailable(Exception):
    """An optional part (sign-in activity, the MFA report, PIM) was refused for a missing
    permission or licence: recorded as unavailable, not as an error."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Pacer:
    """At most ``calls`` requests in any ``window_s`` seconds: Graph's per-API limits that the
    resource-unit budget does not cover (signInActivity 10 a minute, reports 5 per 10 s)."""

    def __init__(self, calls: int, window_s: float, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.calls, self.window_s = calls, window_s
        self._sleep, self._clock = sleep, clock
        self._sent: deque[float] = deque()
        self._lock = threading.Lock()
        self.waited_s = 0.0

    def wait(self, ctx: RunContext, where: str) -> None:
        while True:
            ctx.raise_if_cancelled(where)
            with self._lock:
                now = self._clock()
                while self._sent and self._sent[0] <= now - self.window_s:
                    self._sent.popleft()
                if len(self._sent) < self.calls:
                    self._sent.append(now)
                    return
                wait = self._sent[0] + self.window_s - now
            step = min(max(wait, 0.001), 1.0)
            self._sleep(step)
            self.waited_s += step


@dataclass
class Roles:
    """Directory roles, who holds them (active) and who may activate them (PIM eligible)."""

    definitions: list[dict[str, Any]] = field(default_factory=list)
    active: list[dict[str, Any]] = field(default_factory=list)
    eligible: list[dict[str, Any]] = field(default_factory=list)
    readable: bool = True
    pim_available: bool = False
    pim_reason: str | None = None

    @property
    def names(self) -> dict[str, str]:
        return {str(d.get("id")): d.get("displayName") or str(d.get("id")) for d in self.definitions}

    def held(self) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
        names = self.names
        active: dict[str, set[str]] = {}
        eligible: dict[str, set[str]] = {}
        for rows, out in ((self.active, active), (self.eligible, eligible)):
            for a in rows:
                rid = str(a.get("roleDefinitionId"))
                out.setdefault(str(a.get("principalId")), set()).add(names.get(rid, rid))
        return active, eligible


@dataclass
class Reports:
    """Sign-in activity and MFA registration per user object id — read this run (``refreshed``) or
    carried over from the base bag's records between refreshes."""

    refreshed: bool
    signin: dict[str, m.SignIn] | None = None
    signin_available: bool = False
    signin_reason: str | None = None
    mfa: dict[str, m.Mfa] | None = None
    mfa_available: bool = False
    mfa_reason: str | None = None
    as_of: str | None = None

    def for_user(self, u: dict[str, Any], base: dict[str, Any] | None) -> dict[str, Any]:
        oid = str(u.get("id"))
        if self.refreshed:
            signin = self.signin.get(oid) if self.signin is not None else None
            mfa = self.mfa.get(oid) if self.mfa is not None else None
        else:
            signin = m.signin_from_record(base) if base and self.signin_available else None
            mfa = m.mfa_from_record(base) if base and self.mfa_available else None
            if u.get("accountEnabled") is False:
                mfa = None  # the registration report does not cover disabled users
        return {"signin": signin, "signin_available": self.signin_available, "mfa": mfa,
                "mfa_available": self.mfa_available}


@dataclass
class Sponsors:
    """Guests' sponsors by guest object id — read this run with the guest listing (``refreshed``),
    or carried over from the base bag's records between refreshes (``users/delta`` does not track
    the sponsors relationship). A guest missing from the listing, changed in the delta, or whose
    sponsor changed is read alone (:meth:`Reader.sponsors_of`)."""

    refreshed: bool
    by_guest: dict[str, m.Sponsorship] = field(default_factory=dict)
    available: bool = False
    reason: str | None = None
    as_of: str | None = None
    read_alone: int = 0


@dataclass
class Changes:
    """What the users and groups delta links reported since the cursor."""

    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    users_removed: set[str] = field(default_factory=set)
    groups: dict[str, dict[str, Any]] = field(default_factory=dict)
    groups_removed: set[str] = field(default_factory=set)
    added: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    removed: set[tuple[str, str]] = field(default_factory=set)


_READ_ALONE = object()  # a guest whose sponsors are read after the user pass


class ResyncNeeded(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Reader:
    """Every call the connector makes, with its parameters, cost estimate and pacing."""

    def __init__(self, config: Any, clients: GraphClients, ctx: RunContext):
        self.config, self.clients, self.ctx = config, clients, ctx
        self.signin_pacer = Pacer(config.signin_calls_per_minute, 60.0, clients.sleep)
        self.report_pacer = Pacer(config.report_calls_per_10s, 10.0, clients.sleep)
        self.users_link: str | None = None
        self.groups_link: str | None = None

    def pages(self, endpoint: str, path: str, params: dict[str, Any] | None = None, *, units: int = 1,
              next_units: int | None = None, pacer: Pacer | None = None, where: str | None = None,
              optional: str | None = None) -> Iterator[dict[str, Any]]:
        """Every page of a collection (``@odata.nextLink`` carries the query). ``optional`` names the
        permission an optional part needs: a permission or licence refusal of its first page raises
        :class:`Unavailable` instead of an error."""
        url, p, page = path, params, 0
        where = where or endpoint
        while True:
            if pacer is not None:
                pacer.wait(self.ctx, where)
            status, body = self.clients.get(self.ctx, endpoint, url, params=p, page=page, where=where,
                                            units=units if page == 0 or next_units is None else next_units,
                                            ok_statuses=(400, 403) if optional and page == 0 else ())
            if status >= 300:
                f = graph_failure(status, body, None)
                reason = m.unavailable_reason(f.status, f.code, f.message, optional or "")
                if reason is None:
                    raise SourceError(f.describe(), where=where, status=status)
                raise Unavailable(reason)
            yield body
            url = body.get("@odata.nextLink")
            if not url:
                return
            p, page = None, page + 1

    # -- roles ------------------------------------------------------------------------------------
    def roles(self) -> Roles:
        r = Roles()
        base = "/roleManagement/directory"
        try:
            dp = {"$select": ROLE_SELECT}
            self.ctx.source(endpoint="roles.definitions", path=f"{base}/roleDefinitions", **dp)
            for page in self.pages("roles.definitions", f"{base}/roleDefinitions", dp, where="directory role definitions"):
                r.definitions.extend(page.get("value") or [])
            ap = {"$expand": "principal"}
            self.ctx.source(endpoint="roles.assignments", path=f"{base}/roleAssignments", **ap)
            for page in self.pages("roles.assignments", f"{base}/roleAssignments", ap, units=2,
                                   where="directory role assignments"):
                r.active.extend(page.get("value") or [])
        except Cancelled:
            raise
        except ConnectorError as exc:
            self.ctx.error("directory roles", f"{exc} ({ROLES_PERMISSION} is needed; users' admin and roles are "
                                              "unknown in this run and the role grants are missing)")
            return Roles(readable=False, pim_reason="the directory roles could not be read")
        r.definitions.sort(key=lambda d: str(d.get("id")))
        r.active.sort(key=lambda a: str(a.get("id")))
        if not self.config.pim:
            r.pim_reason = "pim = false in config"
            return r
        ep = {"$expand": "principal"}
        self.ctx.source(endpoint="roles.eligibilitySchedules", path=f"{base}/roleEligibilitySchedules", **ep)
        try:
            for page in self.pages("roles.eligibilitySchedules", f"{base}/roleEligibilitySchedules", ep, units=2,
                                   where="PIM role eligibility", optional=PIM_PERMISSION):
                r.eligible.extend(page.get("value") or [])
            r.pim_available = True
        except Unavailable as exc:
            r.eligible, r.pim_reason = [], exc.reason
        except Cancelled:
            raise
        except ConnectorError as exc:
            self.ctx.error("PIM role eligibility", f"{exc} (eligible role assignments are missing from this run)")
            r.eligible, r.pim_reason = [], f"not read: {exc}"
        r.eligible.sort(key=lambda a: str(a.get("id")))
        return r

    # -- reports ----------------------------------------------------------------------------------
    def reports(self) -> Reports:
        out = Reports(refreshed=True, as_of=utc_iso(self.ctx.started))
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="shoseki-entra-reports") as pool:
            signin = pool.submit(self.signin) if self.config.signin_activity else None
            mfa = pool.submit(self.mfa) if self.config.mfa_report else None
            if signin is not None:
                out.signin, out.signin_reason = signin.result()
                out.signin_available = out.signin is not None
            else:
                out.signin_reason = "signin_activity = false in config"
            if mfa is not None:
                out.mfa, out.mfa_reason = mfa.result()
                out.mfa_available = out.mfa is not None
            else:
                out.mfa_reason = "mfa_report = false in config"
        return out

    def signin(self) -> tuple[dict[str, m.SignIn] | None, str | None]:
        params = {"$select": "id,signInActivity", "$top": SIGNIN_PAGE}
        self.ctx.source(endpoint="users.signInActivity", path="/users", **params)
        out: dict[str, m.SignIn] = {}
        try:
            for page in self.pages("users.signInActivity", "/users", params, pacer=self.signin_pacer,
                                   where="sign-in activity", optional=AUDIT_PERMISSION):
                for u in page.get("value") or []:
                    out[str(u.get("id"))] = m.signin_from_graph(u.get("signInActivity"))
        except Unavailable as exc:
            return None, exc.reason
        except Cancelled:
            raise
        except ConnectorError as exc:
            self.ctx.error("sign-in activity", f"{exc} (users' last sign-in is missing from this run)")
            return None, f"not read: {exc}"
        return out, None

    def mfa(self) -> tuple[dict[str, m.Mfa] | None, str | None]:
        self.ctx.source(endpoint="reports.userRegistrationDetails", path=REGISTRATION_PATH)
        out: dict[str, m.Mfa] = {}
        try:
            for page in self.pages("reports.userRegistrationDetails", REGISTRATION_PATH, pacer=self.report_pacer,
                                   where="MFA registration report", optional=AUDIT_PERMISSION):
                for row in page.get("value") or []:
                    out[str(row.get("id"))] = m.mfa_from_graph(row)
        except Unavailable as exc:
            return None, exc.reason
        except Cancelled:
            raise
        except ConnectorError as exc:
            self.ctx.error("MFA registration report", f"{exc} (users' MFA state is missing from this run)")
            return None, f"not read: {exc}"
        return out, None

    # -- guests' sponsors ---------------------------------------------------------------------------
    def sponsors(self) -> Sponsors:
        """Every guest with its sponsors: ``GET /users?$filter=userType eq 'Guest'&$select=id&
        $expand=sponsors`` (100 a page: Graph's cap with ``$expand``; a guest has at most five
        sponsors, within the 20 an expansion returns). User.Read.All, no licence."""
        out = Sponsors(refreshed=True, as_of=utc_iso(self.ctx.started))
        if not self.config.sponsors:
            out.reason = "sponsors = false in config"
            return out
        params = {"$filter": GUEST_FILTER, "$select": "id", "$expand": "sponsors", "$top": EXPAND_PAGE}
        self.ctx.source(endpoint="users.guestSponsors", path="/users", **params)
        try:
            for page in self.pages("users.guestSponsors", "/users", params, units=2, where="guest sponsors",
                                   optional=USERS_PERMISSION):
                for u in page.get("value") or []:
                    if isinstance(u.get("sponsors"), list):  # absent: not said, so read alone later
                        out.by_guest[str(u.get("id"))] = m.sponsorship_from_graph(u["sponsors"], self.ctx.organization)
        except Unavailable as exc:
            out.by_guest, out.reason = {}, exc.reason
            return out
        except Cancelled:
            raise
        except ConnectorError as exc:
            self.ctx.error("guest sponsors", f"{exc} (guests' sponsors are unknown in this run)")
            out.by_guest, out.reason = {}, f"not read: {exc}"
            return out
        out.available = True
        return out

    def sponsors_of(self, oids: list[str]) -> tuple[dict[str, m.Sponsorship], str | None]:
        """The sponsors of a few guests, ``GET /users/{id}/sponsors`` in ``$batch`` requests of 20.
        Returns what was read and, when Graph refused it, why (those guests stay unknown)."""
        self.ctx.source(endpoint="users.sponsors", path="/users/{id}/sponsors", batched=True, guests=len(oids))
        try:
            results = self.clients.batch(self.ctx, "users.sponsors", [(oid, f"/users/{oid}/sponsors", 1) for oid in oids])
        except Cancelled:
            raise
        except ConnectorError as exc:
            self.ctx.error("guest sponsors", f"{exc} (the sponsors of {len(oids)} guest(s) are unknown in this run)")
            return {}, None
        out: dict[str, m.Sponsorship] = {}
        refused: str | None = None
        failed: list[str] = []
        for oid in oids:
            r = results.get(oid)
            if isinstance(r, tuple):
                body, objects = r[1], list(r[1].get("value") or [])
                try:
                    while body.get("@odata.nextLink"):  # five sponsors at most: one page, but never cut short
                        _, body = self.clients.get(self.ctx, "users.sponsors", body["@odata.nextLink"], where="guest sponsors")
                        objects += body.get("value") or []
                except Cancelled:
                    raise
                except ConnectorError as exc:
                    failed.append(f"{oid}: {exc}")
                    continue
                out[oid] = m.sponsorship_from_graph(objects, self.ctx.organization)
                continue
            f = r if isinstance(r, GraphFailure) else GraphFailure(0, "noAnswer", "no answer", None)
            reason = m.unavailable_reason(f.status, f.code, f.message, USERS_PERMISSION)
            if reason is not None:
                refused = reason
            elif f.status == 404:  # deleted since the delta said it changed: the next delta removes it
                self.ctx.logger.warning("guest %s: gone before its sponsors were read (%s)", oid, f.describe())
            else:
                failed.append(f"{oid}: {f.describe()}")
        if failed:
            self.ctx.error("guest sponsors", f"the sponsors of {len(failed)} guest(s) could not be read (unknown in this run): "
                                             + "; ".join(failed[:5]))
        return out, refused

    # -- users and groups -------------------------------------------------------------------------
    def users(self, *, delta: bool) -> Iterator[list[dict[str, Any]]]:
        """Every user: the delta round (whose last page gives the deltaLink) or, without incremental
        runs, ``users.list`` at 999 a page (the cheapest full listing)."""
        if delta:
            endpoint, path, params, nxt = "users.delta", "/users/delta", {"$select": USER_SELECT}, 2
        else:
            endpoint, path, params, nxt = "users.list", "/users", {"$select": USER_SELECT, "$top": USERS_PAGE}, 1
        self.ctx.source(endpoint=endpoint, path=path, **params)
        for page in self.pages(endpoint, path, params, units=1, next_units=nxt, where="users"):
            if page.get("@odata.deltaLink"):
                self.users_link = page["@odata.deltaLink"]
            yield page.get("value") or []

    def groups(self) -> Iterator[list[dict[str, Any]]]:
        params = {"$select": GROUP_SELECT}
        self.ctx.source(endpoint="groups.delta", path="/groups/delta", **params)
        for page in self.pages("groups.delta", "/groups/delta", params, where="groups and memberships"):
            if page.get("@odata.deltaLink"):
                self.groups_link = page["@odata.deltaLink"]
            yield page.get("value") or []

    def changes(self, users_link: str, groups_link: str) -> Changes:
        """Follow both delta links to their new deltaLinks; raise :class:`ResyncNeeded` when the
        service will not continue from them (410 Gone, or a token it no longer reads)."""
        ch = Changes()
        self.ctx.source(endpoint="users.delta", path="/users/delta", delta_link=True)
        self.ctx.source(endpoint="groups.delta", path="/groups/delta", delta_link=True)
        try:
            for page in self.pages("users.delta", users_link, units=2, where="users delta"):
                for u in page.get("value") or []:
                    oid = str(u.get("id"))
                    if u.get("@removed") is not None:
                        ch.users.pop(oid, None)
                        ch.users_removed.add(oid)
                        continue
                    ch.users_removed.discard(oid)
                    ch.users[oid] = {**ch.users.get(oid, {}), **_props(u)}
                if page.get("@odata.deltaLink"):
                    self.users_link = page["@odata.deltaLink"]
            for page in self.pages("groups.delta", groups_link, where="groups delta"):
                for g in page.get("value") or []:
                    gid = str(g.get("id"))
                    if g.get("@removed") is not None:
                        ch.groups.pop(gid, None)
                        ch.groups_removed.add(gid)
                        continue
                    ch.groups_removed.discard(gid)
                    ch.groups[gid] = {**ch.groups.get(gid, {}), **_props(g)}
                    for ref in g.get("members@delta") or []:
                        key = (gid, str(ref.get("id")))
                        if ref.get("@removed") is not None:
                            ch.added.pop(key, None)
                            ch.removed.add(key)
                        else:
                            ch.removed.discard(key)
                            ch.added[key] = {k: v for k, v in ref.items() if k != "@removed"}
                if page.get("@odata.deltaLink"):
                    self.groups_link = page["@odata.deltaLink"]
        except DeltaReset as exc:
            raise ResyncNeeded(f"{exc.where}: the service asked for a full resync ({exc.message})") from None
        except SourceError as exc:
            if exc.status == 400:
                raise ResyncNeeded(f"{exc.where}: the delta link was refused ({exc.message})") from None
            raise
        if not self.users_link or not self.groups_link:
            raise SourceError("a delta round ended without a deltaLink", where="users and groups delta")
        return ch


def _props(obj: dict[str, Any]) -> dict[str, Any]:
    """A delta object's properties (annotations and ``members@delta`` left out)."""
    return {k: v for k, v in obj.items() if "@" not in k}


class Snapshot:
    """One run: full, or incremental on top of ``ctx.base``."""

    def __init__(self, config: Any, clients: GraphClients, ctx: RunContext):
        self.config, self.clients, self.ctx = config, clients, ctx
        self.read = Reader(config, clients, ctx)
        self.org = ctx.organization
        self.tenant = m.tenant_rid(config.tenant_id)
        self.users: dict[str, tuple[str, str]] = {}   # object id -> (principal id, kind): members and grants name them
        self.groups: dict[str, m.Who] = {}
        self.pids: set[str] = set()
        self.counts: Counter[str] = Counter()
        self.reports: Reports | None = None
        self.sponsors: Sponsors | None = None
        self.touched: set[str] = set()                 # incremental: objects the delta changed or removed
        self.unread_guests: list[Principal] = []       # guests whose sponsors are read after the user pass
        self.baseline: str | None = None
        self.mode = "full"

    # -- what a cursor is valid for ---------------------------------------------------------------
    def config_digest(self) -> str:
        """The settings that change *what* is collected: a change forces a full run."""
        c = self.config
        what = {"tenant": c.tenant_id.lower(), "graph": c.graph_url, "signin": c.signin_activity, "mfa": c.mfa_report,
                "pim": c.pim, "sponsors": c.sponsors, "domains": list(self.org.domains)}
        return hashlib.sha256(canonical_json(what).encode()).hexdigest()[:16]

    def cursor(self) -> dict[str, Any] | None:
        if not (self.read.users_link and self.read.groups_link and self.reports and self.sponsors and self.baseline):
            return None
        r, sp = self.reports, self.sponsors
        return {"v": CURSOR_VERSION, "baseline_utc": self.baseline, "config": self.config_digest(),
                "users_delta": self.read.users_link, "groups_delta": self.read.groups_link,
                "reports": {"as_of": r.as_of, "signin_available": r.signin_available, "signin_reason": r.signin_reason,
                            "mfa_available": r.mfa_available, "mfa_reason": r.mfa_reason,
                            "sponsors_available": sp.available, "sponsors_reason": sp.reason}}

    def reports_due(self, cursor: dict[str, Any]) -> bool:
        as_of = (cursor.get("reports") or {}).get("as_of")
        try:
            then = datetime.fromisoformat(str(as_of).replace("Z", "+00:00"))
        except ValueError:
            return True
        return self.ctx.started - then >= timedelta(hours=self.config.refresh_reports_hours)

    def carried_reports(self, cursor: dict[str, Any]) -> Reports:
        c = cursor.get("reports") or {}
        return Reports(refreshed=False, signin_available=bool(c.get("signin_available")),
                       signin_reason=c.get("signin_reason"), mfa_available=bool(c.get("mfa_available")),
                       mfa_reason=c.get("mfa_reason"), as_of=c.get("as_of"))

    def carried_sponsors(self, cursor: dict[str, Any]) -> Sponsors:
        c = cursor.get("reports") or {}
        return Sponsors(refreshed=False, available=bool(c.get("sponsors_available")), reason=c.get("sponsors_reason"),
                        as_of=c.get("as_of"))

    # -- the run ------------------------------------------------------------------------------------
    def run(self, mode: str, why: str, cursor: dict[str, Any] | None) -> Iterator[Record]:
        ctx = self.ctx
        changes: Changes | None = None
        with ThreadPoolExecutor(max_workers=3, thread_name_prefix="shoseki-entra") as pool:
            roles_f: Future[Roles] = pool.submit(self.read.roles)
            due = mode == "full" or (cursor is not None and self.reports_due(cursor))
            reports_f: Future[Reports] | None = pool.submit(self.read.reports) if due else None
            sponsors_f: Future[Sponsors] | None = pool.submit(self.read.sponsors) if due else None
            if mode == "incremental" and cursor is not None:
                try:
                    changes = self.read.changes(cursor["users_delta"], cursor["groups_delta"])
                except ResyncNeeded as exc:
                    mode, why, changes = "full", f"full resync: {exc.reason}", None
                    self.read.users_link = self.read.groups_link = None
                    if reports_f is None:
                        reports_f = pool.submit(self.read.reports)
                    if sponsors_f is None:
                        sponsors_f = pool.submit(self.read.sponsors)
            roles = roles_f.result()
            self.reports = reports_f.result() if reports_f is not None else self.carried_reports(cursor or {})
            self.sponsors = sponsors_f.result() if sponsors_f is not None else self.carried_sponsors(cursor or {})
        self.mode = mode
        ctx.note("mode", mode)
        ctx.note("mode_reason", why)
        self.baseline = utc_iso(ctx.started) if mode == "full" else (cursor or {}).get("baseline_utc")
        r = self.reports
        ctx.note("signin_activity", {"available": r.signin_available, "reason": r.signin_reason,
                                     "refreshed": r.refreshed, "as_of": r.as_of})
        ctx.note("mfa_report", {"available": r.mfa_available, "reason": r.mfa_reason, "refreshed": r.refreshed,
                                "as_of": r.as_of})
        ctx.note("pim", {"available": roles.pim_available, "reason": roles.pim_reason})

        yield from self.role_records(roles)
        if changes is None:
            yield from self.full(roles)
        else:
            yield from self.incremental(roles, changes)
        sp = self.sponsors
        ctx.note("sponsors", {"available": sp.available, "reason": sp.reason, "refreshed": sp.refreshed, "as_of": sp.as_of,
                              "read_alone": sp.read_alone})
        ctx.note("counts", dict(sorted(self.counts.items())))
        yield m.tenant_resource(self.config.tenant_id, self.config.tenant_id, dict(sorted(self.counts.items())))

    def role_records(self, roles: Roles) -> Iterator[Record]:
        names = roles.names
        for d in roles.definitions:
            yield m.role_principal(d)
        for a in roles.active:
            yield m.role_grant(a, self.tenant, names, self.org, eligible=False)
        for a in roles.eligible:
            yield m.role_grant(a, self.tenant, names, self.org, eligible=True)
        self.counts["role_definitions"] = len(roles.definitions)
        self.counts["role_assignments_active"] = len(roles.active)
        self.counts["role_assignments_eligible"] = len(roles.eligible)

    # -- the pieces both modes emit ---------------------------------------------------------------
    def user_record(self, u: dict[str, Any], roles: Roles, held: tuple[dict[str, set[str]], dict[str, set[str]]],
                    base: dict[str, Any] | None, *, changed: bool = False) -> Record | None:
        """The user's record; None for a guest whose sponsors are still to be read (it comes out of
        :meth:`unread_guest_records` after the user pass)."""
        oid = str(u.get("id"))
        active, eligible = held
        assert self.reports is not None
        p = m.user_principal(u, self.org, roles=active.get(oid, set()) if roles.readable else None,
                             eligible=eligible.get(oid, ()), **self.reports.for_user(u, base))
        if p.id in self.pids:  # two objects with one address: the second is named by its object id
            self.ctx.logger.warning("user %s: address %s is already another object's", oid, p.email)
            p = dataclasses.replace(p, id=f"user:entra:{oid}")
        self.pids.add(p.id)
        self.users[oid] = (p.id, p.kind)
        self.counts["guests" if p.kind == "guest" else "users"] += 1
        if p.kind != "guest":
            return p.record()
        known = self.guest_sponsors(oid, base, changed)
        if known is _READ_ALONE:
            self.unread_guests.append(p)
            return None
        return m.with_sponsors(p, known).record()  # type: ignore[arg-type]

    def guest_sponsors(self, oid: str, base: dict[str, Any] | None, changed: bool) -> m.Sponsorship | None | object:
        """A guest's sponsors if known now, None if they cannot be read in this run, or
        ``_READ_ALONE``: read them for this guest after the user pass."""
        sp = self.sponsors
        assert sp is not None
        if not sp.available:
            return None
        if sp.refreshed:  # listed this run; a guest created since the listing is read alone
            return sp.by_guest.get(oid, _READ_ALONE)
        carried = m.sponsorship_from_record(base) if base is not None else None
        if changed or carried is None or not self.touched.isdisjoint(carried.object_ids):
            return _READ_ALONE  # changed or new, never read, or a sponsor changed (renamed, deleted)
        return carried

    def unread_guest_records(self) -> Iterator[Record]:
        """The guests held back by :meth:`user_record`, with their sponsors read in ``$batch``es."""
        if not self.unread_guests:
            return
        sp = self.sponsors
        assert sp is not None
        guests, self.unread_guests = self.unread_guests, []
        got, refused = self.read.sponsors_of([str(p.attributes.get("object_id")) for p in guests])
        sp.read_alone += len(guests)
        if refused is not None:
            sp.available, sp.reason = False, refused
        for p in guests:
            yield m.with_sponsors(p, got.get(str(p.attributes.get("object_id")))).record()

    def group_record(self, g: dict[str, Any]) -> Record:
        p = m.group_principal(g, self.org)
        self.groups[str(g.get("id"))] = m.Who(p.id, "group", p.email, p.domain, p.external)
        self.counts["groups"] += 1
        return p.record()

    def member_who(self, ref: dict[str, Any]) -> m.Who | None:
        """The member a ``members@delta`` reference names; None for a group not seen yet."""
        oid, otype = str(ref.get("id")), ref.get("@odata.type") or ""
        if otype == m.USER_TYPE:
            known = self.users.get(oid)
            if known is None:
                return m.Who(f"user:entra:{oid}", "user", None, None, None)
            pid, kind = known
            email = None if pid.startswith("user:entra:") else pid.removeprefix("user:")
            domain = m.email_domain(email)
            return m.Who(pid, kind, email, domain, m.external(self.org, domain))
        if otype == m.GROUP_TYPE:
            return self.groups.get(oid)
        return m.who_from_object(ref, oid, self.org)

    def member_record(self, group_oid: str, ref: dict[str, Any], deferred: list[tuple[str, dict[str, Any]]] | None) -> Record | None:
        group = self.groups.get(group_oid)
        who = self.member_who(ref)
        if who is None or group is None:
            if deferred is not None:
                deferred.append((group_oid, ref))
                return None
            if group is None:
                return None
            who = m.Who(f"group:entra:{ref.get('id')}", "group", None, None, None)
        self.counts["memberships"] += 1
        return m.membership(group.pid, group_oid, who, str(ref.get("id")), ref.get("@odata.type") or "")

    # -- full ---------------------------------------------------------------------------------------
    def full(self, roles: Roles) -> Iterator[Record]:
        held = roles.held()
        for users in self.read.users(delta=self.config.incremental):
            for u in users:
                if u.get("@removed") is None:
                    rec = self.user_record(u, roles, held, None)
                    if rec is not None:
                        yield rec
        yield from self.unread_guest_records()
        try:
            yield from self.full_groups()
        except Cancelled:
            raise
        except ConnectorError as exc:  # users are in: say what is missing and seal partial
            self.read.groups_link = None
            self.ctx.error("groups and memberships", f"listing stopped: {exc}")

    def full_groups(self) -> Iterator[Record]:
        deferred: list[tuple[str, dict[str, Any]]] = []
        for groups in self.read.groups():
            for g in groups:
                if g.get("@removed") is not None:
                    continue
                gid = str(g.get("id"))
                if gid not in self.groups:
                    yield self.group_record(g)
                for ref in g.get("members@delta") or []:
                    if ref.get("@removed") is None:
                        rec = self.member_record(gid, ref, deferred)
                        if rec is not None:
                            yield rec
        for gid, ref in deferred:  # nested groups listed after the group they are in
            rec = self.member_record(gid, ref, None)
            if rec is not None:
                yield rec

    # -- incremental --------------------------------------------------------------------------------
    def incremental(self, roles: Roles, ch: Changes) -> Iterator[Record]:
        ctx, base = self.ctx, self.ctx.base
        held = roles.held()
        seen_users: set[str] = set()    # changed users found in the base (the rest are new)
        seen_groups: set[str] = set()
        applied: Counter[str] = Counter()
        self.touched = set(ch.users) | ch.users_removed | set(ch.groups) | ch.groups_removed
        for _, data in base.records("principals"):
            kind, oid = data.get("kind"), (data.get("attributes") or {}).get("object_id")
            if kind in ("user", "guest") and oid:
                if oid in ch.users_removed:
                    applied["users_removed"] += 1
                    continue
                u = m.user_from_record(data)
                if oid in ch.users:
                    u = {**u, **ch.users[oid]}
                    seen_users.add(oid)
                    applied["users_changed"] += 1
                rec = self.user_record(u, roles, held, data, changed=oid in ch.users)
                if rec is not None:
                    yield rec
            elif kind == "group" and oid:
                if oid in ch.groups_removed:
                    applied["groups_removed"] += 1
                    continue
                g = m.group_from_record(data)
                if oid in ch.groups:
                    g = {**g, **ch.groups[oid]}
                    seen_groups.add(oid)
                    applied["groups_changed"] += 1
                yield self.group_record(g)
            # roles are re-read every run; anything else is not this connector's
        for oid in sorted(set(ch.users) - seen_users):
            applied["users_added"] += 1
            rec = self.user_record(ch.users[oid], roles, held, None, changed=True)
            if rec is not None:
                yield rec
        yield from self.unread_guest_records()
        for gid in sorted(set(ch.groups) - seen_groups):
            applied["groups_added"] += 1
            yield self.group_record(ch.groups[gid])

        for _, data in base.records("memberships"):
            a = data.get("attributes") or {}
            key = (str(a.get("group_object_id")), str(a.get("member_object_id")))
            if key in ch.removed:
                applied["members_removed"] += 1
                continue
            if key in ch.added or key[0] in ch.groups_removed or key[1] in ch.users_removed:
                continue
            ref = {"@odata.type": "#microsoft.graph." + (a.get("member_type") or "directoryObject"), "id": key[1]}
            rec = self.member_record(key[0], ref, None)
            if rec is not None:
                yield rec
        for (gid, _mid), ref in sorted(ch.added.items()):
            applied["members_added"] += 1
            rec = self.member_record(gid, ref, None)
            if rec is not None:
                yield rec
        ctx.note("changes_applied", dict(sorted(applied.items())))
        listed = ([{"object_id": o, "change": "user changed"} for o in sorted(ch.users)]
                  + [{"object_id": o, "change": "user removed"} for o in sorted(ch.users_removed)]
                  + [{"object_id": o, "change": "group changed"} for o in sorted(ch.groups)]
                  + [{"object_id": o, "change": "group removed"} for o in sorted(ch.groups_removed)]
                  + [{"object_id": f"{g}|{mm}", "change": "member added"} for g, mm in sorted(ch.added)]
                  + [{"object_id": f"{g}|{mm}", "change": "member removed"} for g, mm in sorted(ch.removed)])
        ctx.note("changes", listed[:MAX_CHANGES_LISTED])
        if len(listed) > MAX_CHANGES_LISTED:
            ctx.note("changes_not_listed", len(listed) - MAX_CHANGES_LISTED)
        ctx.note("base", {"run_id": base.run_id, "bag": base.relpath, "tagmanifest_sha256": base.digest})


__all__ = ["CURSOR_VERSION", "Pacer", "Reader", "Reports", "Roles", "Snapshot", "Sponsors", "Unavailable"]

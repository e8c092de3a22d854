"""Microsoft Entra ID: users and guests, groups and their members, directory roles (active and
PIM-eligible), sign-in activity and MFA registration — through Microsoft Graph v1.0.

What it reads (application permissions, client credentials; the cheapest correct plan of
reference/apis.md §1.3), through the shared Graph layer (:mod:`connectors._graph`: msal with a
secret or a certificate, the configured CA only, retries with ``Retry-After``, the
``ru_per_10s`` resource-unit budget, raw pages and counters):

* ``GET /roleManagement/directory/roleDefinitions`` and ``…/roleAssignments?$expand=principal``
  (who holds which role), and with ``pim = true`` ``…/roleEligibilitySchedules?$expand=principal``
  (who may activate one; Entra ID P2);
* users: with incremental runs on, the ``GET /users/delta?$select=…`` round (its last page's
  ``@odata.deltaLink`` is the cursor); with them off, ``GET /users?$select=…&$top=999``. The delta
  round is the dearer listing (no ``$top`` on delta: about 200 a page, and 2 RU for each next page,
  against 999 a page at 1 RU) — roughly U/100 RU instead of U/999 — but it is the only way to a
  delta link whose start precedes the listing, and it is paid once per full run;
* ``GET /users?$select=id,signInActivity&$top=500`` (``signin_activity``; AuditLog.Read.All and an
  Entra ID P1/P2 licence; paced to ``signin_calls_per_minute``, Graph's 10 a minute);
* ``GET /reports/authenticationMethods/userRegistrationDetails`` (``mfa_report``; AuditLog.Read.All;
  server-chosen pages, paced to ``report_calls_per_10s``, Graph's 5 per 10 s). The report does not
  cover disabled users: theirs is ``mfa = null`` (unknown), never false;
* ``GET /groups/delta?$select=id,displayName,mail,securityEnabled,groupTypes,mailEnabled,members``:
  every group with its members in ``members@delta`` (``$expand=members`` would stop at 20);
* guests' sponsors (``sponsors``; User.Read.All, no licence):
  ``GET /users?$filter=userType eq 'Guest'&$select=id&$expand=sponsors&$top=100`` — G/100 calls at
  2 RU (a listing with ``$expand`` stops at 100 a page whatever ``$top`` says; a guest has at most
  five sponsors, within the 20 an expansion returns). ``users/delta`` cannot carry them (no
  ``$expand`` on user delta, and ``$select`` tracks only the ``manager`` relationship), so a guest
  the listing missed (created after it), changed in the delta, or one of whose sponsors changed is
  read alone: ``GET /users/{id}/sponsors`` in ``$batch`` requests of 20.

Sign-in activity, the MFA report, PIM and guests' sponsors are optional: refused for a missing
permission or licence, the run stays complete, the fields are null, run.json's notes say why
(``signin_activity`` / ``mfa_report`` / ``pim`` / ``sponsors``: ``available``, ``reason``), and
``shoseki check`` names the permission or licence to add (or the setting that turns the part off).

Identifiers (shared with the ``m365_files`` connector's grantees, and equal to the Google
connectors' for the same address, so one person joins across sources):

* a user or guest → ``user:<address, lower case>``: ``mail``; for a guest without one, the real
  address inside its ``#EXT#`` UPN; else the UPN (``user:entra:<object id>`` if it has none, or if
  another object already has the address). UPN, mail and object id are kept in ``attributes``;
* a group → ``group:<mail, lower case>`` when mail-enabled, else ``group:entra:<object id>``;
* a service principal (a member or role holder) → ``service_account:entra:<object id>``; any other
  directory object → ``entra:<object id>``; a user member not in the user listing (created mid-run)
  → ``user:entra:<object id>``;
* a directory role → ``role:entra:<role definition id>`` (kind ``role``);
* the tenant → resource ``entra-tenant:<tenant_id as configured, lower case>`` (kind ``account``).

Records: users are principals of kind ``user`` (userType Member) or ``guest``, with ``external``
decided against the organisation's domains (a guest by its real address), ``enabled``, ``mfa``
(isMfaRegistered), ``admin`` (holds an active directory role; null when the roles could not be
read), ``roles`` (their names), ``last_sign_in`` (the later of the interactive and non-interactive
sign-in; both, and the last successful one, in ``attributes``), ``created``; ``attributes`` also
hold ``object_id``, ``upn``, ``mail``, ``user_type``, ``external_user_state``, ``creation_type``,
``mfa_capable``, ``mfa_methods``, ``mfa_available``, ``signin_available``, ``eligible_roles``; a
guest's also ``sponsors`` (its sponsors' principal ids, sorted: ``user:<address>`` or ``group:…``;
``[]`` when Graph says it has none; null when they could not be read) and ``sponsor_object_ids``.
Groups are principals of kind ``group``; each member a membership (member kind user / guest / group
/ service_account, role ``member``). Each active role assignment and each eligibility schedule is a
grant of role ``admin`` on the tenant (``raw_role`` = the role's name, ``grant_id`` = the
assignment or schedule id, ``attributes.assignment`` = ``active`` | ``eligible``), so "who is an
administrator, now or on activation" is a query over grants.

Incremental runs (``incremental = true``; a full baseline every ``full_every_days``): the cursor
keeps the users and groups delta links. A run follows both links, re-reads the roles (no delta;
a few calls), re-reads sign-in activity, the MFA report and the guests' sponsors only every
``refresh_reports_hours`` (in between, unchanged users keep the base bag's values; a user disabled
since is ``mfa = null`` as the report would say; users created since get theirs at the next
refresh; a guest changed or added in the delta, or whose sponsor changed or was removed, has its
sponsors read alone, in ``$batch``), applies the
changes to the records of the previous *complete* bag (checked against its manifest first) and
seals a **complete** bag — run.json notes ``mode: incremental``, the base bag's digest and the
changes applied. A delta link the service will not continue (410 Gone, or a refused token) means
a full resync in the same run, with the reason in ``mode_reason``.

Memory: records are streamed; what is held is per user, not per record — object id → principal
id (members name users by object id only) and, while joining, the sign-in and MFA values (a few
short strings each: tens of MB at 100k users) and each guest's sponsors (five ids at most) — plus
the roles and, in incremental runs, the changes and the changed guests held back until their
sponsors are read.

Application permissions to grant (Entra admin center → App registrations → API permissions →
Microsoft Graph → Application permissions, then "Grant admin consent"), all read-only: see
:data:`PERMISSIONS`.
"""

from __future__ import annotations

from typing import Any, Iterator

from pydantic import Field

from connectors._graph import GraphClients, GraphSettings, graph_failure
from connectors.base import (
    CheckResult,
    Connector,
    ConnectorError,
    PermissionDenied,
    RunContext,
    choose_mode,
)
from connectors.entra_id import mapping as m
from connectors.entra_id.collect import (
    AUDIT_PERMISSION,
    CURSOR_VERSION,
    GUEST_FILTER,
    PIM_PERMISSION,
    REGISTRATION_PATH,
    USERS_PERMISSION,
    Snapshot,
)
from evidence.model import RawPage, Record

PERMISSIONS = (
    "User.Read.All (users, guests and the guests' sponsors)",
    "GroupMember.Read.All",
    "RoleManagement.Read.Directory",
    "AuditLog.Read.All (sign-in activity and the MFA registration report; signInActivity needs a "
    "Microsoft Entra ID P1 or P2 licence, PIM eligibility needs P2)",
)
GRANT_HINT = ("grant the application permission {perm} (Entra admin center → App registrations → API permissions "
              "→ Microsoft Graph → Application permissions) and then 'Grant admin consent'")


class EntraIdConfig(GraphSettings):
    """The Graph settings plus Entra ID's throttling budget and what to collect."""

    ru_per_10s: int = Field(3500, ge=1, le=100_000,
                            description="Identity throttling budget per app and tenant: 3,500 / 5,000 / 8,000 resource "
                                        "units per 10 s for tenants of < 50 / 50-500 / > 500 users")
    signin_activity: bool = Field(True, description="read users' signInActivity (AuditLog.Read.All + Entra ID P1/P2)")
    mfa_report: bool = Field(True, description="read the MFA registration report (AuditLog.Read.All)")
    pim: bool = Field(True, description="read PIM role eligibility schedules (Entra ID P2) when readable")
    sponsors: bool = Field(True, description="read guests' sponsors (User.Read.All)")
    incremental: bool = True
    full_every_days: float = Field(7.0, gt=0, description="a full baseline at least this often")
    refresh_reports_hours: float = Field(24.0, ge=0, description="re-read sign-in and MFA data this often in incremental runs")
    signin_calls_per_minute: int = Field(10, ge=1, le=10_000, description="Graph's limit for signInActivity listings")
    report_calls_per_10s: int = Field(5, ge=1, le=10_000, description="Graph's limit for the reports family")


class EntraIdConnector(Connector):
    """Users, guests, groups, memberships and directory roles of a Microsoft Entra ID tenant."""

    kind = "entra_id"
    Config = EntraIdConfig
    streams = ("principals", "memberships", "resources", "grants")
    permissions = PERMISSIONS
    description = (
        "Snapshots Microsoft Entra ID through Microsoft Graph: users and guests with their sign-in activity, "
        "MFA registration and account state, guests' sponsors, groups and every membership, directory roles and "
        "who holds them (active and PIM-eligible)."
    )

    config: EntraIdConfig

    @classmethod
    def make_clients(cls, config: EntraIdConfig) -> GraphClients:  # type: ignore[override]
        return GraphClients(config, ru_per_minute=6 * config.ru_per_10s)

    # -- check ----------------------------------------------------------------------------------
    def check(self) -> CheckResult:
        result = CheckResult()
        cfg = self.config
        try:
            clients: GraphClients = self.ensure_clients()
            clients.token()
        except ConnectorError as exc:
            return result.add("app credential", False, f"{exc} (app {cfg.client_id} in tenant {cfg.tenant_id})")
        except Exception as exc:  # check never raises
            return result.add("app credential", False, f"{type(exc).__name__}: {exc}")
        result.add("app credential", True, f"token for app {cfg.client_id} in tenant {cfg.tenant_id}")
        ctx = RunContext.for_check()
        roles = "/roleManagement/directory"
        probes: list[tuple[str, str, str, dict[str, Any] | None, str, str | None]] = [
            ("users (principals)", "users.list", "/users", {"$select": "id", "$top": 1}, "User.Read.All", None),
            ("groups and members (principals, memberships)", "groups.list", "/groups", {"$select": "id", "$top": 1},
             "GroupMember.Read.All", None),
            ("directory roles (principals, grants)", "roles.definitions", f"{roles}/roleDefinitions", {"$select": "id"},
             "RoleManagement.Read.Directory", None),
        ]
        if cfg.signin_activity:
            probes.append(("sign-in activity (principals.last_sign_in)", "users.signInActivity", "/users",
                           {"$select": "id,signInActivity", "$top": 1}, AUDIT_PERMISSION, "signin_activity"))
        if cfg.mfa_report:
            probes.append(("MFA registration report (principals.mfa)", "reports.userRegistrationDetails",
                           REGISTRATION_PATH, {"$top": 1}, AUDIT_PERMISSION, "mfa_report"))
        if cfg.sponsors:
            probes.append(("guests' sponsors (principals.attributes.sponsors)", "users.guestSponsors", "/users",
                           {"$filter": GUEST_FILTER, "$select": "id", "$expand": "sponsors", "$top": 1},
                           USERS_PERMISSION, "sponsors"))
        if cfg.pim:
            probes.append(("PIM role eligibility (grants)", "roles.eligibilitySchedules",
                           f"{roles}/roleEligibilitySchedules", None, PIM_PERMISSION, "pim"))
        for name, endpoint, path, params, perm, optional in probes:
            try:
                status, body = clients.get(ctx, endpoint, path, params=params, where=name,
                                           ok_statuses=(400, 403) if optional else ())
            except PermissionDenied as exc:
                result.add(name, False, f"{exc} — {GRANT_HINT.format(perm=perm)}")
                continue
            except Exception as exc:  # check never raises
                result.add(name, False, f"{type(exc).__name__}: {exc}")
                continue
            if status < 300:
                result.add(name, True, f"{endpoint} answered")
                continue
            f = graph_failure(status, body, None)
            reason = m.unavailable_reason(f.status, f.code, f.message, perm) or f.describe()
            if f.status == 403 and "licen" not in reason.lower():
                reason += " — " + GRANT_HINT.format(perm=perm)
            result.add(name, False, f"{reason}. Runs stay complete with this field unknown (null); "
                                    f"set {optional} = false to stop collecting it")
        return result

    # -- snapshot -------------------------------------------------------------------------------
    def snapshot(self, ctx: RunContext) -> Iterator[Record | RawPage]:
        cfg = self.config
        clients: GraphClients = self.ensure_clients()
        ctx.identity = f"app {cfg.client_id} in tenant {cfg.tenant_id}"
        run = Snapshot(cfg, clients, ctx)
        mode, why, cursor = self._mode(ctx, run)
        yield from run.run(mode, why, cursor)
        if cfg.incremental:
            cur = run.cursor()
            if cur is not None:
                ctx.set_cursor(cur)

    def _mode(self, ctx: RunContext, run: Snapshot) -> tuple[str, str, dict[str, Any] | None]:
        cfg = self.config

        def check(cursor: dict[str, Any]) -> str | None:
            links = (cursor.get("users_delta"), cursor.get("groups_delta"))
            if not all(isinstance(link, str) and link.startswith(run.clients.base + "/") for link in links):
                return "the cursor's delta links are not on the configured Graph host"
            return None

        return choose_mode(ctx, enabled=cfg.incremental, version=CURSOR_VERSION, config_digest=run.config_digest(),
                           full_every_days=cfg.full_every_days, check=check, what="delta changes")


__all__ = ["EntraIdConfig", "EntraIdConnector", "PERMISSIONS"]

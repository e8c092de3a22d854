"""Microsoft stand-in: Entra ID (token endpoint) and Microsoft Graph v1.0 over HTTPS.

Serves one :class:`sandbox.org.Org` the way ``login.microsoftonline.com`` and
``graph.microsoft.com`` answer it on the wire, so the *real* msal ``ConfidentialClientApplication``
and plain ``requests`` work unchanged against ``https://127.0.0.1:<port>``:

* **Identity**: ``GET /{tenant}/v2.0/.well-known/openid-configuration`` and
  ``POST /{tenant}/oauth2/v2.0/token`` (client credentials with a client secret or a certificate
  ``client_assertion``: RS256 + ``x5t`` (msal given a SHA-1 ``thumbprint``) or PS256 +
  ``x5t#S256`` (msal given ``public_certificate``), signature checked against the registered
  certificate). Errors are the AADSTS bodies (``AADSTS7000215`` wrong secret, ``AADSTS700016``
  unknown client, ``AADSTS700027`` bad assertion signature, ``AADSTS1002012`` bad scope …).
  Access tokens are opaque random strings with a configurable TTL; an expired one gets Graph's
  ``401 InvalidAuthenticationToken``.
* **Graph v1.0**: users (``$select``/``$top``/``$filter``/``$expand=sponsors``, ``signInActivity``),
  ``users/delta``, groups, ``groups/delta`` with ``members@delta``, ``groups/{id}/members|owners``,
  role definitions / assignments (``$expand=principal``) / eligibility schedules,
  ``reports/authenticationMethods/userRegistrationDetails``, ``sites/getAllSites``,
  ``sites/{id}/drives``, ``users/{id}/drive``, ``drives/{id}/root/delta`` (the four ``Prefer``
  values, ``@microsoft.graph.sharedChanged``, ``410 resyncRequired``), driveItem permissions,
  and JSON ``$batch`` (max 20, each inner request costed, counted and faulted on its own).
* **Resource units** per apis.md §1.3/§1.4 (``units()``), sent back as ``x-ms-resource-unit``, so a
  :class:`sandbox.server.FaultRule` with ``quota_units=True`` emulates the documented budgets.
  Throttling: ``429`` + ``Retry-After`` with Graph's error body (``TooManyRequests``; the
  SharePoint/OneDrive endpoints answer ``activityLimitReached`` as SharePoint does).

Identifiers are deterministic GUIDs derived from the organisation (uuid5 of a fixed namespace and
``seed:kind:index``) whose last 12 hex digits carry the kind and index, so any id maps back to its
person / guest / group / site by arithmetic; nothing tenant-sized is held in memory, and paging
tokens carry positions, not lists.

The per-token snapshots of the group membership overlay that ``groups/delta`` diffs against are
kept here (the org's change log records *that* a group changed, not *who*); everything else about
the organisation comes from public :class:`sandbox.org.Org` methods (``guest_by_email``,
``group_members_from`` for member pages by position, ``group_overlay`` for a consistent
(seq, overlay) pair, ``is_base_member``).

Layout: :class:`MicrosoftStandIn` is assembled here from one mixin per part of the service:
``identity`` (TLS material, :class:`AppInfo`, tokens, the authority and token endpoints),
``directory`` (users, groups, roles, reports), ``files`` (sites, drives, drive items,
permissions), ``batch`` (``$batch``) and ``common`` (constants, errors, ids, lookups, query
helpers, responses). The routing table, the :class:`StandIn` overrides and the dispatcher are
here.
"""

from __future__ import annotations

import re
import secrets
import threading
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sandbox.microsoft.batch import _Batch
from sandbox.microsoft.common import (
    DEFAULT_APP_ROLES,
    GLOBAL_ADMIN,
    GRAPH_SCOPE,
    NAMESPACE,
    USER_ADMIN,
    GraphError,
    TokenError,
    _Common,
    _Match,
    _Route,
    make_session,
)
from sandbox.microsoft.directory import _Directory
from sandbox.microsoft.files import _Files
from sandbox.microsoft.identity import (
    AppInfo,
    _app_certificate,
    _Identity,
    _tls_material,
    _Token,
)
from sandbox.org import Org
from sandbox.server import FaultRule, Request, Response, SandboxServer, StandIn

# -- the stand-in ----------------------------------------------------------------------------------


class MicrosoftStandIn(_Identity, _Directory, _Files, _Batch, _Common, StandIn):
    """Entra ID + Graph for one :class:`Org`. Serve it with ``SandboxServer(s, tls=s.ssl_context())``
    or :func:`start`."""

    name = "microsoft"

    def __init__(
        self,
        org: Org,
        *,
        ca_file: str | Path,
        seed: int = 0,
        token_ttl_s: float = 3599,
        app_roles: Iterable[str] = DEFAULT_APP_ROLES,
        premium: bool = True,
        tenant_name: str | None = None,
        delta_horizon_s: float = 30 * 86400,
        page_size: int = 100,
        delta_page_size: int = 200,
        group_delta_page_members: int = 100,
        report_page_size: int = 100,
        signin_page_max: int = 500,
        inherited_from: bool = False,
        folder_shared_changed_gap: bool = True,
        retry_after_503_s: int | None = 1,
    ):
        super().__init__(org, seed=seed)
        self.token_ttl_s = float(token_ttl_s)
        self.app_roles = frozenset(app_roles)
        self.premium = premium
        self.delta_horizon_s = delta_horizon_s
        self.page_size = page_size
        self.delta_page_size = delta_page_size
        self.group_delta_page_members = group_delta_page_members
        self.report_page_size = report_page_size
        self.signin_page_max = signin_page_max
        self.inherited_from = inherited_from
        self.folder_shared_changed_gap = folder_shared_changed_gap
        self.retry_after_503_s = retry_after_503_s

        self.tenant_name = tenant_name or re.sub(r"[^a-z0-9]", "", org.domain.split(".")[0].lower()) or "contoso"
        self.tenant_domain = f"{self.tenant_name}.onmicrosoft.com"
        self.sp_host = f"{self.tenant_name}.sharepoint.com"
        self.my_host = f"{self.tenant_name}-my.sharepoint.com"
        self.tenant_id = str(uuid.uuid5(NAMESPACE, f"{org.seed}:tenant:{org.domain}"))
        self.client_id = str(uuid.uuid5(NAMESPACE, f"{org.seed}:app:shoseki-collector"))
        self.client_secret = secrets.token_urlsafe(30)
        self.certificate_pem, self.private_key_pem, self._app_cert = _app_certificate("shoseki-sandbox-app")
        from cryptography.hazmat.primitives import hashes

        self._cert_sha1 = self._app_cert.fingerprint(hashes.SHA1())
        self._cert_sha256 = self._app_cert.fingerprint(hashes.SHA256())

        self.ca_file = Path(ca_file)
        self.ca_file.parent.mkdir(parents=True, exist_ok=True)
        self._ca_pem, self._leaf_pem, self._leaf_key = _tls_material()
        self.ca_file.write_bytes(self._ca_pem)

        self._tokens: dict[str, _Token] = {}
        self._token_lock = threading.Lock()
        self._delta_epoch: dict[str, int] = {}
        self._group_snapshots: dict[int, tuple[dict[str, frozenset[str]], dict[str, frozenset[str]]]] = {}
        self._snap_lock = threading.Lock()
        self._groups_cache: tuple[Any, ...] | None = None
        self._admin_cache: tuple[int, list[tuple[str, int]]] | None = None
        self._routes = self._build_routes()

    def mutate(self, op: str, args: dict[str, Any]) -> Any:
        extra = {
            "expire_tokens": lambda a: self.expire_tokens(),
            "invalidate_delta": lambda a: self.invalidate_delta_tokens(a.get("drive_id")),
            "set_app_roles": lambda a: self.set_app_roles(a["roles"]),
            "set_premium": lambda a: setattr(self, "premium", bool(a["premium"])),
        }.get(op)
        return extra(args) if extra else super().mutate(op, args)

    # -- routes ------------------------------------------------------------------------------------
    def _build_routes(self) -> list[_Route]:
        R = lambda m, p, n, fn, login=False: _Route(m, re.compile(p + r"/?$"), n, fn, login)
        seg = r"(?P<%s>[^/]+)"
        return [
            R("GET", r"/(?P<tenant>[^/]+)/v2\.0/\.well-known/openid-configuration", "login.openid", self._openid, True),
            R("GET", r"/(?P<tenant>[^/]+)/discovery/v2\.0/keys", "login.keys", self._keys, True),
            R("POST", r"/(?P<tenant>[^/]+)/oauth2/v2\.0/token", "login.token", self._token, True),
            R("POST", r"/v1\.0/\$batch", "batch", self._batch),
            R("GET", r"/v1\.0/users", "users.list", self._users_list),
            R("GET", r"/v1\.0/users/delta(?:\(\))?", "users.delta", self._users_delta),
            R("GET", r"/v1\.0/users/" + seg % "uid", "users.get", self._users_get),
            R("GET", r"/v1\.0/users/" + seg % "uid" + "/sponsors", "users.sponsors", self._users_sponsors),
            R("GET", r"/v1\.0/users/" + seg % "uid" + "/drive", "users.drive", self._users_drive),
            R("GET", r"/v1\.0/users/" + seg % "uid" + r"/drive/root/delta(?:\(token='(?P<tok>[^']*)'\))?", "drives.delta", self._drive_delta),
            R("GET", r"/v1\.0/groups", "groups.list", self._groups_list),
            R("GET", r"/v1\.0/groups/delta(?:\(\))?", "groups.delta", self._groups_delta),
            R("GET", r"/v1\.0/groups/" + seg % "gid", "groups.get", self._groups_get),
            R("GET", r"/v1\.0/groups/" + seg % "gid" + "/members", "groups.members", self._groups_members),
            R("GET", r"/v1\.0/groups/" + seg % "gid" + "/owners", "groups.owners", self._groups_owners),
            R("GET", r"/v1\.0/roleManagement/directory/roleDefinitions", "roles.definitions", self._role_definitions),
            R("GET", r"/v1\.0/roleManagement/directory/roleAssignments", "roles.assignments", self._role_assignments),
            R("GET", r"/v1\.0/roleManagement/directory/roleEligibilitySchedules", "roles.eligibilitySchedules", self._role_eligibility),
            R("GET", r"/v1\.0/reports/authenticationMethods/userRegistrationDetails", "reports.userRegistrationDetails", self._registration),
            R("GET", r"/v1\.0/sites/getAllSites(?:\(\))?", "sites.getAllSites", self._sites_all),
            R("GET", r"/v1\.0/sites/" + seg % "sid", "sites.get", self._sites_get),
            R("GET", r"/v1\.0/sites/" + seg % "sid" + "/drives", "sites.drives", self._sites_drives),
            R("GET", r"/v1\.0/sites/" + seg % "sid" + "/drive", "sites.drive", self._sites_drive),
            R("GET", r"/v1\.0/sites/" + seg % "sid" + r"/drive/root/delta(?:\(token='(?P<tok>[^']*)'\))?", "drives.delta", self._drive_delta),
            R("GET", r"/v1\.0/drives/" + seg % "did", "drives.get", self._drives_get),
            R("GET", r"/v1\.0/drives/" + seg % "did" + "/root", "items.get", self._items_get),
            R("GET", r"/v1\.0/drives/" + seg % "did" + r"/root/delta(?:\(token='(?P<tok>[^']*)'\))?", "drives.delta", self._drive_delta),
            R("GET", r"/v1\.0/drives/" + seg % "did" + "/items/" + seg % "iid", "items.get", self._items_get),
            R("GET", r"/v1\.0/drives/" + seg % "did" + "/items/" + seg % "iid" + "/permissions", "items.permissions", self._items_permissions),
        ]

    def _match(self, req: Request) -> _Match:
        cached = getattr(req, "_ms_match", None)
        if cached is not None:
            return cached
        found = _Match(None)
        allowed: list[str] = []
        for route in self._routes:
            m = route.pattern.match(req.path)
            if m is None:
                continue
            if route.method == req.method:
                found = _Match(route, {k: v for k, v in m.groupdict().items() if v is not None})
                break
            allowed.append(route.method)
        if found.route is None:
            found.allowed = tuple(allowed)
        req._ms_match = found
        return found

    # -- StandIn overrides: names, costs, principals, error shapes ---------------------------------
    def endpoint(self, req: Request) -> str:
        m = self._match(req)
        return m.route.name if m.route else "unknown"

    def units(self, req: Request, endpoint: str) -> float:
        if endpoint.startswith("login.") or endpoint in ("batch", "unknown"):
            return 0.0
        if endpoint == "items.permissions":
            return 5.0
        if endpoint == "drives.delta":
            return 1.0 if (self._match(req).params.get("tok") or req.arg("token")) else 2.0
        if endpoint in ("sites.getAllSites", "sites.drives"):
            return 2.0
        if endpoint.startswith(("sites.", "drives.", "items.")) or endpoint == "users.drive":
            return 1.0
        base = {"users.list": 2.0, "users.get": 2.0, "users.delta": 2.0, "groups.members": 3.0}.get(endpoint, 1.0)
        if req.arg("$select"):
            base -= 1
        if req.arg("$expand"):
            base += 1
        return max(base, 1.0)

    def principal(self, req: Request) -> str:
        token = self._bearer(req)
        with self._token_lock:
            t = self._tokens.get(token or "")
        return t.client_id if t else "anonymous"

    @staticmethod
    def _sharepoint(endpoint: str) -> bool:
        return endpoint.startswith(("sites.", "drives.", "items.")) or endpoint == "users.drive"

    def throttle_response(self, req: Request, endpoint: str, retry_after: float) -> Response:
        if endpoint.startswith("login."):
            return self._token_error(TokenError(429, "temporarily_unavailable", 50196, "The server temporarily throttled the request."),
                                     retry_after=retry_after or 1)
        headers = {"Retry-After": str(max(1, int(retry_after + 0.999)))}
        if self._sharepoint(endpoint):
            err = GraphError(429, "activityLimitReached", "The request has been throttled",
                             headers, {"code": "throttledRequest"})
        else:
            err = GraphError(429, "TooManyRequests", "Too many requests", headers)
        return self._error(req, err)

    def error_response(self, req: Request, endpoint: str, status: int) -> Response:
        if endpoint.startswith("login."):
            return self._token_error(TokenError(status, "temporarily_unavailable", 50196 if status == 429 else 90033,
                                                "A transient error has occurred. Please try again."))
        code, message = {
            500: ("generalException", "An unspecified error has occurred."),
            502: ("serviceNotAvailable", "Bad gateway."),
            503: ("serviceNotAvailable", "The service is temporarily unavailable. Please retry later."),
            504: ("gatewayTimeout", "The operation timed out."),
        }.get(status, ("UnknownError", "An error occurred."))
        headers = {"Retry-After": str(self.retry_after_503_s)} if status == 503 and self.retry_after_503_s else {}
        return self._error(req, GraphError(status, code, message, headers))

    def rule_applies(self, rule: FaultRule, endpoint: str) -> bool:
        # The identity endpoints are a different service from Graph: "*" rules (Graph quotas,
        # 5xx rates) do not apply to them; only rules that name the login endpoint do.
        if endpoint.startswith("login."):
            return rule.endpoint == endpoint
        return super().rule_applies(rule, endpoint)

    # -- dispatch ----------------------------------------------------------------------------------
    def handle(self, req: Request) -> Response:
        m = self._match(req)
        try:
            if m.route is None:
                if m.allowed:
                    raise GraphError(405, "Request_BadRequest", "Specified HTTP method is not allowed for the request target.")
                segment = req.path.rstrip("/").rsplit("/", 1)[-1]
                raise GraphError(400, "BadRequest", f"Resource not found for the segment '{segment}'.")
            if m.route.login:
                return m.route.fn(req, m.params)
            token = self._authenticate(req)
            resp = m.route.fn(req, m.params, token)
        except GraphError as err:
            resp = self._error(req, err)
        if m.route is not None and not m.route.login and m.route.name != "batch":
            resp.headers["x-ms-resource-unit"] = str(int(self.units(req, m.route.name)))
        return resp


def start(org: Org, *, workdir: Path, **options: Any) -> tuple[SandboxServer, MicrosoftStandIn]:
    """Serve ``org`` over HTTPS on 127.0.0.1; the CA goes to ``workdir/microsoft-ca.pem``.

    Returns the started server (``server.url``, ``server.close()``) and the stand-in
    (``app_info()``, ``ca_file``, ``stats``, ``set_faults()``, ``expire_tokens()`` …).
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    standin = MicrosoftStandIn(org, ca_file=workdir / "microsoft-ca.pem", **options)
    server = SandboxServer(standin, tls=standin.ssl_context())
    server.start()
    return server, standin


__all__ = [
    "DEFAULT_APP_ROLES",
    "GLOBAL_ADMIN",
    "GRAPH_SCOPE",
    "USER_ADMIN",
    "AppInfo",
    "FaultRule",
    "GraphError",
    "MicrosoftStandIn",
    "make_session",
    "start",
]

"""Google Workspace stand-in: OAuth2 JWT bearer, Drive v3, Admin SDK Directory v1, batch.

Serves one :class:`sandbox.org.Org` over plain HTTP on 127.0.0.1 so that clients built with the
real google-api-python-client from the *packaged* discovery documents work unchanged::

    doc = json.loads((importlib.resources.files("googleapiclient")
                      / "discovery_cache/documents/drive.v3.json").read_text())
    doc["rootUrl"] = server.url + "/"
    creds = service_account.Credentials.from_service_account_info(
        standin.service_account_info(), scopes=[...], subject="admin@example.co.jp")
    drive = build_from_document(doc, credentials=creds)      # batch follows rootUrl too

Paths, parameter names, scopes and response schemas are read from those same discovery documents
(``drive.v3.json`` batchPath ``batch/drive/v3``; ``admin.directory_v1.json`` batchPath ``batch``),
so a method the stand-in serves has the real path, and a ``fields=`` selection naming a field the
real schema does not have is refused the way Google refuses it (400 "Invalid field selection").

What is served
--------------
* ``POST /token`` — the service-account JWT bearer grant. The assertion's RS256 signature is
  checked against the key :meth:`GoogleStandIn.service_account_info` hands out (generated at
  start, never written anywhere), with ``iss``, ``aud`` (``token_uri``, or Google's own token URL,
  which is what google-auth signs whatever ``token_uri`` says), ``iat``/``exp``.
  ``sub`` (domain-wide delegation) must be an existing person, else
  ``400 invalid_grant "Invalid email or User ID"`` (suspended people too when
  ``suspended_subjects="refuse"``, see below); asking for a scope the delegation does not
  grant gives ``401 unauthorized_client``. Access tokens are random and opaque; the server keeps
  ``token → (subject, scopes, expiry)``. ``expires_in`` says 3600 while the server-side lifetime is
  ``token_ttl_s``, so a test can make a token die mid-run (the client then gets Google's 401
  ``authError`` body and google-auth refreshes).
* Drive v3 (``/drive/v3``): ``files.list`` ``files.get`` ``permissions.list`` ``permissions.get``
  ``drives.list`` ``drives.get`` ``changes.getStartPageToken`` ``changes.list``.
* Directory v1 (``/admin/directory/v1``): ``users.list`` ``users.get`` ``groups.list``
  ``groups.get`` ``members.list`` ``roles.list`` ``roleAssignments.list`` ``tokens.list``.
  Directory calls need the subject to be a **super admin** (``Person.admin``); anyone else gets
  ``403 "Not Authorized to access this resource/api"`` as the real API answers.
* Reports v1 (``/admin/reports/v1``): ``activities.list`` for ``applicationName=drive`` (built
  from the organisation's change log; see :mod:`.reports`), as a super admin.
* Batch: ``POST /batch/drive/v3`` (max 100 inner calls, Drive's documented limit) and
  ``POST /batch`` (also ``/batch/admin/directory_v1``; max 1000, the Directory limit). Every inner
  call goes through the normal dispatcher: counted under its own endpoint, subject to faults on
  its own (an inner 429 is an inner response, as Google does it); the outer call is counted as
  ``batch`` with 0 units.
* Other methods of the two discovery documents: scope-checked, then ``501`` (not served).
* ``files.list`` ``q``: only ``'me' in owners``, ``trashed = false|true`` and ``'<id>' in parents``
  (``root`` allowed), joined with ``and``; anything else is Google's ``400 invalid`` on ``q``.
  Corpora: ``user`` = own files + files shared *directly* (user or group grant) with the subject;
  ``domain`` = own + domain-shared discoverable files; ``drive`` = one shared drive the subject is
  a member of; ``allDrives`` = ``user`` + every member drive. Shared-drive items need
  ``supportsAllDrives`` (else ``404 File not found: <id>.``) and, for listing,
  ``includeItemsFromAllDrives`` (else the ``403`` Google gives). ``useDomainAdminAccess`` works, as
  documented, only on ``drives.*`` and on ``permissions.*`` whose ``fileId`` is a shared drive.

Decisions where the real service is not fully specified (also in the report)
--------------------------------------------------------------------------
* **Expired shares.** Google removes a permission when its ``expirationTime`` passes ("access is
  automatically revoked"), so by default (``expired_shares="hide"``) a ``Share`` whose
  ``expiration`` is at or before :data:`sandbox.org.REFERENCE_TIME` (the organisation's "now") is
  not served anywhere: not in ``permissions``, ``permissionIds``, ``shared`` nor
  ``hasAugmentedPermissions``. ``expired_shares="show"`` serves it with its past
  ``expirationTime`` (a lagging clean-up). Future expirations are served as ``expirationTime``.
* **Suspended subjects.** Whether Google issues a delegated token for a *suspended* user is not
  documented (reports differ by product), and leavers' shares live in exactly those accounts. By
  default (``suspended_subjects="allow"``) the stand-in issues it, so a collector can list the
  files; ``"refuse"`` answers ``invalid_grant`` instead, so a test can check that the collector
  then names every unscanned account and does not call its run complete.
* **Inheritance.** Each ``File.shares`` is the item's complete direct ACL; folder-to-child
  inheritance is not modelled. On shared-drive items the drive's members are listed as inherited
  (``permissionDetails[].inherited=true``, ``inheritedFrom=<driveId>``, ``permissionType=member``)
  and the item's own shares as ``permissionType=file``, ``inherited=false``.
* **Permission ids** are the organisation's share ids (``uf000002x0001p1``, ``sd0m0``) so
  ``Org.unshare`` round-trips with what the API returned; the owner permission id is the owner's
  numeric ``permissionId``.
* **Default fields** when ``fields`` is absent (Drive returns a per-method subset; Directory the
  whole resource): see :data:`DEFAULT_FIELDS`. ``permissions`` defaults to ``kind,id,type,role``
  (documented: "Permission kind, ID, type, and role are always returned").
* **Page sizes.** Drive values above the maximum are coerced (documented "values above 1000 will
  be coerced to 1000"); Directory ``maxResults`` above a discovery ``maximum`` gives 400 (users 500,
  roles 100, roleAssignments 200) and is clamped where the discovery has no maximum (groups and
  members, 200). ``files.list`` defaults to 100, ``drives.list`` to 10, ``permissions.list`` to
  everything on My Drive items and 100 on shared-drive items (as documented).
* **Changes.** A page token encodes ``(scope, change seq)``; scope is the subject (user) or the
  shared drive (``driveId``). A user scope sees changes to files the user owns or holds a direct
  user/group grant on; a drive scope sees changes to that drive's files. Every log entry is one
  change (entries for the same file are not collapsed).
* **Members.** External (non-domain) members are ``type=USER``, ``status=ACTIVE`` with a stable
  numeric ``id`` (the real API returns an id for members with a Google account).
* Quota units: Drive publishes per-minute limits in "quota units" but no per-method costs, so
  every API call costs 1 unit; batch envelopes and token grants cost 0.

IDs are arithmetic on the organisation's indices (user id = 10**20 + seed part + index, files and
drives use the organisation's ids) and page tokens encode cursors, so a 100k-user tenant is served
page by page without building any tenant-wide list.

Layout: :mod:`.discovery` (documents, route table), :mod:`.fields` (the ``fields=`` grammar),
:mod:`.errors` (Google's error shapes), :mod:`.common` (request context, ids, page tokens) and one
mixin per part of the service, :mod:`.auth` (``/token``), :mod:`.drive`, :mod:`.directory`, :mod:`.reports` and
:mod:`.batch`, assembled here into :class:`GoogleStandIn`, which holds the state and dispatches.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

from cryptography.hazmat.primitives.asymmetric import rsa

from sandbox.google.auth import DEFAULT_GRANTED_SCOPES, JWT_BEARER, SCOPE, TOKEN_AUDIENCES, AuthMixin
from sandbox.google.batch import DIRECTORY_BATCH_LIMIT, DRIVE_BATCH_LIMIT, BatchMixin
from sandbox.google.common import Pages, _b64d, _Ctx, _digest, _Token
from sandbox.google.directory import DirectoryMixin
from sandbox.google.discovery import _Method, discovery, route
from sandbox.google.drive import FOLDER_MIME, DriveMixin, parse_q
from sandbox.google.reports import ReportsMixin
from sandbox.google.errors import ApiError, _auth_error, _insufficient_scopes, google_error
from sandbox.google.fields import (
    ALL,
    DEFAULT_FIELDS,
    FieldsError,
    _dumps,
    _validate_fields,
    apply_fields,
    parse_fields,
)
from sandbox.org import Org
from sandbox.server import Request, Response, SandboxServer, StandIn

__all__ = [
    "ALL", "DEFAULT_FIELDS", "DEFAULT_GRANTED_SCOPES", "DIRECTORY_BATCH_LIMIT", "DRIVE_BATCH_LIMIT", "FOLDER_MIME",
    "JWT_BEARER", "SCOPE", "TOKEN_AUDIENCES", "ApiError", "FieldsError", "GoogleStandIn", "apply_fields",
    "discovery", "google_error", "parse_fields", "parse_q", "route", "start",
]


class GoogleStandIn(AuthMixin, DriveMixin, DirectoryMixin, ReportsMixin, BatchMixin, Pages, StandIn):
    """Google Drive v3 + Admin SDK Directory v1 + OAuth2 token endpoint for one organisation.

    Options: ``granted_scopes`` (the domain-wide delegation's scopes, full URLs or short names;
    default :data:`DEFAULT_GRANTED_SCOPES`), ``token_ttl_s`` (server-side access-token lifetime,
    default 3600), ``expires_in`` (what the token response says, default 3600),
    ``throttle_style`` (``"429"`` rateLimitExceeded or ``"403"`` userRateLimitExceeded),
    ``expired_shares`` (``"hide"`` as Google does, or ``"show"``), ``suspended_subjects``
    (``"allow"`` or ``"refuse"`` delegated tokens for suspended people), ``service_account_email``,
    ``drive_batch_limit``, ``directory_batch_limit``, ``seed`` (fault randomness).
    """

    name = "google"

    def __init__(self, org: Org, *, seed: int = 0, granted_scopes: Iterable[str] | None = None,
                 token_ttl_s: float = 3600.0, expires_in: int = 3600, throttle_style: str = "429",
                 expired_shares: str = "hide", suspended_subjects: str = "allow", service_account_email: str | None = None,
                 drive_batch_limit: int = DRIVE_BATCH_LIMIT, directory_batch_limit: int = DIRECTORY_BATCH_LIMIT):
        super().__init__(org, seed=seed)
        if throttle_style not in ("429", "403"):
            raise ValueError("throttle_style must be '429' or '403'")
        if expired_shares not in ("hide", "show"):
            raise ValueError("expired_shares must be 'hide' or 'show'")
        if suspended_subjects not in ("allow", "refuse"):
            raise ValueError("suspended_subjects must be 'allow' or 'refuse'")
        self.suspended_subjects = suspended_subjects
        self.granted_scopes = frozenset(
            s if s.startswith(("https://", "openid")) else SCOPE + s for s in (granted_scopes or DEFAULT_GRANTED_SCOPES)
        )
        self.token_ttl_s = float(token_ttl_s)
        self.expires_in = int(expires_in)
        self.throttle_style = throttle_style
        self.expired_shares = expired_shares
        self.drive_batch_limit = drive_batch_limit
        self.directory_batch_limit = directory_batch_limit
        self.project_id = f"shoseki-sandbox-{org.seed}"
        self.service_account_email = service_account_email or f"collector@{self.project_id}.iam.gserviceaccount.com"
        self.customer_id = "C0" + base64.b32encode(_digest(org.seed, "customer", size=5)).decode().lower()[:7]
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._public = self._key.public_key()
        self._kid = secrets.token_hex(20)
        self._tokens: dict[str, _Token] = {}
        self._token_lock = threading.Lock()
        self.grants: deque[dict[str, Any]] = deque(maxlen=10_000)   # every token granted: sub, scopes, iss
        self._id_base = 10 ** 20 + (org.seed % 100_000) * 10 ** 8
        self._ext_base = 10 ** 20 + 5 * 10 ** 19 + (org.seed % 100_000) * 10 ** 8
        self._pid_base = 10 ** 18 + (org.seed % 1000) * 10 ** 9
        self._small_group_sizes: dict[str, int] = {}
        self._admin_cache: tuple[int, tuple[tuple[str, int], ...]] | None = None
        self._user_cache: dict[tuple[int, int], dict[str, Any]] = {}
        self._user_bytes: dict[tuple[int, int, str, str], bytes] = {}
        self._groups = list(org.groups())
        self._group_by_email = {g.email.lower(): g for g in self._groups}
        self._group_by_id = {self.group_id(g): g for g in self._groups}
        self._mask_cache: dict[tuple[str, str], Any] = {}
        self._impl: dict[str, Callable[[_Ctx], dict[str, Any]]] = {
            "drive.files.list": self._files_list,
            "drive.files.get": self._files_get,
            "drive.permissions.list": self._permissions_list,
            "drive.permissions.get": self._permissions_get,
            "drive.drives.list": self._drives_list,
            "drive.drives.get": self._drives_get,
            "drive.changes.getStartPageToken": self._changes_start,
            "drive.changes.list": self._changes_list,
            "directory.users.list": self._users_list,
            "directory.users.get": self._users_get,
            "directory.groups.list": self._groups_list,
            "directory.groups.get": self._groups_get,
            "directory.members.list": self._members_list,
            "directory.roles.list": self._roles_list,
            "directory.roleAssignments.list": self._role_assignments_list,
            "directory.tokens.list": self._tokens_list,
            "reports.activities.list": self._activities_list,
        }

    # -- StandIn overrides ------------------------------------------------------------------------
    def endpoint(self, req: Request) -> str:
        cached = getattr(req, "_endpoint", None)
        if cached is not None:
            return cached
        path = req.path
        if path == "/token":
            name = "oauth2.token"
        elif path in ("/batch/drive/v3", "/batch", "/batch/admin/directory_v1"):
            name = "batch"
        else:
            found = route(req.method, path)
            req._route = found  # type: ignore[attr-defined]
            name = found[0].endpoint if found else "unknown"
        req._endpoint = name  # type: ignore[attr-defined]
        return name

    def units(self, req: Request, endpoint: str) -> float:
        return 0.0 if endpoint in ("batch", "oauth2.token") else 1.0

    def principal(self, req: Request) -> str:
        quota_user = req.arg("quotaUser")
        if quota_user:
            return quota_user
        if req.path == "/token":
            try:
                assertion = parse_qs(req.body.decode())["assertion"][-1]
                claims = json.loads(_b64d(assertion.split(".")[1]))
                return claims.get("sub") or claims.get("iss") or ""
            except (KeyError, IndexError, ValueError, TypeError, AttributeError):
                return ""
        tok = self._tokens.get(self._bearer(req) or "")
        return tok.email if tok else ""

    def throttle_response(self, req: Request, endpoint: str, retry_after: float) -> Response:
        headers = {"Retry-After": str(max(1, round(retry_after)))}
        if self.throttle_style == "403":
            return google_error(403, "User Rate Limit Exceeded", "userRateLimitExceeded", domain="usageLimits", headers=headers)
        return google_error(429, "Rate Limit Exceeded", "rateLimitExceeded", domain="usageLimits", headers=headers)

    def error_response(self, req: Request, endpoint: str, status: int) -> Response:
        if status == 401:
            return _auth_error()
        if status == 503:
            return google_error(503, "The service is currently unavailable.", "backendError", status_text="UNAVAILABLE")
        if status >= 500:
            return google_error(status, "Internal Error", "backendError", status_text="INTERNAL")
        return google_error(status, HTTPStatus(status).phrase, "badRequest")

    def handle(self, req: Request) -> Response | str:
        endpoint = self.endpoint(req)
        if endpoint == "oauth2.token":
            return self._token_endpoint(req)
        if endpoint == "batch":
            return self._batch(req)
        found = getattr(req, "_route", None)
        if found is None:
            return google_error(404, "Not Found", "notFound")
        method, path_params = found
        tok = self._bearer(req)
        if tok is None:
            return _auth_error(missing=True)
        token = self._tokens.get(tok)
        if token is None or token.expires <= time.monotonic():
            return _auth_error()
        if method.scopes and not (method.scopes & token.scopes):
            return _insufficient_scopes(method)
        impl = self._impl.get(method.endpoint)
        if impl is None:
            return google_error(501, f"{method.endpoint} is not served by the shoseki sandbox", "notImplemented")
        try:
            mask = self._mask(method, req.arg("fields"))
            caller = self.org.person(token.subject) if token.subject is not None else None
            body = impl(_Ctx(req, method, path_params, token, caller, mask, req.arg("fields") or ""))
        except ApiError as exc:
            return exc.response
        if mask is not ALL:
            body = apply_fields(body, mask)
        return Response(200, _dumps(body), {"Content-Type": "application/json; charset=UTF-8"})

    def _mask(self, method: _Method, fields: str | None) -> Any:
        text = fields if fields is not None else DEFAULT_FIELDS.get(method.endpoint)
        if text is None:
            return ALL
        key = (method.endpoint, text)
        cached = self._mask_cache.get(key)
        if cached is not None:
            if isinstance(cached, ApiError):
                raise cached
            return cached
        try:
            mask = parse_fields(text)
            schemas = discovery(method.doc)["schemas"]
            bad = _validate_fields(mask, schemas.get(method.response) if method.response else None, schemas)
            if bad:
                raise FieldsError(bad)
        except FieldsError as exc:
            err = ApiError(google_error(400, f"Invalid field selection {exc}", "invalidParameter", location="fields"))
            if len(self._mask_cache) < 4096:
                self._mask_cache[key] = err
            raise err from None
        if len(self._mask_cache) < 4096:
            self._mask_cache[key] = mask
        return mask


def start(org: Org, **options: Any) -> tuple[SandboxServer, GoogleStandIn]:
    """Serve ``org`` on 127.0.0.1 (a free port); return the running server and the stand-in."""
    host = options.pop("host", "127.0.0.1")
    port = options.pop("port", 0)
    standin = GoogleStandIn(org, **options)
    server = SandboxServer(standin, host=host, port=port).start()
    return server, standin

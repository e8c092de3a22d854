"""What the Microsoft stand-in's parts share: constants, wire helpers, errors, ids, directory
lookups, query helpers ($select/$top/$skiptoken/$filter/$expand), JSON responses and the routing
table's types. :class:`_Common` is mixed into :class:`sandbox.microsoft.MicrosoftStandIn`."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from sandbox.org import Guest, Person
from sandbox.server import Request, Response

# -- constants ------------------------------------------------------------------------------------

NAMESPACE = uuid.UUID("6f1c2d3e-8a4b-5c6d-9e0f-5ba7d5e0c0de")  # fixed: ids are stable across runs
GRAPH_SCOPE = "https://graph.microsoft.com/.default"
GRAPH_APP_ID = "00000003-0000-0000-c000-000000000000"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEFAULT_APP_ROLES = (
    "User.Read.All", "GroupMember.Read.All", "RoleManagement.Read.Directory",
    "AuditLog.Read.All", "Sites.Read.All", "Files.Read.All",
)
BATCH_MAX = 20
MAX_TOP = 999

# Built-in Entra roles (for built-in roles the definition id equals the template id).
GLOBAL_ADMIN = "62e90394-69f5-4237-9190-012177145e10"
USER_ADMIN = "fe930be7-5e62-47db-91af-98c3a49a38b1"
ROLE_DEFINITIONS = (
    (GLOBAL_ADMIN, "Global Administrator", "Can manage all aspects of Microsoft Entra ID and Microsoft services that use Microsoft Entra identities.", ["microsoft.directory/allEntities/allProperties/allTasks"]),
    (USER_ADMIN, "User Administrator", "Can manage all aspects of users and groups, including resetting passwords for limited admins.", ["microsoft.directory/users/allProperties/allTasks", "microsoft.directory/groups/allProperties/allTasks"]),
    ("f28a1f50-f6e7-4571-818b-6a12f2af6b6c", "SharePoint Administrator", "Can manage all aspects of the SharePoint service.", ["microsoft.office365.sharePoint/allEntities/allTasks"]),
    ("e8611ab8-c189-46e8-94e1-60213ab1f814", "Privileged Role Administrator", "Can manage role assignments in Microsoft Entra ID, and all aspects of Privileged Identity Management.", ["microsoft.directory/roleAssignments/allProperties/allTasks"]),
    ("f2ef992c-3afb-46b9-b7cf-a126ee74c451", "Global Reader", "Can read everything that a Global Administrator can, but not update anything.", ["microsoft.directory/allEntities/allProperties/read"]),
    ("5d6b6bb7-de71-4623-b4af-96380a352509", "Security Reader", "Can read security information and reports in Microsoft Entra ID and Office 365.", ["microsoft.directory/auditLogs/allProperties/read"]),
)

# Which application permissions satisfy which endpoint family (least privileged first).
PERMS_USERS = ("User.Read.All", "User.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All")
PERMS_GROUPS = ("GroupMember.Read.All", "Group.Read.All", "Group.ReadWrite.All", "Directory.Read.All", "Directory.ReadWrite.All")
PERMS_ROLES = ("RoleManagement.Read.Directory", "RoleManagement.Read.All", "RoleManagement.ReadWrite.Directory", "Directory.Read.All")
PERMS_ELIGIBILITY = ("RoleEligibilitySchedule.Read.Directory", "RoleManagement.Read.Directory", "RoleManagement.Read.All", "RoleEligibilitySchedule.ReadWrite.Directory", "RoleManagement.ReadWrite.Directory")
PERMS_AUDIT = ("AuditLog.Read.All",)
PERMS_SITES = ("Sites.Read.All", "Sites.ReadWrite.All", "Sites.Manage.All", "Sites.FullControl.All")
PERMS_FILES = ("Files.Read.All", "Files.ReadWrite.All") + PERMS_SITES

USER_DEFAULT_PROPS = ("businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
                      "officeLocation", "preferredLanguage", "surname", "userPrincipalName", "id")
USER_PROPS = frozenset(USER_DEFAULT_PROPS + (
    "accountEnabled", "userType", "createdDateTime", "externalUserState", "externalUserStateChangeDateTime",
    "creationType", "department", "companyName", "employeeType", "employeeHireDate", "usageLocation",
    "otherMails", "onPremisesSyncEnabled", "signInActivity", "mailNickname", "identities",
))
GROUP_PROPS = frozenset((
    "id", "displayName", "description", "mail", "mailEnabled", "mailNickname", "securityEnabled",
    "groupTypes", "createdDateTime", "visibility", "renewedDateTime", "securityIdentifier",
    "membershipRule", "classification", "members", "proxyAddresses",
))
ROLE_MAP = {"owner": "owner", "organizer": "owner", "fileOrganizer": "write", "writer": "write",
            "commenter": "read", "reader": "read"}
KIND_CODES = {"user": 1, "guest": 2, "group": 3, "site": 4, "web": 5, "psite": 6, "pweb": 7, "perm": 8, "req": 9}
KIND_NAMES = {v: k for k, v in KIND_CODES.items()}
RESYNC_MESSAGE = ("Resync required. Replace any local items with the server's version (including deletes) if "
                  "you're sure that the service was up to date with your local changes when you last sync'd. "
                  "Upload any local changes that the server doesn't know about.")


# -- small helpers ----------------------------------------------------------------------------------


def gtime(t: datetime | None) -> str | None:
    """Graph's timestamp format (UTC, seconds, ``Z``)."""
    if t is None:
        return None
    if t.utcoffset():
        t = t.astimezone(UTC)
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:{t.second:02d}Z"


def _b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _b64u_dec(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _enc_token(obj: dict[str, Any]) -> str:
    return _b64u(json.dumps(obj, separators=(",", ":")).encode())


def _dec_token(text: str) -> dict[str, Any] | None:
    try:
        obj = json.loads(_b64u_dec(text))
    except (ValueError, UnicodeDecodeError):
        return None
    return obj if isinstance(obj, dict) else None


def make_session(ca_file: str | Path) -> Any:
    """A ``requests.Session`` that trusts only the sandbox CA and ignores ``REQUESTS_CA_BUNDLE``.

    ``trust_env=False`` matters: with it left on, requests lets ``REQUESTS_CA_BUNDLE`` /
    ``CURL_CA_BUNDLE`` override ``Session.verify`` (apis.md Part 2 (b)).
    """
    import requests

    s = requests.Session()
    s.verify = str(ca_file)
    s.trust_env = False
    return s


class GraphError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None,
                 inner: dict[str, Any] | None = None):
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}
        self.inner = inner or {}


class TokenError(Exception):
    def __init__(self, status: int, error: str, aadsts: int, description: str):
        super().__init__(f"AADSTS{aadsts}: {description}")
        self.status, self.error, self.aadsts, self.description = status, error, aadsts, description


# -- routing table ----------------------------------------------------------------------------------


@dataclass
class _Route:
    method: str
    pattern: re.Pattern[str]
    name: str
    fn: Callable[..., Response]
    login: bool = False


@dataclass
class _Match:
    route: _Route | None
    params: dict[str, str] = field(default_factory=dict)
    allowed: tuple[str, ...] = ()


class _Common:
    """Ids, lookups, query helpers and responses (methods of :class:`MicrosoftStandIn`)."""

    # -- ids ---------------------------------------------------------------------------------------
    def guid(self, kind: str, index: int) -> str:
        h = hashlib.sha1(NAMESPACE.bytes + f"{self.org.seed}:{kind}:{index}".encode()).hexdigest()
        # uuid5 layout (version 5, RFC 4122 variant); the last 12 hex digits carry kind and index
        return (f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{(int(h[16], 16) & 0x3 | 0x8):x}{h[17:20]}-"
                f"{KIND_CODES[kind]:02x}{index:010x}")

    def parse_guid(self, text: str) -> tuple[str, int] | None:
        try:
            u = uuid.UUID(text)
        except (ValueError, AttributeError, TypeError):
            return None
        kind = KIND_NAMES.get(int(u.hex[20:22], 16))
        index = int(u.hex[22:], 16)
        if kind is None or self.guid(kind, index) != str(u):
            return None
        return kind, index

    def user_id(self, p: Person) -> str:
        return self.guid("user", p.index)

    def guest_id(self, g: Guest) -> str:
        return self.guid("guest", g.index)

    def site_id(self, kind: str, index: int) -> str:
        if kind == "sp":
            return f"{self.sp_host},{self.guid('site', index)},{self.guid('web', index)}"
        return f"{self.my_host},{self.guid('psite', index)},{self.guid('pweb', index)}"

    def drive_id(self, kind: str, index: int) -> str:
        a, b = ("site", "web") if kind == "sp" else ("psite", "pweb")
        return "b!" + _b64u(uuid.UUID(self.guid(a, index)).bytes + uuid.UUID(self.guid(b, index)).bytes)

    def parse_drive_id(self, text: str) -> tuple[str, int] | None:
        if not text.startswith("b!"):
            return None
        try:
            raw = _b64u_dec(text[2:])
        except ValueError:
            return None
        if len(raw) != 32:
            return None
        parsed = self.parse_guid(str(uuid.UUID(bytes=raw[:16])))
        if parsed is None or parsed[0] not in ("site", "psite"):
            return None
        kind = "sp" if parsed[0] == "site" else "od"
        if self.drive_id(kind, parsed[1]) != text or not self._drive_exists(kind, parsed[1]):
            return None
        return kind, parsed[1]

    def parse_site_id(self, text: str) -> tuple[str, int] | None:
        parts = text.split(",")
        if len(parts) != 3:
            return None
        parsed = self.parse_guid(parts[1])
        if parsed is None or parsed[0] not in ("site", "psite"):
            return None
        kind = "sp" if parsed[0] == "site" else "od"
        if self.site_id(kind, parsed[1]) != text or not self._drive_exists(kind, parsed[1]):
            return None
        return kind, parsed[1]

    def _drive_exists(self, kind: str, index: int) -> bool:
        return 0 <= index < (self.org.n_drives if kind == "sp" else self.org.n)

    @staticmethod
    def item_id(fid: str) -> str:
        return "01" + base64.b32encode(fid.ljust(20, "~").encode()).decode()

    @staticmethod
    def root_item_key(kind: str, index: int) -> str:
        return f"ROOT{'d' if kind == 'sp' else 'u'}{index:06d}"

    def parse_item_id(self, text: str) -> str | None:
        if not text.startswith("01") or len(text) != 34:
            return None
        try:
            return base64.b32decode(text[2:]).decode().rstrip("~")
        except (ValueError, UnicodeDecodeError):
            return None

    def perm_id(self, key: str) -> str:
        return str(uuid.uuid5(NAMESPACE, f"{self.org.seed}:perm:{key}"))

    # -- directory lookups -------------------------------------------------------------------------
    def guest_upn(self, g: Guest) -> str:
        return f"{g.email.replace('@', '_')}#EXT#@{self.tenant_domain}"

    def _groups(self) -> tuple[Any, ...]:
        if self._groups_cache is None:
            self._groups_cache = tuple(self.org.groups())
        return self._groups_cache

    def _group_by_email(self, email: str) -> tuple[int, Any] | None:
        for k, g in enumerate(self._groups()):
            if g.email.lower() == email.lower():
                return k, g
        return None

    def _principal_for_email(self, email: str) -> tuple[str, Any]:
        """``("user", Person) | ("guest", Guest) | ("group", (k, Group)) | ("unknown", email)``."""
        p = self.org.person_by_email(email)
        if p is not None:
            return "user", p
        g = self.org.guest_by_email(email)
        if g is not None:
            return "guest", g
        grp = self._group_by_email(email)
        if grp is not None:
            return "group", grp
        return "unknown", email

    def _resolve_user(self, uid: str) -> Person | Guest:
        parsed = self.parse_guid(uid)
        if parsed:
            kind, i = parsed
            if kind == "user" and i < self.org.n:
                return self.org.person(i)
            if kind == "guest" and i < self.org.n_guests:
                return self.org.guest(i)
        elif "@" in uid:
            if "#EXT#" in uid.upper():
                local = uid.split("#")[0]
                idx = local.rfind("_")
                g = self.org.guest_by_email(local[:idx] + "@" + local[idx + 1:]) if idx > 0 else None
                if g is not None:
                    return g
            else:
                p = self.org.person_by_email(uid)
                if p is not None:
                    return p
        raise GraphError(404, "Request_ResourceNotFound",
                         f"Resource '{uid}' does not exist or one of its queried reference-property objects are not present.")

    def _resolve_group(self, gid: str) -> tuple[int, Any]:
        parsed = self.parse_guid(gid)
        groups = self._groups()
        if parsed and parsed[0] == "group" and parsed[1] < len(groups):
            return parsed[1], groups[parsed[1]]
        raise GraphError(404, "Request_ResourceNotFound",
                         f"Resource '{gid}' does not exist or one of its queried reference-property objects are not present.")

    def _identity(self, u: Person | Guest) -> dict[str, Any]:
        if isinstance(u, Person):
            return {"id": self.user_id(u), "displayName": u.display_name, "email": u.email}
        return {"id": self.guest_id(u), "displayName": u.display_name, "email": u.email}

    def _site_user(self, u: Person | Guest, n: int) -> dict[str, Any]:
        login = u.email if isinstance(u, Person) else self.guest_upn(u).lower()
        return {"id": str(n), "displayName": u.display_name, "email": u.email,
                "loginName": f"i:0#.f|membership|{login}"}

    # -- query helpers -----------------------------------------------------------------------------
    @staticmethod
    def _select(req: Request, allowed: frozenset[str] | None, type_name: str) -> list[str] | None:
        raw = req.arg("$select")
        if not raw:
            return None
        fields = [f.strip() for f in raw.split(",") if f.strip()]
        if allowed is not None:
            for f in fields:
                if f not in allowed:
                    raise GraphError(400, "Request_BadRequest", f"Could not find a property named '{f}' on type '{type_name}'.")
        return fields

    def _top(self, req: Request, default: int, maximum: int = MAX_TOP) -> int:
        raw = req.arg("$top")
        if raw is None:
            return default
        try:
            top = int(raw)
        except ValueError:
            raise GraphError(400, "Request_BadRequest", f"Invalid value '{raw}' for $top.") from None
        if not 1 <= top <= maximum:
            raise GraphError(400, "Request_UnsupportedQuery", f"Invalid page size specified: '{top}'. Must be between 1 and {maximum} inclusive.")
        return top

    def _skip(self, req: Request) -> dict[str, Any]:
        raw = req.arg("$skiptoken")
        if raw is None:
            return {}
        tok = _dec_token(raw)
        if tok is None:
            raise GraphError(400, "Directory_ExpiredPageToken", "The specified page token value has expired and can no longer be included in your request.")
        return tok

    def _next_link(self, req: Request, path: str, **token: Any) -> str:
        query = {k: v[-1] for k, v in req.query.items() if k not in ("$skiptoken", "$deltatoken", "token")}
        query["$skiptoken"] = _enc_token(token)
        return f"{self.base_url}{path}?{urlencode(query, quote_via=quote, safe='$,/()')}"

    def _delta_state(self, req: Request) -> dict[str, Any] | None:
        raw = req.arg("$skiptoken") or req.arg("$deltatoken")
        if raw is None:
            return None
        tok = _dec_token(raw)
        if tok is None or "m" not in tok or "s" not in tok:
            raise GraphError(400, "Request_BadRequest", "Unable to read the delta token. The token is malformed.")
        if int(tok["s"]) > self.org.change_seq:
            raise GraphError(400, "Request_BadRequest", "The delta token is not valid for this tenant.")
        return tok

    def _delta_link(self, req: Request, path: str, kind: str, state: dict[str, Any]) -> str:
        return f"{self.base_url}{path}?{kind}={_enc_token(state)}"

    _CLAUSE = re.compile(r"^\s*([\w/]+)\s+(eq|ne|le|lt|ge|gt)\s+(.+?)\s*$", re.IGNORECASE)

    def _parse_filter(self, raw: str | None, allowed: set[str], resource: str) -> list[tuple[str, str, Any]]:
        if not raw:
            return []
        out = []
        for clause in re.split(r"\s+and\s+", raw.strip(), flags=re.IGNORECASE):
            m = self._CLAUSE.match(clause)
            if m is None:
                raise GraphError(400, "Request_UnsupportedQuery", f"Unsupported query filter '{clause}'.")
            prop, op, val = m.group(1), m.group(2).lower(), m.group(3)
            if prop not in allowed:
                raise GraphError(400, "Request_UnsupportedQuery",
                                 f"Unsupported or invalid query filter clause specified for property '{prop}' of resource '{resource}'.")
            if val.startswith("'") and val.endswith("'"):
                value: Any = val[1:-1].replace("''", "'")
            elif val.lower() in ("true", "false"):
                value = val.lower() == "true"
            elif val.lower() == "null":
                value = None
            elif re.match(r"^\d{4}-\d{2}-\d{2}T", val):
                try:
                    value = datetime.fromisoformat(val.replace("Z", "+00:00"))
                except ValueError:
                    raise GraphError(400, "BadRequest", f"Invalid filter clause: '{val}' is not a valid DateTimeOffset.") from None
            else:
                try:
                    value = int(val)
                except ValueError:
                    raise GraphError(400, "BadRequest", f"Invalid filter clause: syntax error at '{val}'.") from None
            out.append((prop, op, value))
        return out

    @staticmethod
    def _matches(obj: dict[str, Any], clauses: list[tuple[str, str, Any]]) -> bool:
        for prop, op, value in clauses:
            cur: Any = obj
            for part in prop.split("/"):
                cur = cur.get(part) if isinstance(cur, dict) else None
            if isinstance(value, datetime) and isinstance(cur, str):
                cur = datetime.fromisoformat(cur.replace("Z", "+00:00"))
            if isinstance(cur, str) and isinstance(value, str):
                cur, value = cur.lower(), value.lower()
            if op == "eq":
                ok = cur == value
            elif op == "ne":
                ok = cur != value
            elif cur is None or value is None:
                ok = False
            else:
                try:
                    ok = {"le": cur <= value, "lt": cur < value, "ge": cur >= value, "gt": cur > value}[op]
                except TypeError:
                    ok = False
            if not ok:
                return False
        return True

    def _expand(self, req: Request, allowed: set[str]) -> set[str]:
        raw = req.arg("$expand")
        if not raw:
            return set()
        names = {re.split(r"[(\s]", part.strip(), 1)[0] for part in raw.split(",") if part.strip()}
        for n in names:
            if n not in allowed:
                raise GraphError(400, "Request_BadRequest", f"Could not find a navigation property named '{n}'.")
        return names

    @staticmethod
    def _project(full: dict[str, Any], select: list[str] | None, default: Iterable[str],
                 keep: tuple[str, ...] = ()) -> dict[str, Any]:
        """``$select`` (the key is always returned, as Graph does); ``keep``: facets and
        annotations a delta consumer must see whatever it selected (``deleted``, ``sharedChanged``)."""
        if not select:
            return {k: full[k] for k in default if k in full}
        out = {k: full[k] for k in select if k in full}
        if "id" in full:
            out["id"] = full["id"]
        for k in keep:
            if k in full:
                out[k] = full[k]
        return out

    # -- responses ---------------------------------------------------------------------------------
    def _common_headers(self, req: Request) -> dict[str, str]:
        rid = str(uuid.uuid4())
        h = {"request-id": rid, "client-request-id": req.headers.get("client-request-id", rid),
             "Cache-Control": "no-cache", "Strict-Transport-Security": "max-age=31536000"}
        return h

    def _json(self, req: Request, obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        h = self._common_headers(req)
        h["Content-Type"] = "application/json;odata.metadata=minimal;odata.streaming=true;IEEE754Compatible=false;charset=utf-8"
        h["OData-Version"] = "4.0"
        if headers:
            h.update(headers)
        return Response(status, json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode(), h)

    def _error(self, req: Request, err: GraphError) -> Response:
        h = self._common_headers(req)
        inner = {"date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
                 "request-id": h["request-id"], "client-request-id": h["client-request-id"], **err.inner}
        h["Content-Type"] = "application/json"
        h.update(err.headers)
        body = {"error": {"code": err.code, "message": err.message, "innerError": inner}}
        return Response(err.status, json.dumps(body, separators=(",", ":")).encode(), h)

    def _context(self, what: str) -> str:
        return f"{self.graph_url}/$metadata#{what}"

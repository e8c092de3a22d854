"""The AWS client layer shared by ``aws_iam`` and ``aws_s3``.

One place for everything between a connector and AWS's wire:

* **Credentials**: a boto3 session from the standard chain (environment, shared config and
  credentials files, SSO, container and instance metadata), or from a named ``profile`` (which
  may itself be an assume-role profile: botocore then refreshes the role's credentials itself).
  ``credentials_file`` / ``config_file`` point botocore at shoseki's own files instead of
  ``~/.aws``. With ``assume_roles``, every listed role is assumed in turn from those base
  credentials, one account after the other (refreshable credentials, so a long run outlives
  the role session). Environment endpoint overrides (``AWS_ENDPOINT_URL*``) are ignored: the
  only endpoint is the configured ``endpoint_url``, so a leftover variable cannot send a
  collection elsewhere.
* **Clients**: one per (account, service, region), created under a lock (boto3 sessions are not
  thread-safe; clients are), path-style S3 when an ``endpoint_url`` is set, and, for a local
  endpoint (an IP address or ``localhost``), the S3 Control ``<account>.`` host prefix removed
  (a name under an IP address resolves nowhere).
* **Retries**: botocore's *adaptive* mode (``max_attempts``): exponential backoff with jitter
  for throttling (``Throttling``, ``ThrottlingException``, S3 ``SlowDown`` …), 5xx and dropped
  connections, plus a client-side rate limiter that slows down after a throttle. Permission
  errors are never retried.
* **Evidence**: :meth:`AwsClients.call` is the one door every request goes through. Each
  answer (documented "not configured" errors included) goes to the raw stream with its
  ``ResponseMetadata`` removed and nothing secret in it; every call is counted, every retry
  counted from botocore's ``ResponseMetadata.RetryAttempts`` (with the error codes that caused
  it), every throttle counted with the time waited, and every HTTP request counted by a
  ``before-send`` hook (``http_requests`` in run.json's notes).

Also here: the parsing of IAM policy documents (statements, principals, conditions, the level an
action list grants) that both connectors need.
"""

from __future__ import annotations

import functools
from abc import abstractmethod
import ipaddress
import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Callable, Iterable, Iterator, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import Field, field_validator

from connectors.base import (
    AuthenticationError,
    AwsRegion,
    CheckResult,
    ConfigPath,
    Connector,
    ConnectorConfig,
    ConnectorError,
    EndpointUrl,
    PermissionDenied,
    RunContext,
    SourceError,
)
from evidence.model import RawPage, utc_iso

THROTTLE_CODES = frozenset({
    "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException", "TooManyRequestsException",
    "RequestLimitExceeded", "RequestThrottled", "SlowDown", "BandwidthLimitExceeded", "PriorRequestNotComplete",
    "ProvisionedThroughputExceededException", "EC2ThrottledException", "TransactionInProgressException",
})
DENIED_CODES = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AllAccessDisabled",
                          "UnauthorizedAccess", "Forbidden"})
AUTH_CODES = frozenset({"InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException",
                        "InvalidAccessKeyId", "UnrecognizedClientException", "InvalidToken", "AuthFailure",
                        "TokenRefreshRequired", "InvalidSecurity", "MissingAuthenticationToken"})
SECRET_KEYS = frozenset({"SecretAccessKey", "SessionToken", "Password", "PrivateKey", "Base32StringSeed", "QRCodePNG"})
# the IAM action behind an operation, where it is not "<service>:<operation>"
PERMISSION = {
    ("s3", "ListBuckets"): "s3:ListAllMyBuckets",
    ("s3", "GetPublicAccessBlock"): "s3:GetBucketPublicAccessBlock",
    ("s3control", "GetPublicAccessBlock"): "s3:GetAccountPublicAccessBlock",
}
ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]+$")
ACCOUNT_RE = re.compile(r"^\d{12}$")


# -- configuration -------------------------------------------------------------------------------


class AssumeRole(ConnectorConfig):
    """One account read by assuming a role in it (``[[connector.assume_roles]]``)."""

    role_arn: str = Field(description="arn:aws:iam::<account>:role/<name>, trusting the base credentials")
    external_id: str | None = Field(None, description="the ExternalId the role's trust policy requires, if any")
    session_name: str = Field("shoseki", pattern=r"^[\w+=,.@-]{2,64}$")
    duration_s: int = Field(3600, ge=900, le=43200)

    @field_validator("role_arn")
    @classmethod
    def _arn(cls, value: str) -> str:
        if not ROLE_ARN_RE.match(value):
            raise ValueError(f"'{value}' is not an IAM role ARN (arn:aws:iam::123456789012:role/name)")
        return value

    @property
    def account_id(self) -> str:
        return self.role_arn.split(":")[4]


class AwsSettings(ConnectorConfig):
    """Keys shared by the AWS connectors."""

    profile: str | None = Field(None, description="a named profile of the shared config (default: the standard chain)")
    region: AwsRegion = Field("us-east-1", description="home region: STS, IAM and the S3 listing are called there")
    endpoint_url: EndpointUrl = Field(None, description="one endpoint for every service (moto, an S3-compatible store)")
    ca_bundle: ConfigPath | None = Field(None, description="trust exactly this CA file for TLS")
    credentials_file: ConfigPath | None = Field(None, description="shared credentials file (default ~/.aws/credentials)")
    config_file: ConfigPath | None = Field(None, description="shared config file (default ~/.aws/config)")
    assume_roles: tuple[AssumeRole, ...] = Field((), description="accounts read by assuming these roles, in turn")
    internal_accounts: tuple[str, ...] = Field(
        (), description="other account ids of the organisation (not external); the accounts read are always internal")
    max_attempts: int = Field(10, ge=1, le=30, description="attempts per request, retries included (adaptive mode)")
    timeout_s: float = Field(60.0, gt=0)


    @field_validator("internal_accounts")
    @classmethod
    def _accounts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for v in value:
            if not ACCOUNT_RE.match(v):
                raise ValueError(f"'{v}' is not a 12-digit AWS account id")
        return tuple(sorted(set(value)))


# -- one account being read ----------------------------------------------------------------------


@dataclass
class AwsAccount:
    """An account the connector reads: its id, partition, the identity used and its session key."""

    account_id: str
    partition: str
    identity: str
    label: str                 # "default credentials", "profile audit", or the role ARN
    key: str                   # session key for :meth:`AwsClients.client`

    @property
    def resource_id(self) -> str:
        return f"aws-account:{self.account_id}"

    def arn(self, service: str, resource: str, *, region: str = "", account: bool = True) -> str:
        return f"arn:{self.partition}:{service}:{region}:{self.account_id if account else ''}:{resource}"


def _jsonable(value: Any) -> Any:
    """A response as JSON-safe data: times as UTC ISO text, bytes as text, secrets removed."""
    if isinstance(value, dict):
        return {k: ("[removed]" if k in SECRET_KEYS else _jsonable(v)) for k, v in value.items() if k != "ResponseMetadata"}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return utc_iso(value if value.tzinfo else value.replace(tzinfo=timezone.utc))
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            import base64

            return {"base64": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _local_host(endpoint_url: str | None) -> str | None:
    """The endpoint's host if it is an IP address or localhost (names under it resolve nowhere)."""
    if not endpoint_url:
        return None
    host = urlsplit(endpoint_url).hostname or ""
    if host == "localhost":
        return host
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None
    return host


class AwsClients:
    """Sessions, clients and the counting, recording :meth:`call` / :meth:`pages`.

    ``customize(client)`` is called on every client created (tests register fault-injection
    hooks with it); ``sleep`` is used between credential-report polls.
    """

    def __init__(self, settings: AwsSettings, *, sleep: Callable[[float], None] = time.sleep,
                 customize: Callable[[Any], None] | None = None):
        self.settings = settings
        self.sleep = sleep
        self.customize = customize
        self._lock = threading.Lock()
        self._local = threading.local()
        self._sessions: dict[str, Any] = {}
        self._clients: dict[tuple[str, str, str], Any] = {}
        self._ctx: RunContext | None = None
        self.http_requests: Counter[str] = Counter()
        self._local_host = _local_host(settings.endpoint_url)

    # -- sessions -----------------------------------------------------------------------------------
    def bind(self, ctx: RunContext) -> None:
        """Count and record into ``ctx`` from now on (one run at a time per clients object)."""
        with self._lock:
            self._ctx = ctx
            self.http_requests = Counter()

    def _botocore_session(self) -> Any:
        import botocore.session

        st = self.settings
        bs = botocore.session.Session(profile=st.profile)
        if st.credentials_file is not None:
            bs.set_config_variable("credentials_file", str(st.credentials_file))
        if st.config_file is not None:
            bs.set_config_variable("config_file", str(st.config_file))
        bs.set_config_variable("ignore_configured_endpoint_urls", True)
        return bs

    def _config(self) -> Any:
        from botocore.config import Config

        st = self.settings
        options: dict[str, Any] = {
            # total_max_attempts counts the first attempt too (the "max_attempts" key of this dict does not)
            "retries": {"mode": "adaptive", "total_max_attempts": st.max_attempts},
            "connect_timeout": st.timeout_s, "read_timeout": st.timeout_s,
            "user_agent_appid": "shoseki", "max_pool_connections": 32,
        }
        if st.endpoint_url:
            options["s3"] = {"addressing_style": "path"}
        return Config(**options)

    def session(self, key: str) -> Any:
        """The boto3 session for ``key``: ``"base"`` or a role ARN of ``assume_roles``."""
        import boto3
        from botocore.exceptions import ProfileNotFound

        with self._lock:
            s = self._sessions.get(key)
            if s is not None:
                return s
            try:
                base = self._sessions.get("base")
                if base is None:
                    base = self._sessions["base"] = boto3.Session(botocore_session=self._botocore_session(),
                                                                  region_name=self.settings.region)
                if key == "base":
                    return base
                role = next(r for r in self.settings.assume_roles if r.role_arn == key)
                s = self._sessions[key] = self._assumed(base, role)
                return s
            except ProfileNotFound as exc:
                raise AuthenticationError(f"the AWS profile '{self.settings.profile}' is not in the shared config: {exc}") from None

    def _assumed(self, base: Any, role: AssumeRole) -> Any:
        """A session whose credentials come from ``sts:AssumeRole`` and refresh before they expire."""
        import boto3
        from botocore.credentials import AssumeRoleCredentialFetcher, DeferredRefreshableCredentials

        source = base.get_credentials()
        if source is None:
            raise AuthenticationError("no base AWS credentials to assume roles from (standard chain or profile)")
        st = self.settings
        base_bs = base._session

        def sts_client(service: str, **kwargs: Any) -> Any:
            c = base_bs.create_client(service, region_name=st.region, endpoint_url=st.endpoint_url,
                                      verify=str(st.ca_bundle) if st.ca_bundle else None, config=self._config(), **kwargs)
            c.meta.events.register("before-send", functools.partial(self._on_send, service))
            if self.customize is not None:
                self.customize(c)
            return c

        extra: dict[str, Any] = {"RoleSessionName": role.session_name, "DurationSeconds": role.duration_s}
        if role.external_id:
            extra["ExternalId"] = role.external_id
        fetcher = AssumeRoleCredentialFetcher(sts_client, source, role.role_arn, extra_args=extra)
        bs = self._botocore_session()
        bs._credentials = DeferredRefreshableCredentials(refresh_using=fetcher.fetch_credentials, method="assume-role")
        return boto3.Session(botocore_session=bs, region_name=st.region)

    # -- clients ------------------------------------------------------------------------------------
    def client(self, key: str, service: str, region: str | None = None) -> Any:
        """The client for (session ``key``, ``service``, ``region``), created once."""
        region = region or self.settings.region
        ck = (key, service, region)
        c = self._clients.get(ck)
        if c is not None:
            return c
        session = self.session(key)
        with self._lock:
            c = self._clients.get(ck)
            if c is not None:
                return c
            st = self.settings
            c = session.client(service, region_name=region, endpoint_url=st.endpoint_url,
                               verify=str(st.ca_bundle) if st.ca_bundle else None, config=self._config())
            events = c.meta.events
            events.register("before-send", functools.partial(self._on_send, service))
            events.register("needs-retry", functools.partial(self._on_needs_retry, service))
            if service == "s3control" and self._local_host:
                events.register("before-sign.s3-control", self._strip_account_prefix)
            if self.customize is not None:
                self.customize(c)
            self._clients[ck] = c
            return c

    def _strip_account_prefix(self, request: Any, **_: Any) -> None:
        """``http://123456789012.127.0.0.1:PORT`` → ``http://127.0.0.1:PORT`` (local endpoints only)."""
        parts = urlsplit(request.url)
        prefix, _, rest = (parts.hostname or "").partition(".")
        if ACCOUNT_RE.match(prefix) and rest == self._local_host:
            request.url = urlunsplit(parts._replace(netloc=parts.netloc.split(".", 1)[1]))

    # -- hooks: HTTP requests, retries, throttles ---------------------------------------------------
    def _on_send(self, service: str, request: Any = None, event_name: str = "", **_: Any) -> None:
        endpoint = f"{service}.{event_name.rsplit('.', 1)[-1]}"
        with self._lock:
            self.http_requests[endpoint] += 1
        pending = getattr(self._local, "throttled", None)
        if pending is not None:
            self._local.throttled = None
            ctx = self._ctx
            if ctx is not None:
                ctx.count_throttle(pending[0], time.monotonic() - pending[1])

    def _on_needs_retry(self, service: str, response: Any = None, attempts: int = 0, operation: Any = None,
                        caught_exception: Any = None, **_: Any) -> None:
        """Observe (never decide) a retry: remember why, and time a throttle until the next send."""
        op = getattr(operation, "name", "?")
        if caught_exception is not None:
            reason = f"connection: {type(caught_exception).__name__}"
            code, status = "", 0
        elif response is not None:
            http, parsed = response
            status = getattr(http, "status_code", 0) or 0
            code = ((parsed or {}).get("Error") or {}).get("Code", "") if isinstance(parsed, dict) else ""
            if status < 400 and not code:
                return
            reason = f"{status} {code}".strip()
        else:
            return
        reasons = getattr(self._local, "reasons", None)
        if reasons is not None:
            reasons.append(reason)
        if code in THROTTLE_CODES or status == 429:
            endpoint = f"{service}.{op}"
            if attempts < self.settings.max_attempts:
                self._local.throttled = (endpoint, time.monotonic())  # waited until the retry is sent
            elif self._ctx is not None:
                self._ctx.count_throttle(endpoint, 0.0)

    # -- the one door ---------------------------------------------------------------------------------
    def call(self, ctx: RunContext, account: AwsAccount | str, client: Any, method: str, *, where: str,
             missing: Iterable[str] = (), page: int = 0, **params: Any) -> dict[str, Any] | None:
        """Call ``client.<method>(**params)``; the answer goes to the raw stream and is counted.

        Returns the response, or None when AWS answers one of the ``missing`` error codes (the
        documented "not configured" answers, which are facts). Any other error is raised as a
        :class:`ConnectorError` naming ``where``.
        """
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

        service = client.meta.service_model.service_name
        op = client.meta.method_to_api_mapping.get(method, method)
        endpoint = f"{service}.{op}"
        acct = account.account_id if isinstance(account, AwsAccount) else account
        raw_params = {**({"account": acct} if acct else {}), "region": client.meta.region_name, **params}
        ctx.raise_if_cancelled(where)
        self._local.reasons = []
        self._local.throttled = None
        try:
            response = getattr(client, method)(**params)
        except ClientError as exc:
            answer = exc.response or {}
            error = answer.get("Error") or {}
            code, message = str(error.get("Code") or ""), str(error.get("Message") or "")
            meta = answer.get("ResponseMetadata") or {}
            status = int(meta.get("HTTPStatusCode") or 0)
            if exc.operation_name == "AssumeRole":
                raise AuthenticationError(f"cannot assume the role: {code} {message}".strip(), where=where) from None
            retries = self._count(ctx, endpoint, meta)
            ctx.raw(RawPage(endpoint, raw_params, page, _jsonable(answer), status=status or 400,
                            received=utc_iso(datetime.now(timezone.utc))))
            if code in set(missing):
                return None
            raise _connector_error(service, op, code, status, message, where, retries) from None
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise AuthenticationError(f"no usable AWS credentials ({exc}); configure the standard chain, a profile, "
                                      "or credentials_file", where=where) from None
        except BotoCoreError as exc:
            text = str(exc)
            if "AssumeRole" in text:
                raise AuthenticationError(f"cannot assume the role: {text}", where=where) from None
            raise SourceError(f"{endpoint} failed after {self.settings.max_attempts} attempt(s): {type(exc).__name__}: {text}",
                              where=where) from None
        self._count(ctx, endpoint, response.get("ResponseMetadata") or {})
        meta = response.get("ResponseMetadata") or {}
        ctx.raw(RawPage(endpoint, raw_params, page, _jsonable(response), status=int(meta.get("HTTPStatusCode") or 200),
                        received=utc_iso(datetime.now(timezone.utc))))
        return response

    def _count(self, ctx: RunContext, endpoint: str, meta: dict[str, Any]) -> int:
        ctx.count_call(endpoint)
        retries = int(meta.get("RetryAttempts") or 0)
        reasons = list(getattr(self._local, "reasons", None) or [])
        for n in range(retries):
            ctx.count_retry(endpoint, reasons[n] if n < len(reasons) else "retried by botocore")
        self._local.reasons = []
        return retries

    def pages(self, ctx: RunContext, account: AwsAccount, client: Any, method: str, *, where: str, token_in: str,
              token_out: str, more: str | None = None, **params: Any) -> Iterator[dict[str, Any]]:
        """Every page of a listing, following ``token_out`` → ``token_in`` (``more``: the "truncated" flag)."""
        token: str | None = None
        seen: set[str] = set()
        n = 0
        while True:
            p = {**params, **({token_in: token} if token else {})}
            response = self.call(ctx, account, client, method, where=where, page=n, **p)
            assert response is not None
            yield response
            token = response.get(token_out)
            truncated = bool(response.get(more)) if more else bool(token)
            if not truncated:
                return
            if not token:
                raise SourceError(f"{method}: page {n} says there is more but gives no {token_out}", where=where)
            if token in seen:
                raise SourceError(f"{method}: the {token_out} of page {n} repeats an earlier one", where=where)
            seen.add(token)
            n += 1

    # -- accounts --------------------------------------------------------------------------------------
    def accounts(self, ctx: RunContext) -> Iterator[AwsAccount]:
        """Each configured account, identified with ``sts:GetCallerIdentity``.

        With several ``assume_roles``, an account whose role cannot be assumed is reported with
        ``ctx.error`` and skipped (the run seals ``partial``); with one, or when none works, the
        error ends the run.
        """
        st = self.settings
        keys = [r.role_arn for r in st.assume_roles] or ["base"]
        identities: list[str] = []
        last: ConnectorError | None = None
        for key in keys:
            label = key if key != "base" else (f"profile {st.profile}" if st.profile else "default credentials")
            where = f"account {label}"
            try:
                sts = self.client(key, "sts")
                who = self.call(ctx, key.split(":")[4] if key != "base" else "", sts, "get_caller_identity", where=where)
            except (AuthenticationError, PermissionDenied, SourceError) as exc:
                if len(keys) == 1:
                    raise
                ctx.error(where, f"{exc} (this account is missing from the run)")
                last = exc
                continue
            assert who is not None
            arn = str(who.get("Arn") or "")
            account = AwsAccount(account_id=str(who["Account"]), partition=arn.split(":")[1] if arn.count(":") >= 5 else "aws",
                                 identity=arn, label=label, key=key)
            identities.append(arn)
            ctx.identity = "; ".join(identities)
            ctx.source(endpoint="sts.GetCallerIdentity", account=account.account_id, via=label, identity=arn)
            yield account
        if not identities and last is not None:
            raise last

    def internal(self, read: Iterable[str]) -> frozenset[str]:
        """Account ids that are not external: the accounts read plus ``internal_accounts``."""
        return frozenset(read) | frozenset(self.settings.internal_accounts)

    def note_requests(self, ctx: RunContext) -> None:
        ctx.note("http_requests", sum(self.http_requests.values()))


def _connector_error(service: str, op: str, code: str, status: int, message: str, where: str, retries: int) -> ConnectorError:
    text = f"{code or status}: {message}".strip().rstrip(":")
    if code in AUTH_CODES or status == 401:
        return AuthenticationError(f"AWS refused the credentials ({text})", where=where)
    if code in DENIED_CODES or status == 403:
        permission = PERMISSION.get((service, op), f"{'s3' if service == 's3control' else service}:{op}")
        return PermissionDenied(f"{op}: {text} (needs {permission})", where=where, permission=permission)
    if code in THROTTLE_CODES or status in (429, 500, 502, 503, 504):
        return SourceError(f"{op}: gave up after {retries} retries: {text}", where=where, status=status)
    return SourceError(f"{op}: {text}", where=where, status=status)


# -- policy documents --------------------------------------------------------------------------------

Level = Literal["admin", "editor", "viewer", "other"]
LEVEL_ORDER: dict[str, int] = {"other": 0, "viewer": 1, "editor": 2, "admin": 3}
READ_VERBS = ("Get", "List", "Describe", "Head", "View", "Lookup", "Search", "Select", "Scan", "Query", "BatchGet", "Read")
ADMINISTRATOR_ACCESS = "AdministratorAccess"
# condition keys that, compared positively with fixed values, keep a "*" principal from being anyone
ORG_KEYS = frozenset({"aws:principalorgid", "aws:principalorgpaths", "aws:principalaccount", "aws:sourceaccount",
                      "aws:sourceorgid", "aws:sourceorgpaths", "aws:sourceowner", "s3:dataaccesspointaccount",
                      "aws:resourceorgid", "aws:resourceaccount"})
SPECIFIC_KEYS = frozenset({"aws:sourceip", "aws:sourcevpc", "aws:sourcevpce", "aws:sourcearn", "aws:principalarn",
                           "aws:userid", "aws:username", "s3:dataaccesspointarn", "aws:principalservicename",
                           "sts:externalid", "aws:sourceidentity"})


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def document(value: Any) -> dict[str, Any]:
    """A policy document as a dict (botocore decodes IAM's URL-encoded JSON; S3 gives a JSON string)."""
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("%7B") or text.startswith("%7b"):
            text = unquote(text)
        try:
            parsed = json.loads(text)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def statements(doc: Any) -> list[dict[str, Any]]:
    return [s for s in as_list(document(doc).get("Statement")) if isinstance(s, dict)]


def action_kind(action: str) -> str:
    """``admin`` for ``*``, ``write`` or ``read`` by the verb (a wildcard verb is a write unless it starts read-only)."""
    if action in ("*", "*:*"):
        return "admin"
    _, _, verb = action.partition(":")
    if verb in ("*", ""):
        return "service"
    return "read" if verb.startswith(READ_VERBS) else "write"


def statement_level(s: dict[str, Any], *, admin_services: tuple[str, ...] = ("iam",), scope: str = "account") -> Level:
    """The level one Allow statement grants: admin / editor / viewer / other.

    ``scope="account"`` (identity policies): admin = ``*`` (or full control of ``admin_services``,
    IAM: it can grant itself anything) on every resource without a condition; ``NotAction`` on
    every resource is admin unless it excludes IAM. ``scope="resource"`` (a bucket policy): the
    statement is about that resource, so ``*`` or ``s3:*`` is admin of it.
    """
    if s.get("Effect") != "Allow":
        return "other"
    all_resources = scope == "resource" or "*" in as_list(s.get("Resource")) or "NotResource" in s
    unconditional = "Condition" not in s
    if "NotAction" in s:
        excluded = [str(a).lower() for a in as_list(s.get("NotAction"))]
        keeps_iam = not any(a == "*" or a.startswith(tuple(f"{svc}:" for svc in admin_services)) for a in excluded)
        return "admin" if all_resources and unconditional and keeps_iam else "editor"
    kinds = set()
    for a in as_list(s.get("Action")):
        a = str(a)
        kind = action_kind(a)
        if kind == "service":
            kind = "admin" if a.split(":", 1)[0].lower() in admin_services else "write"
        kinds.add(kind)
    if "admin" in kinds:
        return "admin" if all_resources and unconditional else "editor"
    if "write" in kinds:
        return "editor"
    if "read" in kinds:
        return "viewer"
    return "other"


def document_level(doc: Any, **kwargs: Any) -> Level:
    return max_level(statement_level(s, **kwargs) for s in statements(doc))


def max_level(levels: Iterable[str]) -> Level:
    best: str = "other"
    for lv in levels:
        if LEVEL_ORDER[lv] > LEVEL_ORDER[best]:
            best = lv
    return best  # type: ignore[return-value]


def principal_entries(value: Any) -> list[tuple[str, str]]:
    """A policy ``Principal`` as ``(type, value)`` pairs; ``"*"`` is ``("AWS", "*")``."""
    if value == "*":
        return [("AWS", "*")]
    if isinstance(value, dict):
        return [(str(k), str(v)) for k, vs in value.items() for v in as_list(vs)]
    return [("AWS", str(v)) for v in as_list(value)]


def condition_scope(condition: Any) -> tuple[str, list[str]]:
    """How a condition narrows a ``"*"`` principal: ``anyone`` / ``organization`` / ``specific``, and the keys."""
    org, specific = [], []
    if isinstance(condition, dict):
        for operator, block in condition.items():
            op = str(operator)
            if "Not" in op or op.endswith("IfExists") or not isinstance(block, dict):
                continue  # a negative or optional test does not narrow who may call
            for key, values in block.items():
                k = str(key).lower()
                vals = [str(v) for v in as_list(values)]
                if not vals or any(v in ("*", "0.0.0.0/0", "::/0") for v in vals):
                    continue
                if k in ORG_KEYS:
                    org.append(str(key))
                elif k in SPECIFIC_KEYS:
                    specific.append(str(key))
    if org:
        return "organization", sorted(org + specific)
    if specific:
        return "specific", sorted(specific)
    return "anyone", []


@dataclass(frozen=True)
class Who:
    """A policy principal in the record model's terms."""

    id: str
    kind: str
    account: str | None
    display_name: str
    external: bool | None
    raw: str


def who(ptype: str, value: str, internal: frozenset[str]) -> Who:
    """Map one policy principal: ``*`` → anyone, an account (id or ``:root``) → ``aws-account:<id>``, an
    IAM ARN → itself, a service → ``aws-service:<name>``, a canonical user → ``aws-canonical:<id>``."""
    def ext(acct: str | None) -> bool | None:
        return None if acct is None else acct not in internal

    if ptype == "AWS":
        if value == "*":
            return Who("anyone", "anyone", None, "anyone (public)", True, value)
        if ACCOUNT_RE.match(value):
            return Who(f"aws-account:{value}", "domain", value, f"AWS account {value}", ext(value), value)
        parts = value.split(":", 5)
        if len(parts) == 6 and parts[0] == "arn" and parts[2] in ("iam", "sts"):
            acct, resource = parts[4], parts[5]
            if resource == "root":
                return Who(f"aws-account:{acct}", "domain", acct, f"AWS account {acct}", ext(acct), value)
            rtype = resource.split("/", 1)[0]
            kind = {"user": "user", "role": "role", "assumed-role": "role", "group": "group",
                    "federated-user": "user"}.get(rtype, "unknown")
            return Who(value, kind, acct, resource.rsplit("/", 1)[-1], ext(acct), value)
        # a principal that was deleted shows as its unique id (AIDA…, AROA…)
        return Who(f"aws-unique-id:{value}", "unknown", None, value, None, value)
    if ptype == "Service":
        return Who(f"aws-service:{value}", "service_account", None, value, None, value)
    if ptype == "CanonicalUser":
        return Who(f"aws-canonical:{value}", "domain", None, f"canonical user {value[:12]}…", True, value)
    if ptype == "Federated":
        parts = value.split(":", 5)
        acct = parts[4] if len(parts) == 6 and parts[0] == "arn" else None
        pid = value if acct else f"aws-federated:{value}"
        return Who(pid, "unknown", acct, value.rsplit("/", 1)[-1], ext(acct), value)
    return Who(f"aws-{ptype.lower()}:{value}", "unknown", None, value, None, value)


def aws_time(value: Any) -> str | None:
    """A botocore datetime or an ISO text as the model's UTC ISO text; None for AWS's "no value" markers."""
    if value is None or value in ("", "N/A", "no_information", "not_supported"):
        return None
    if isinstance(value, datetime):
        return utc_iso(value if value.tzinfo else value.replace(tzinfo=timezone.utc))
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    return utc_iso(parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc))


Probe = Callable[[AwsAccount], str]


class AwsConnector(Connector):
    """What the AWS connectors share: their client factory and the shape of ``check()`` — the
    credentials of each account, then each of the connector's probes per account."""

    @classmethod
    def make_clients(cls, config: AwsSettings) -> AwsClients:  # type: ignore[override]
        return AwsClients(config)

    def check(self) -> CheckResult:
        result = CheckResult()
        try:
            clients = self.ensure_clients()
        except Exception as exc:  # check never raises
            return result.add("AWS clients", False, f"{type(exc).__name__}: {exc}")
        ctx = RunContext.for_check()
        clients.bind(ctx)
        for name, ok, detail in check_items(clients, ctx, self.check_probes(clients, ctx)):
            result.add(name, ok, detail)
        return result

    @abstractmethod
    def check_probes(self, clients: AwsClients, ctx: RunContext) -> list[tuple[str, Probe]]:
        """``(what it checks, probe)``: one cheap read per stream, run for each account."""

    def each_account(self, ctx: RunContext, clients: AwsClients,
                     read: Callable[[AwsAccount, frozenset[str]], Iterator[Any]]) -> Iterator[Any]:
        """``read(account, internal)`` for every account in turn; ``internal`` holds the ids of the
        organisation's own accounts known so far. With several accounts (``assume_roles``), one
        that is refused is an error of the run (it seals partial, naming the account), not its end."""
        internal = clients.internal(r.account_id for r in self.config.assume_roles)
        several = len(self.config.assume_roles) > 1
        for account in clients.accounts(ctx):
            internal = internal | {account.account_id}
            try:
                yield from read(account, internal)
            except (PermissionDenied, SourceError) as exc:
                if not several:
                    raise
                ctx.error(f"account {account.account_id}", f"{exc} (the rest of this account is missing from the run)")


def check_items(clients: AwsClients, ctx: RunContext, probes: list[tuple[str, Probe]]) -> list[tuple[str, bool, str]]:
    """Run ``check`` probes per account: ``[(name, ok, detail)]``; never raises."""
    out: list[tuple[str, bool, str]] = []
    try:
        accounts = list(clients.accounts(ctx))
    except ConnectorError as exc:
        return [("credentials", False, _explain(exc, clients.settings))]
    except Exception as exc:  # check never raises
        return [("credentials", False, f"{type(exc).__name__}: {exc}")]
    for e in ctx.errors:
        out.append((e.where, False, e.message))
    for account in accounts:
        out.append((f"credentials ({account.label})", True, f"{account.identity} in account {account.account_id}"))
        for name, probe in probes:
            try:
                detail = probe(account)
            except ConnectorError as exc:
                out.append((f"{name} [{account.account_id}]", False, _explain(exc, clients.settings)))
            except Exception as exc:  # check never raises
                out.append((f"{name} [{account.account_id}]", False, f"{type(exc).__name__}: {exc}"))
            else:
                out.append((f"{name} [{account.account_id}]", True, detail))
    return out


def _explain(exc: ConnectorError, settings: AwsSettings) -> str:
    if isinstance(exc, PermissionDenied):
        return (f"{exc} — attach the AWS managed policy SecurityAudit (or a policy allowing "
                f"{exc.permission or 'this read'}) to the identity shoseki uses")
    if isinstance(exc, AuthenticationError):
        how = f"profile '{settings.profile}'" if settings.profile else "the standard credential chain"
        roles = f"; then assume {', '.join(r.role_arn for r in settings.assume_roles)}" if settings.assume_roles else ""
        return f"{exc} (credentials from {how}{roles})"
    return str(exc)

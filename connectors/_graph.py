"""The Microsoft Graph client layer shared by ``entra_id`` and ``m365_files``.

* **Auth**: msal ``ConfidentialClientApplication`` with client credentials — a client secret (by
  file or environment variable, never inline) or a certificate (PEM certificate + private key
  files; msal signs a ``client_assertion``). ``instance_discovery=False`` so a configured
  authority is used as given, and msal's HTTP goes through our own session.
* **TLS**: every session trusts exactly ``ca_bundle`` when one is configured (the sandbox's
  self-signed CA; a corporate proxy's CA), with ``trust_env = False`` — otherwise requests lets
  ``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE`` silently override it (reference/apis.md Part 2 b).
* **Sessions**: one ``requests.Session`` per thread.
* **Retries**: 429, 503, 504, 500, 502 and dropped connections, with exponential backoff and full
  jitter, never sooner than ``Retry-After``; inside ``$batch`` each inner request that was
  throttled or failed that way is re-batched after its own ``Retry-After``. A 401 gets one fresh
  token. Permission (403) and bad-request errors are never retried.
* **Resource-unit budget**: each call spends its documented cost (reference/apis.md §1.3/§1.4)
  from a per-app budget before it is sent, so the collector does not provoke throttling; a 429
  holds the budget for ``Retry-After``.
* **Evidence**: every page to the raw stream, every call (with the units the service reports in
  ``x-ms-resource-unit``), retry and throttle counted in run.json.
"""

from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Iterator
from urllib.parse import urlsplit

import requests
from pydantic import Field, field_validator, model_validator

from connectors.base import (
    AuthenticationError,
    ConfigPath,
    ConnectorConfig,
    PermissionDenied,
    RunContext,
    SourceError,
    read_secret,
)
from connectors._quota import QuotaBudget
from evidence.model import RawPage, utc_iso

GRAPH = "https://graph.microsoft.com"
AUTHORITY = "https://login.microsoftonline.com"
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
BATCH_MAX = 20
USER_AGENT = "NONISV|shoseki|shoseki/{version}"


class GraphSettings(ConnectorConfig):
    """Keys shared by the Microsoft connectors."""

    tenant_id: str = Field(description="the directory (tenant) id or a verified domain")
    client_id: str
    client_secret_file: ConfigPath | None = None
    client_secret_env: str | None = None
    certificate_file: ConfigPath | None = Field(None, description="the app's certificate (PEM)")
    private_key_file: ConfigPath | None = Field(None, description="its private key (PEM), readable only by shoseki")
    authority: str = Field(AUTHORITY, description="the identity platform host; the tenant is added to it")
    graph_url: str = Field(GRAPH, description="the Graph host (a trailing /v1.0 is accepted)")
    scope: str = Field(f"{GRAPH}/.default", description="the token scope: Graph's, whatever host serves it")
    ca_bundle: ConfigPath | None = Field(None, description="trust exactly this CA file (default: the system's)")
    workers: int = Field(8, ge=1, le=32)
    max_retries: int = Field(8, ge=0, le=20)
    timeout_s: float = Field(60.0, gt=0)

    @field_validator("authority", "graph_url")
    @classmethod
    def _https(cls, value: str) -> str:
        if not value.startswith("https://"):
            raise ValueError("must be an https:// URL (msal refuses anything else)")
        return value.rstrip("/").removesuffix("/v1.0")

    @model_validator(mode="after")
    def _one_credential(self) -> "GraphSettings":
        secret = self.client_secret_file is not None or self.client_secret_env is not None
        cert = self.certificate_file is not None or self.private_key_file is not None
        if secret and cert:
            raise ValueError("give either a client secret (client_secret_file / client_secret_env) or a certificate "
                             "(certificate_file + private_key_file), not both")
        if not secret and not cert:
            raise ValueError("no credential: set client_secret_file or client_secret_env, or certificate_file + private_key_file")
        if cert and (self.certificate_file is None or self.private_key_file is None):
            raise ValueError("a certificate credential needs both certificate_file and private_key_file")
        if self.client_secret_file is not None and self.client_secret_env is not None:
            raise ValueError("set client_secret_file or client_secret_env, not both")
        return self


@dataclass(frozen=True)
class GraphFailure:
    """A Graph error answer, for messages and decisions."""

    status: int
    code: str
    message: str
    retry_after: float | None

    @property
    def retryable(self) -> bool:
        return self.status in RETRY_STATUS

    def describe(self) -> str:
        return f"{self.status} {self.code}: {self.message}".strip()


def graph_failure(status: int, body: Any, headers: Any) -> GraphFailure:
    code, message = "", ""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            code, message = str(err.get("code") or ""), str(err.get("message") or "")
        elif isinstance(err, str):  # an identity-platform answer
            code, message = err, str(body.get("error_description") or "")
    retry_after = None
    value = None
    if headers is not None:
        value = headers.get("Retry-After") or headers.get("retry-after")
    try:
        retry_after = float(value) if value is not None else None
    except (TypeError, ValueError):
        retry_after = None
    return GraphFailure(status, code, message, retry_after)


class DeltaReset(SourceError):
    """410 Gone on a delta link: the token expired or the service wants a full resync."""


class GraphClients:
    """Token, per-thread sessions, and the retrying, costed, counted ``get`` / ``pages`` / ``batch``."""

    def __init__(self, settings: GraphSettings, *, ru_per_minute: float, backoff_base_s: float = 1.0,
                 backoff_cap_s: float = 60.0, sleep: Callable[[float], None] = time.sleep, version: str = "0"):
        self.settings = settings
        self.base = settings.graph_url + "/v1.0"
        self.sleep = sleep
        self.backoff_base_s, self.backoff_cap_s = backoff_base_s, backoff_cap_s
        self.budget = QuotaBudget(ru_per_minute, ru_per_minute, sleep=sleep)
        self.user_agent = USER_AGENT.format(version=version)
        self._local = threading.local()
        self._token_lock = threading.Lock()
        self._app: Any = None
        self._token: tuple[str, float] | None = None

    # -- auth ---------------------------------------------------------------------------------------
    def session(self) -> requests.Session:
        s = getattr(self._local, "session", None)
        if s is None:
            s = self._local.session = requests.Session()
            s.trust_env = False
            if self.settings.ca_bundle is not None:
                s.verify = str(self.settings.ca_bundle)
            s.headers["User-Agent"] = self.user_agent
        return s

    def _credential(self) -> Any:
        st = self.settings
        if st.certificate_file is not None:
            try:
                cert = st.certificate_file.read_text(encoding="utf-8")
                key = st.private_key_file.read_text(encoding="utf-8")  # type: ignore[union-attr]
            except OSError as exc:
                raise AuthenticationError(f"cannot read the certificate credential: {exc.filename}: {exc.strerror}") from None
            from cryptography import x509
            from cryptography.hazmat.primitives import hashes

            try:
                thumbprint = x509.load_pem_x509_certificate(cert.encode()).fingerprint(hashes.SHA1()).hex()
            except ValueError as exc:
                raise AuthenticationError(f"{st.certificate_file} is not a PEM certificate: {exc}") from None
            return {"private_key": key, "thumbprint": thumbprint}
        return read_secret(file=st.client_secret_file, env=st.client_secret_env, what="client secret")

    def app(self) -> Any:
        if self._app is None:
            import msal

            st = self.settings
            session = requests.Session()
            session.trust_env = False
            if st.ca_bundle is not None:
                session.verify = str(st.ca_bundle)
            try:
                self._app = msal.ConfidentialClientApplication(
                    st.client_id, authority=f"{st.authority}/{st.tenant_id}", client_credential=self._credential(),
                    http_client=session, instance_discovery=False, timeout=st.timeout_s,
                )
            except ValueError as exc:
                raise AuthenticationError(f"the app credential cannot be used: {exc}") from None
            except requests.RequestException as exc:
                raise AuthenticationError(f"cannot reach the authority {st.authority}: {exc}") from None
        return self._app

    def token(self, *, fresh: bool = False) -> str:
        with self._token_lock:
            if not fresh and self._token and self._token[1] > time.monotonic() + 60:
                return self._token[0]
            try:
                app = self.app()
                if fresh:  # the service refused a cached token: drop it
                    for t in list(app.token_cache.search(app.token_cache.CredentialType.ACCESS_TOKEN)):
                        app.token_cache.remove_at(t)
                result = app.acquire_token_for_client([self.settings.scope])
            except requests.RequestException as exc:
                raise AuthenticationError(f"cannot reach the token endpoint: {exc}") from None
            if "access_token" not in result:
                codes = result.get("error_codes") or []
                hint = {7000215: "the client secret is wrong or expired", 700016: "the client id is not in this tenant",
                        700027: "the certificate is not the one registered for the app",
                        90002: "the tenant id is wrong"}.get(codes[0] if codes else 0, "")
                raise AuthenticationError(
                    f"Entra ID refused the app credential: {result.get('error')}: "
                    f"{(result.get('error_description') or '').splitlines()[0]}" + (f" ({hint})" if hint else ""))
            self._token = (result["access_token"], time.monotonic() + float(result.get("expires_in", 3599)))
            return self._token[0]

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        delay = min(self.backoff_cap_s, self.backoff_base_s * (2 ** attempt)) * (0.5 + random.random() / 2)
        return max(delay, retry_after or 0.0)

    def url(self, path: str) -> str:
        """A Graph URL; an absolute one (a nextLink / deltaLink) must be on the configured Graph
        host — the bearer token is never sent anywhere else."""
        if path.startswith(("https://", "http://")):
            if not path.startswith(self.settings.graph_url + "/"):
                raise SourceError(f"refusing to follow a link off the Graph host {self.settings.graph_url}: {_strip(path)}",
                                  where="Graph paging")
            return path
        return self.base + (path if path.startswith("/") else "/" + path)

    # -- one request ------------------------------------------------------------------------------
    def get(self, ctx: RunContext, endpoint: str, path: str, *, params: dict[str, Any] | None = None,
            headers: dict[str, str] | None = None, units: int = 1, page: int = 0, where: str | None = None,
            ok_statuses: tuple[int, ...] = ()) -> tuple[int, dict[str, Any]]:
        """GET with the retry policy; returns ``(status, body)``. Statuses in ``ok_statuses`` are
        returned (not raised) so a caller can treat e.g. 403 on an optional report as "not licensed"."""
        url = self.url(path)
        where = where or endpoint
        attempt, fresh = 0, False
        while True:
            ctx.raise_if_cancelled(where)
            self.budget.acquire("app", units)
            try:
                resp = self.session().get(url, params=params, timeout=self.settings.timeout_s,
                                          headers={"Authorization": f"Bearer {self.token(fresh=fresh)}", **(headers or {})})
                fresh = False
            except requests.RequestException as exc:
                if attempt >= self.settings.max_retries:
                    raise SourceError(f"connection failed {attempt + 1} times: {type(exc).__name__}: {exc}", where=where) from None
                ctx.count_retry(endpoint, f"connection: {type(exc).__name__}")
                self.sleep(self._backoff(attempt, None))
                attempt += 1
                continue
            body = _json(resp)
            if resp.status_code < 300:
                spent = _units(resp.headers, units)
                ctx.count_call(endpoint, units=spent)
                ctx.raw(RawPage(endpoint, {"url": _strip(url), **(params or {})}, page, body, status=resp.status_code,
                                received=utc_iso(datetime.now(timezone.utc))))
                return resp.status_code, body
            failure = graph_failure(resp.status_code, body, resp.headers)
            if resp.status_code == 401 and not fresh and attempt < self.settings.max_retries:
                fresh = True  # the token died (expired early, revoked): one fresh one
                ctx.count_retry(endpoint, "401: token refused, fetching a new one")
                attempt += 1
                continue
            if resp.status_code in ok_statuses:
                ctx.raw(RawPage(endpoint, {"url": _strip(url), **(params or {})}, page, body, status=resp.status_code,
                                received=utc_iso(datetime.now(timezone.utc))))
                return resp.status_code, body
            if resp.status_code == 410:
                raise DeltaReset(failure.describe(), where=where, status=410)
            if not failure.retryable or attempt >= self.settings.max_retries:
                raise _as_error(failure, where, attempt) from None
            wait = self._backoff(attempt, failure.retry_after)
            if resp.status_code == 429:
                ctx.count_throttle(endpoint, wait)
                self.budget.hold(wait)
            ctx.count_retry(endpoint, failure.describe())
            self.sleep(wait)
            attempt += 1

    def pages(self, ctx: RunContext, endpoint: str, path: str, *, params: dict[str, Any] | None = None,
              headers: dict[str, str] | None = None, units: int = 1, next_units: int | None = None,
              where: str | None = None) -> Iterator[dict[str, Any]]:
        """Every page of a collection, following ``@odata.nextLink`` (which carries the query)."""
        url, p, page = path, params, 0
        while True:
            _, body = self.get(ctx, endpoint, url, params=p, headers=headers,
                               units=units if page == 0 or next_units is None else next_units, page=page, where=where)
            yield body
            url = body.get("@odata.nextLink")
            if not url:
                return
            p, page = None, page + 1

    # -- $batch --------------------------------------------------------------------------------------
    def batch(self, ctx: RunContext, endpoint: str, calls: list[tuple[str, str, int]], *,
              headers: dict[str, str] | None = None) -> dict[str, tuple[int, dict[str, Any]] | GraphFailure]:
        """``(key, relative url, units)`` GETs in ``$batch`` requests of 20. Inner 429/5xx answers are
        re-batched after their ``Retry-After``; other inner errors are returned as ``GraphFailure``."""
        results: dict[str, tuple[int, dict[str, Any]] | GraphFailure] = {}
        pending = list(calls)
        attempts: dict[str, int] = {}
        outer_attempt, fresh = 0, False
        while pending:
            chunk, pending = pending[:BATCH_MAX], pending[BATCH_MAX:]
            body = {"requests": [{"id": str(n), "method": "GET", "url": url, **({"headers": headers} if headers else {})}
                                 for n, (_, url, _) in enumerate(chunk)]}
            ctx.raise_if_cancelled(f"{endpoint} batch")
            self.budget.acquire("app", sum(u for _, _, u in chunk))
            try:
                resp = self.session().post(self.base + "/$batch", json=body, timeout=self.settings.timeout_s,
                                           headers={"Authorization": f"Bearer {self.token(fresh=fresh)}"})
                fresh = False
            except requests.RequestException as exc:
                if outer_attempt >= self.settings.max_retries:
                    raise SourceError(f"batch connection failed {outer_attempt + 1} times: {exc}", where=f"{endpoint} batch") from None
                ctx.count_retry("batch", f"connection: {type(exc).__name__}")
                self.sleep(self._backoff(outer_attempt, None))
                outer_attempt += 1
                pending = chunk + pending
                continue
            outer = _json(resp)
            if resp.status_code >= 300:
                failure = graph_failure(resp.status_code, outer, resp.headers)
                if resp.status_code == 401 and not fresh:
                    fresh = True
                elif not failure.retryable or outer_attempt >= self.settings.max_retries:
                    raise _as_error(failure, f"{endpoint} batch", outer_attempt) from None
                else:
                    self.sleep(self._backoff(outer_attempt, failure.retry_after))
                ctx.count_retry("batch", failure.describe())
                outer_attempt += 1
                pending = chunk + pending
                continue
            ctx.count_call("batch", units=0)
            answers = {str(r.get("id")): r for r in outer.get("responses", []) if isinstance(r, dict)}
            retry: list[tuple[str, str, int]] = []
            wait = 0.0
            refresh = False
            for n, (key, url, units) in enumerate(chunk):
                r = answers.get(str(n))
                if r is None:
                    results[key] = GraphFailure(0, "noAnswer", "the $batch answer had no response for this request", None)
                    continue
                status, inner = int(r.get("status", 0)), r.get("body") if isinstance(r.get("body"), dict) else {}
                if status < 300:
                    ctx.count_call(endpoint, units=_units(r.get("headers") or {}, units))
                    ctx.raw(RawPage(endpoint, {"url": url, "batched": True}, 0, inner, status=status,
                                    received=utc_iso(datetime.now(timezone.utc))))
                    results[key] = (status, inner)
                    continue
                failure = graph_failure(status, inner, r.get("headers") or {})
                n_try = attempts.get(key, 0)
                if (failure.retryable or status == 401) and n_try < self.settings.max_retries:
                    attempts[key] = n_try + 1
                    retry.append((key, url, units))
                    delay = self._backoff(n_try, failure.retry_after) if status != 401 else 0.0
                    refresh = refresh or status == 401
                    if status == 429:
                        ctx.count_throttle(endpoint, delay)
                    ctx.count_retry(endpoint, f"in batch: {failure.describe()}")
                    wait = max(wait, delay)
                else:
                    results[key] = failure
            if retry:
                fresh = refresh
                if wait:
                    self.budget.hold(wait)
                    self.sleep(wait)
                pending = retry + pending
        return results


def _json(resp: requests.Response) -> dict[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {"value": body}


def _units(headers: Any, default: int) -> int:
    try:
        return int(float(headers.get("x-ms-resource-unit") or headers.get("X-Ms-Resource-Unit") or default))
    except (TypeError, ValueError, AttributeError):
        return default


def _strip(url: str) -> str:
    """A URL for the raw stream: path and query only (no host names of the tenant's services)."""
    parts = urlsplit(url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def _as_error(failure: GraphFailure, where: str, retries: int) -> Exception:
    text = failure.describe()
    if failure.retryable:
        return SourceError(f"gave up after {retries} retries: {text}", where=where, status=failure.status)
    if failure.status == 401:
        return AuthenticationError(f"Graph refused the token: {text}", where=where)
    if failure.status == 403:
        return PermissionDenied(text, where=where, permission=failure.code or None)
    return SourceError(text, where=where, status=failure.status)

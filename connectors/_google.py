"""The Google client factory shared by ``google_directory`` and ``google_drive``.

One place for everything between a connector and Google's wire:

* **Auth**: a service-account key (by path) with domain-wide delegation, impersonating one
  subject per session (``with_subject``); read-only scopes unless a connector asks otherwise.
* **Clients**: built from the discovery documents packaged with google-api-python-client
  (offline), with ``rootUrl`` rewritten when an endpoint is configured, so batch requests follow
  it too (the library's ``api_endpoint`` option leaves batch on www.googleapis.com). Services are
  built once per thread and requests are executed with a per-subject ``AuthorizedHttp`` wrapped
  around that thread's own ``httplib2.Http``: httplib2 objects are never shared between threads.
* **Retries**: our own policy, because the library ignores ``Retry-After`` and never retries a
  429 inside a batch. 429, 5xx, the rate-limit 403s and dropped connections are retried with
  exponential backoff and full jitter, never sooner than ``Retry-After``; inner batch calls that
  were throttled are re-batched. Permission and validation errors are never retried.
* **Quota budget**: calls are spaced so that neither the per-project nor the per-user limit is
  exceeded (documented limits by default), so the collector does not provoke throttling it could
  have avoided; a throttle response pushes the whole budget back by its ``Retry-After``.
* **Evidence**: every response page goes to the run's raw stream and every call, retry and
  throttle is counted in run.json, here, so no connector can forget one.
"""

from __future__ import annotations

import http.client
import importlib.resources
import json
import random
import socket
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any, Callable, Iterator

import httplib2
from pydantic import Field, field_validator

from connectors._quota import QuotaBudget
from connectors.base import (
    AuthenticationError,
    ConfigPath,
    ConnectorConfig,
    PermissionDenied,
    RunContext,
    SourceError,
    secure_url,
)
from evidence.model import RawPage, utc_iso

SCOPE = "https://www.googleapis.com/auth/"
GOOGLE_ROOT = "https://www.googleapis.com/"
DOCS = {"drive": "drive.v3.json", "directory": "admin.directory_v1.json", "reports": "admin.reports_v1.json"}
RATE_REASONS = frozenset({"rateLimitExceeded", "userRateLimitExceeded", "quotaExceeded"})
TRANSIENT = (OSError, http.client.HTTPException, httplib2.HttpLib2Error, socket.timeout)


class GoogleSettings(ConnectorConfig):
    """Keys shared by the Google connectors (each adds its own and its quota defaults)."""

    service_account_key_file: ConfigPath
    admin_subject: str = Field(description="an administrator the service account acts as (domain-wide delegation)")
    customer: str = "my_customer"
    root_url: str | None = Field(None, description="API root, e.g. the sandbox's http://127.0.0.1:PORT/ (default Google's)")
    token_uri: str | None = Field(None, description="OAuth token endpoint (default: the one in the key file)")
    workers: int = Field(8, ge=1, le=64, description="concurrent sessions")
    max_retries: int = Field(8, ge=0, le=20)
    timeout_s: float = Field(60.0, gt=0)

    @field_validator("admin_subject")
    @classmethod
    def _email(cls, value: str) -> str:
        if "@" not in value:
            raise ValueError(f"'{value}' is not an email address")
        return value.strip().lower()

    @field_validator("root_url")
    @classmethod
    def _root(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = secure_url(value)
        return value if value.endswith("/") else value + "/"

    @field_validator("token_uri")
    @classmethod
    def _token_uri(cls, value: str | None) -> str | None:
        return None if value is None else secure_url(value)


@cache
def discovery_document(api: str) -> str:
    return (importlib.resources.files("googleapiclient") / "discovery_cache" / "documents" / DOCS[api]).read_text(encoding="utf-8")


def load_key_info(path: Path) -> dict[str, Any]:
    """The service-account key file, with a message naming the file for every way it can be wrong."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AuthenticationError(f"cannot read the service-account key file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise AuthenticationError(f"{path} is not a JSON service-account key: {exc}") from None
    if not isinstance(info, dict):
        raise AuthenticationError(f"{path} is not a service-account key (a JSON object with type=service_account)")
    missing = [k for k in ("type", "client_email", "private_key", "token_uri") if not info.get(k)]
    if info.get("type") != "service_account" or missing:
        raise AuthenticationError(
            f"{path} is not a service-account key (needs type=service_account, client_email, private_key, token_uri; missing {missing})"
        )
    try:
        secure_url(str(info["token_uri"]))
    except ValueError as exc:
        raise AuthenticationError(f"{path}: token_uri {exc}") from None
    return info


# -- errors ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GoogleError:
    status: int
    reason: str
    message: str
    retry_after: float | None

    @property
    def retryable(self) -> bool:
        return self.status == 429 or self.status >= 500 or (self.status == 403 and self.reason in RATE_REASONS)

    @property
    def throttled(self) -> bool:
        return self.status == 429 or (self.status == 403 and self.reason in RATE_REASONS)


def google_error(exc: Any) -> GoogleError:
    """Status, reason, message and Retry-After of a googleapiclient ``HttpError``."""
    status = int(getattr(exc.resp, "status", 0) or 0)
    reason, message = "", str(getattr(exc, "reason", "") or "")
    try:
        body = json.loads(exc.content.decode("utf-8") if isinstance(exc.content, bytes) else exc.content)
        err = body.get("error", {})
        if isinstance(err, dict):
            message = err.get("message") or message
            errors = err.get("errors") or []
            if errors:
                reason = errors[0].get("reason", "")
        elif isinstance(err, str):  # OAuth style
            reason, message = err, body.get("error_description", err)
    except (ValueError, AttributeError, TypeError):
        pass
    retry_after = None
    try:
        value = exc.resp.get("retry-after")
        retry_after = float(value) if value is not None else None
    except (TypeError, ValueError, AttributeError):
        retry_after = None
    return GoogleError(status, reason, message, retry_after)


class SubjectRefused(AuthenticationError):
    """Google would not issue a token for this subject (unknown, suspended, or not delegated)."""

    def __init__(self, message: str, *, subject: str):
        super().__init__(message, where=subject)
        self.subject = subject


# -- the client factory ------------------------------------------------------------------------


class _Batch:  # built lazily: importing googleapiclient costs ~0.3 s
    cls: Any = None


def _batch_class() -> Any:
    if _Batch.cls is None:
        from googleapiclient import _auth
        from googleapiclient.http import BatchHttpRequest

        class QuietBatch(BatchHttpRequest):
            """Inner calls carry the subject's token from the first send (the library adds it only
            when re-sending 401s), and the token is refreshed only when missing or expired —
            or, once per batch, when inner calls came back 401 (the server dropped a token the
            client still thinks valid) and the library re-sends them."""

            _sent = False

            def _refresh_and_apply_credentials(self, request, http):  # library hook
                creds = _auth.get_credentials_from_http(http)
                if creds is not None:
                    if not creds.valid or (self._sent and id(creds) not in self._refreshed_credentials):
                        _auth.refresh_credentials(creds)
                        self._refreshed_credentials[id(creds)] = 1
                    _auth.apply_credentials(creds, request.headers)

            def _execute(self, http, order, requests):  # every inner call carries the subject's token
                for request_id in order:
                    self._refresh_and_apply_credentials(requests[request_id], http)
                super()._execute(http, order, requests)
                self._sent = True  # from now on only 401 re-sends call the hook

        _Batch.cls = QuietBatch
    return _Batch.cls


class GoogleClients:
    """Credentials, per-thread services and the retrying, counting ``execute`` / ``batch``."""

    def __init__(self, settings: GoogleSettings, *, project_per_minute: float, user_per_minute: float,
                 key_info: dict[str, Any] | None = None, backoff_base_s: float = 1.0, backoff_cap_s: float = 64.0,
                 sleep: Callable[[float], None] = time.sleep):
        self.settings = settings
        self.key_info = dict(key_info or load_key_info(settings.service_account_key_file))
        if settings.token_uri:
            self.key_info["token_uri"] = settings.token_uri
        self.root_url = settings.root_url or GOOGLE_ROOT
        self.budget = QuotaBudget(project_per_minute, user_per_minute, sleep=sleep)
        self.backoff_base_s, self.backoff_cap_s = backoff_base_s, backoff_cap_s
        self.sleep = sleep
        self._local = threading.local()
        self._creds_lock = threading.Lock()
        self._creds: OrderedDict[tuple[str, tuple[str, ...]], Any] = OrderedDict()
        self._base_creds: dict[tuple[str, ...], Any] = {}
        self._docs: dict[str, dict[str, Any]] = {}

    @property
    def service_account(self) -> str:
        return self.key_info.get("client_email", "?")

    # -- building blocks --------------------------------------------------------------------
    def _doc(self, api: str) -> dict[str, Any]:
        doc = self._docs.get(api)
        if doc is None:
            doc = json.loads(discovery_document(api))
            doc["rootUrl"] = self.root_url
            self._docs[api] = doc
        return doc

    def _thread_http(self) -> httplib2.Http:
        h = getattr(self._local, "http", None)
        if h is None:
            h = self._local.http = httplib2.Http(timeout=self.settings.timeout_s)
        return h

    def service(self, api: str) -> Any:
        """This thread's service object for ``api`` (``drive`` or ``directory``)."""
        services = getattr(self._local, "services", None)
        if services is None:
            services = self._local.services = {}
        svc = services.get(api)
        if svc is None:
            from googleapiclient.discovery import build_from_document

            svc = services[api] = build_from_document(self._doc(api), http=self._thread_http())
        return svc

    def credentials(self, subject: str, scopes: tuple[str, ...]) -> Any:
        key = (subject, scopes)
        with self._creds_lock:
            creds = self._creds.get(key)
            if creds is not None:
                self._creds.move_to_end(key)
                return creds
            base = self._base_creds.get(scopes)
            if base is None:
                from google.oauth2 import service_account

                try:
                    base = service_account.Credentials.from_service_account_info(self.key_info, scopes=list(scopes))
                except (ValueError, KeyError) as exc:
                    raise AuthenticationError(f"the service-account key cannot be used: {exc}") from None
                self._base_creds[scopes] = base
            creds = self._creds[key] = base.with_subject(subject)
            if len(self._creds) > 512:  # a user's pages reuse theirs; a full run meets each user once
                self._creds.popitem(last=False)
            return creds

    def http(self, subject: str, scopes: tuple[str, ...]) -> Any:
        """An authorised http for ``subject`` on this thread's connection pool."""
        from google_auth_httplib2 import AuthorizedHttp

        return AuthorizedHttp(self.credentials(subject, scopes), http=self._thread_http())

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        delay = min(self.backoff_cap_s, self.backoff_base_s * (2 ** attempt)) * (0.5 + random.random() / 2)
        return max(delay, retry_after or 0.0)

    # -- one call -----------------------------------------------------------------------------
    def execute(self, ctx: RunContext, endpoint: str, request: Any, *, subject: str, scopes: tuple[str, ...],
                params: dict[str, Any] | None = None, page: int = 0, where: str | None = None) -> dict[str, Any]:
        """Execute one request with the retry policy; the page goes to the raw stream."""
        from google.auth.exceptions import RefreshError, TransportError
        from googleapiclient.errors import HttpError

        where = where or f"{endpoint} as {subject}"
        attempt = 0
        while True:
            ctx.raise_if_cancelled(where)
            self.budget.acquire(subject)
            try:
                response = request.execute(http=self.http(subject, scopes), num_retries=0)
            except HttpError as exc:
                err = google_error(exc)
                if err.status == 401:  # the token was refused even after google-auth's own refresh
                    raise AuthenticationError(f"Google refused the access token for {subject}: {err.message}", where=where) from None
                if not err.retryable or attempt >= self.settings.max_retries:
                    raise _as_connector_error(err, where, retries=attempt) from None
                wait = self._backoff(attempt, err.retry_after)
                if err.throttled:
                    ctx.count_throttle(endpoint, wait)
                    self.budget.hold(wait, subject if err.reason == "userRateLimitExceeded" else None)
                ctx.count_retry(endpoint, f"{err.status} {err.reason or err.message}")
            except RefreshError as exc:
                raise _refresh_error(exc, subject, where, scopes) from None
            except (TransportError, *TRANSIENT) as exc:
                if attempt >= self.settings.max_retries:
                    raise SourceError(f"connection failed {attempt + 1} times: {type(exc).__name__}: {exc}", where=where) from None
                wait = self._backoff(attempt, None)
                ctx.count_retry(endpoint, f"connection: {type(exc).__name__}")
            else:
                ctx.count_call(endpoint)
                ctx.raw(RawPage(endpoint, {**(params or {}), "subject": subject}, page, response,
                                received=utc_iso(datetime.now(timezone.utc))))
                return response
            attempt += 1
            self.sleep(wait)

    def pages(self, ctx: RunContext, endpoint: str, make: Callable[[str | None], Any], *, subject: str,
              scopes: tuple[str, ...], params: dict[str, Any], where: str | None = None) -> Iterator[dict[str, Any]]:
        """Every page of a list call: ``make(page_token)`` builds the request for one page."""
        token: str | None = None
        page = 0
        while True:
            response = self.execute(ctx, endpoint, make(token), subject=subject, scopes=scopes,
                                    params={**params, **({"pageToken": token} if token else {})}, page=page, where=where)
            yield response
            token = response.get("nextPageToken")
            if not token:
                return
            page += 1

    # -- batches ------------------------------------------------------------------------------
    def batch(self, ctx: RunContext, api: str, endpoint: str, calls: list[tuple[str, Any, dict[str, Any]]], *,
              subject: str, scopes: tuple[str, ...], size: int = 100) -> dict[str, dict[str, Any] | ConnectorFailure]:
        """Run ``(key, request, params)`` calls in HTTP batches of ``size``.

        Inner calls answered 429 / 5xx / rate-limit 403 are re-batched after a backoff (the library
        never retries them); any other inner error is returned for that key as a
        :class:`ConnectorFailure`, for the caller to report where it belongs.
        """
        from google.auth.exceptions import RefreshError, TransportError
        from googleapiclient.errors import HttpError

        results: dict[str, dict[str, Any] | ConnectorFailure] = {}
        pending = list(calls)
        attempts: dict[str, int] = {}
        batch_uri = self.root_url + self._doc(api)["batchPath"]
        outer_attempt = 0
        while pending:
            chunk, pending = pending[:size], pending[size:]
            retry: list[tuple[str, Any, dict[str, Any]]] = []
            answers: dict[str, Any] = {}

            def callback(request_id: str, response: Any, exception: Any, _answers: dict[str, Any] = answers) -> None:
                _answers[request_id] = exception if exception is not None else response

            batch = _batch_class()(callback=callback, batch_uri=batch_uri)
            by_id = {}
            for n, (key, request, params) in enumerate(chunk):
                by_id[str(n)] = (key, request, params)
                batch.add(request, request_id=str(n))
            ctx.raise_if_cancelled(f"{endpoint} batch as {subject}")
            self.budget.acquire(subject, len(chunk))
            try:
                batch.execute(http=self.http(subject, scopes))
            except HttpError as exc:  # the envelope itself failed
                err = google_error(exc)
                if not err.retryable or outer_attempt >= self.settings.max_retries:
                    raise _as_connector_error(err, f"batch of {endpoint} as {subject}", retries=outer_attempt) from None
                wait = self._backoff(outer_attempt, err.retry_after)
                ctx.count_retry("batch", f"{err.status} {err.reason}")
                outer_attempt += 1
                self.sleep(wait)
                pending = chunk + pending
                continue
            except RefreshError as exc:
                raise _refresh_error(exc, subject, f"batch of {endpoint}", scopes) from None
            except (TransportError, *TRANSIENT) as exc:
                if outer_attempt >= self.settings.max_retries:
                    raise SourceError(f"batch connection failed {outer_attempt + 1} times: {type(exc).__name__}: {exc}",
                                      where=f"batch of {endpoint} as {subject}") from None
                ctx.count_retry("batch", f"connection: {type(exc).__name__}")
                self.sleep(self._backoff(outer_attempt, None))
                outer_attempt += 1
                pending = chunk + pending
                continue
            ctx.count_call("batch", units=0)
            wait = 0.0
            for rid, (key, request, params) in by_id.items():
                answer = answers.get(rid)
                if isinstance(answer, HttpError):
                    err = google_error(answer)
                    n = attempts.get(key, 0)
                    if err.retryable and n < self.settings.max_retries:
                        attempts[key] = n + 1
                        retry.append((key, request, params))
                        delay = self._backoff(n, err.retry_after)
                        wait = max(wait, delay)
                        if err.throttled:
                            ctx.count_throttle(endpoint, delay)
                        ctx.count_retry(endpoint, f"in batch: {err.status} {err.reason}")
                    else:
                        results[key] = ConnectorFailure(err, _as_connector_error(err, f"{endpoint} {key}", retries=n))
                elif answer is None:
                    results[key] = ConnectorFailure(None, SourceError("the batch answer had no part for this call", where=f"{endpoint} {key}"))
                else:
                    ctx.count_call(endpoint)
                    ctx.raw(RawPage(endpoint, {**params, "subject": subject}, 0, answer, received=utc_iso(datetime.now(timezone.utc))))
                    results[key] = answer
            if retry:
                self.budget.hold(wait)
                self.sleep(wait)
                pending = retry + pending
        return results


@dataclass(frozen=True)
class ConnectorFailure:
    """An inner batch call that failed for good: the Google error and the connector error for it."""

    google: GoogleError | None
    error: Exception


def _as_connector_error(err: GoogleError, where: str, *, retries: int) -> Exception:
    text = f"{err.status} {err.reason}: {err.message}".strip()
    if err.retryable:
        return SourceError(f"gave up after {retries} retries: {text}", where=where, status=err.status)
    if err.status == 403:
        return PermissionDenied(text, where=where, permission=err.reason or None)
    return SourceError(text, where=where, status=err.status)


def _refresh_error(exc: Exception, subject: str, where: str, scopes: tuple[str, ...] = ()) -> Exception:
    text = str(exc.args[0] if exc.args else exc)
    if "invalid_grant" in text or "unauthorized_client" in text or "Invalid email" in text:
        hint = ("check that the user exists and is not refused by Google, and that the service account's client ID "
                f"has domain-wide delegation for {', '.join(scopes) or 'the scopes this connector needs'} "
                "(Admin console → Security → API controls → Domain-wide delegation)")
        return SubjectRefused(f"Google would not let the service account act as {subject}: {text} ({hint})", subject=subject)
    return AuthenticationError(f"getting an access token for {subject} failed: {text}", where=where)


def scopes(*names: str) -> tuple[str, ...]:
    return tuple(sorted(n if n.startswith("https://") else SCOPE + n for n in names))


# -- identifiers shared by the Google connectors (so grants join principals by id) ------------


def user_pid(email: str) -> str:
    """Principal id of a Google account (directory user, external member, Drive grantee)."""
    return f"user:{email.strip().lower()}"


def group_pid(email: str) -> str:
    return f"group:{email.strip().lower()}"


def email_domain(email: str | None) -> str | None:
    return email.rsplit("@", 1)[1].lower() if email and "@" in email else None

"""The connector contract.

A connector reads one source and *yields* what it saw; it never writes to disk, never judges,
and never decides whether its run was complete — the runner does, from what the connector
yielded, raised and reported through the :class:`RunContext`.

Exceptions (all carry the fields a message needs)::

    ConnectorError                 anything a connector raises on purpose
     ├── AuthenticationError       the credential was refused (bad key, expired secret)
     ├── PermissionDenied          authenticated, but a scope / IAM action is missing
     ├── SourceError               the source answered wrongly or retries ran out
     └── Cancelled                 a stop was requested; raised at a page boundary

Raising any of them (or anything else) from ``snapshot`` ends the run: it is sealed as
``partial`` when records were already yielded, ``failed`` otherwise. Recoverable problems
(one unreadable folder, one bucket denied) go to :meth:`RunContext.error` instead: the run goes
on and seals as ``partial`` naming every such place.
"""

from __future__ import annotations

import copy
import ipaddress
import logging
import os
import re
import threading
import time
import urllib.parse
from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Callable, ClassVar, Iterator

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationInfo

from evidence.model import STREAMS, RawPage, Record


class ConnectorError(Exception):
    """Base of everything a connector raises on purpose."""

    def __init__(self, message: str, *, where: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where

    def __str__(self) -> str:
        return f"{self.where}: {self.message}" if self.where else self.message


class AuthenticationError(ConnectorError):
    """The source refused the credential."""


class PermissionDenied(ConnectorError):
    """Authenticated, but a scope, role or IAM action is missing (``permission`` names it)."""

    def __init__(self, message: str, *, where: str | None = None, permission: str | None = None):
        super().__init__(message, where=where)
        self.permission = permission


class SourceError(ConnectorError):
    """The source answered in a way the connector cannot use, or retries ran out."""

    def __init__(self, message: str, *, where: str | None = None, status: int | None = None):
        super().__init__(message, where=where)
        self.status = status


class Cancelled(ConnectorError):
    """A stop was requested; the run seals as ``partial`` with reason ``interrupted``."""

    def __init__(self, message: str = "interrupted", *, where: str | None = None):
        super().__init__(message, where=where)


def _resolve_config_path(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("config_dir")
    value = value.expanduser()
    if not value.is_absolute() and base is not None:
        value = Path(base) / value
    return Path(os.path.abspath(value))


ConfigPath = Annotated[Path, AfterValidator(_resolve_config_path)]
"""A path in config: ``~`` expanded, relative paths taken from the config file's directory."""


AWS_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")


def aws_region(value: str) -> str:
    """Config check: an AWS region name."""
    if not AWS_REGION.match(value):
        raise ValueError(f"'{value}' is not an AWS region name (e.g. ap-northeast-1)")
    return value


def secure_url(value: str) -> str:
    """Config check for a URL that credentials are sent to: https, or plain http on this machine only.

    The host is parsed, not matched as a prefix: ``http://127.0.0.1.example.net`` is not the loopback.
    """
    try:
        parts = urllib.parse.urlsplit(value)
        host, port = parts.hostname, parts.port
    except ValueError:
        raise ValueError(f"'{value}' is not a URL") from None
    # the host as the URL spells it, nothing around it (urlsplit is lenient: "[::1].example.net" gives "::1")
    spelled = None if host is None else (f"[{host}]" if ":" in host else host) + ("" if port is None else f":{port}")
    exact = spelled is not None and parts.netloc.lower() == spelled
    if exact and parts.scheme == "https":
        return value
    if exact and parts.scheme == "http" and _is_loopback(host):
        return value
    raise ValueError(f"'{value}' must be an https:// URL (plain http only for 127.0.0.1 / localhost / [::1])")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def aws_endpoint_url(value: str | None) -> str | None:
    """Config check: an https URL, or plain http on the loopback (moto, a local S3-compatible store)."""
    if value is None:
        return None
    return secure_url(value).rstrip("/")


AwsRegion = Annotated[str, AfterValidator(aws_region)]
EndpointUrl = Annotated[str | None, AfterValidator(aws_endpoint_url)]
"""Config types shared by the AWS connectors and the vault's S3 copy."""


def read_secret(*, file: Path | None, env: str | None, what: str) -> str:
    """Read a secret given by reference (a file path or an environment variable name)."""
    if file is not None:
        try:
            return file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise AuthenticationError(f"cannot read {what} from {file}: {exc.strerror}") from None
    if env is not None:
        value = os.environ.get(env)
        if not value:
            raise AuthenticationError(f"environment variable {env} (the {what}) is not set")
        return value
    raise AuthenticationError(f"no {what} configured")


class ConnectorConfig(BaseModel):
    """Base of every connector's ``Config``: frozen, unknown keys refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass(frozen=True)
class Organization:
    """What a connector needs to know of the organisation: its own domains decide "external"."""

    name: str
    domains: tuple[str, ...]
    timezone: str = "UTC"

    def is_internal_domain(self, domain: str | None) -> bool | None:
        if not domain:
            return None
        domain = domain.lower().rstrip(".")
        return any(domain == d or domain.endswith("." + d) for d in self.domains)


@dataclass
class CheckItem:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class CheckResult:
    items: list[CheckItem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return bool(self.items) and all(i.ok for i in self.items)

    def add(self, name: str, ok: bool, detail: str = "") -> "CheckResult":
        self.items.append(CheckItem(name, ok, detail))
        return self


@dataclass
class RecordedError:
    where: str
    message: str
    kind: str = "error"
    at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return {"where": self.where, "message": self.message, "kind": self.kind}


class RunContext:
    """What a running connector may see and say. Created by the runner, one per run.

    ``cursor`` is the last *committed* cursor (a deep copy: changing it changes nothing);
    :meth:`set_cursor` proposes the next one, committed only if the run seals ``complete``.
    ``base`` is the complete bag that committed that cursor (an ``evidence.reader.BaseBundle``,
    or None): an incremental connector applies its changes to that bag's records, after
    ``base.verify()``.
    """

    def __init__(
        self,
        *,
        run_id: str,
        connector_id: str,
        started: datetime,
        organization: Organization,
        cursor: Any = None,
        logger: logging.Logger | None = None,
        cancel_event: threading.Event | None = None,
        raw_sink: Callable[[RawPage], None] | None = None,
        base: Any = None,
    ):
        self.run_id = run_id
        self.connector_id = connector_id
        self.started = started
        self.organization = organization
        self._cursor = copy.deepcopy(cursor)
        self.logger = logger or logging.getLogger(f"shoseki.connector.{connector_id}")
        self._cancel = cancel_event or threading.Event()
        self._raw_sink = raw_sink
        self._lock = threading.Lock()
        self.pending_cursor: Any = None
        self.cursor_set = False
        self.calls: Counter[str] = Counter()
        self.units: Counter[str] = Counter()
        self.pages: Counter[str] = Counter()
        self.retries: Counter[str] = Counter()
        self.throttled: Counter[str] = Counter()
        self.throttle_wait_s: float = 0.0
        self.errors: list[RecordedError] = []
        self.sources: list[dict[str, Any]] = []
        self.notes: dict[str, Any] = {}
        self.identity: str | None = None
        self.base = base  # evidence.reader.BaseBundle: the complete bag that committed ``cursor``

    @classmethod
    def for_check(cls) -> "RunContext":
        """A throw-away context for ``Connector.check()``: its counters and raw pages go nowhere."""
        from datetime import timezone

        return cls(run_id="check", connector_id="check", started=datetime.now(timezone.utc),
                   organization=Organization("check", ()))

    # -- read-only view -------------------------------------------------------------------
    @property
    def cursor(self) -> Any:
        return copy.deepcopy(self._cursor)

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def raise_if_cancelled(self, where: str | None = None) -> None:
        if self._cancel.is_set():
            raise Cancelled(where=where)

    # -- what the connector reports -------------------------------------------------------
    def set_cursor(self, value: Any) -> None:
        self.pending_cursor = copy.deepcopy(value)
        self.cursor_set = True

    def count_call(self, endpoint: str, *, units: int = 1) -> None:
        with self._lock:
            self.calls[endpoint] += 1
            self.units[endpoint] += units

    def count_retry(self, endpoint: str, reason: str) -> None:
        with self._lock:
            self.retries[endpoint] += 1
        self.logger.info("retry %s: %s", endpoint, reason)

    def count_throttle(self, endpoint: str, wait_s: float) -> None:
        with self._lock:
            self.throttled[endpoint] += 1
            self.throttle_wait_s += wait_s

    def raw(self, page: RawPage) -> None:
        """Hand one response page to the raw stream (client factories call this)."""
        with self._lock:
            self.pages[page.endpoint] += 1
        if self._raw_sink is not None:
            self._raw_sink(page)

    def error(self, where: str, message: str, *, kind: str = "error") -> None:
        """A recoverable problem: the run continues and seals ``partial`` naming ``where``."""
        with self._lock:
            self.errors.append(RecordedError(where, message, kind))
        self.logger.warning("%s: %s", where, message)

    def source(self, **description: Any) -> None:
        """Describe what was read (an endpoint with its parameters, or a root path)."""
        self.sources.append(description)

    def note(self, key: str, value: Any) -> None:
        """Anything else that belongs in run.json (``mode``, ``base bundle`` …)."""
        self.notes[key] = value


class Connector(ABC):
    """One source. Subclasses declare the class attributes; shared code does the rest."""

    kind: ClassVar[str]
    Config: ClassVar[type[ConnectorConfig]]
    streams: ClassVar[tuple[str, ...]]
    permissions: ClassVar[tuple[str, ...]]
    description: ClassVar[str] = ""

    def __init__(self, config: ConnectorConfig, clients: Any = None):
        self.config = config
        self.clients = clients

    @classmethod
    def make_clients(cls, config: ConnectorConfig) -> Any:
        """Build the provider clients from config (tests pass their own instead)."""
        return None

    def ensure_clients(self) -> Any:
        """The clients given, or built from config on first use."""
        if self.clients is None:
            self.clients = self.make_clients(self.config)
        return self.clients

    @abstractmethod
    def check(self) -> CheckResult:
        """Authenticate and make one cheap read per stream; never raises for a bad source."""

    @abstractmethod
    def snapshot(self, ctx: RunContext) -> Iterator[Record | RawPage]:
        """Yield every record of the current state (and raw pages, if not sent via ``ctx.raw``)."""


def choose_mode(ctx: RunContext, *, enabled: bool, version: int, config_digest: str, full_every_days: float,
                check: Callable[[dict[str, Any]], str | None] | None = None,
                what: str = "changes") -> tuple[str, str, dict[str, Any] | None]:
    """``("full" | "incremental", why, cursor)`` for a connector that builds incremental bags on the
    previous complete one. Incremental only when it is ``enabled``, the committed cursor is of this
    ``version`` and was made with the same ``config_digest`` (the settings that decide what is
    collected), ``check(cursor)`` finds nothing wrong, the baseline is younger than
    ``full_every_days``, and ``ctx.base`` is in the catalogue and still verifies (a problem with
    it is also noted in run.json as ``base_problem``)."""
    from evidence.reader import BaseBundleProblem

    cursor = ctx.cursor
    if not enabled:
        return "full", "incremental collection is off in config", None
    if not isinstance(cursor, dict) or cursor.get("v") != version:
        return "full", "no baseline yet", None
    if cursor.get("config") != config_digest:
        return "full", "what is collected changed in config since the baseline", None
    problem = check(cursor) if check is not None else None
    if problem:
        return "full", problem, None
    try:
        baseline = datetime.fromisoformat(str(cursor["baseline_utc"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return "full", "the cursor has no baseline time", None
    if ctx.started - baseline >= timedelta(days=full_every_days):
        return "full", f"the baseline is older than {full_every_days:g} days", None
    if ctx.base is None:
        return "full", "the bag of the baseline is not in the catalogue", None
    try:
        ctx.base.verify()
    except BaseBundleProblem as exc:
        ctx.note("base_problem", str(exc))
        return "full", f"the previous bag cannot be built on: {exc}", None
    return "incremental", f"{what} since the baseline of {cursor['baseline_utc']}", cursor


def validate_declaration(cls: type[Connector]) -> list[str]:
    """Problems with a connector class's declarations (used by the registry and the contract test)."""
    problems = []
    for attr in ("kind", "Config", "streams", "permissions"):
        if not hasattr(cls, attr):
            problems.append(f"{cls.__name__} does not declare {attr}")
    if problems:
        return problems
    unknown = set(cls.streams) - set(STREAMS)
    if unknown:
        problems.append(f"{cls.__name__}.streams names unknown streams {sorted(unknown)}")
    if not issubclass(cls.Config, ConnectorConfig):
        problems.append(f"{cls.__name__}.Config must derive from ConnectorConfig")
    return problems

"""Configuration: one main TOML file plus one file per connector in ``connectors/`` beside it.

Everything is validated once, at load, into frozen models; nothing downstream re-reads TOML.
Every problem becomes a :class:`ConfigProblem` naming the file, the line where it can be found,
and the key path (``connector[0].roots[1]``); :class:`ConfigError` carries all of them, so an
admin fixes a file in one pass instead of one error at a time.

Secrets are never inline: a key that looks like a secret (``client_secret``, ``password`` …) is
refused with the spelling to use instead (``client_secret_file`` or ``client_secret_env``).
"""

from __future__ import annotations

import hashlib
import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from connectors import UnknownConnectorType, connector_class
from connectors.base import AwsRegion, ConfigPath, Connector, ConnectorConfig, EndpointUrl, Organization
from evidence.model import canonical_json

DEFAULT_CONFIG = Path("config/shoseki.toml")
#: connector ids shoseki uses itself (report bags are chained in the ledger under "report")
RESERVED_IDS = ("report",)
COMMON_CONNECTOR_KEYS = ("id", "type", "enabled", "schedule", "max_age", "description")
_SECRET_KEY = re.compile(
    r"(^|_)(secret|password|passphrase|private_key|api_key|access_key|secret_access_key|token)$"
)
_DURATION = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$")
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


@dataclass(frozen=True)
class ConfigProblem:
    file: Path
    keypath: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else f"{self.file}"
        return f"{where}: {self.keypath}: {self.message}" if self.keypath else f"{where}: {self.message}"


class ConfigError(Exception):
    """One or more problems in the configuration; ``str()`` lists each on its own line."""

    def __init__(self, problems: list[ConfigProblem]):
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def parse_duration(text: str) -> timedelta:
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"'{text}' is not a duration such as 90m, 26h, 7d or 2w")
    n, unit = int(match.group(1)), match.group(2)
    return timedelta(**{{"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[unit]: n})


_WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


def _weekday(text: str) -> int:
    if text in _WEEKDAYS:
        return _WEEKDAYS.index(text)
    if text.isdigit() and int(text) <= 7:
        return int(text)
    raise ValueError(f"'{text}' is not a day of the week (0-7, 0 and 7 being Sunday, or sun … sat)")


def crontab_weekdays(field: str) -> str:
    """A crontab day-of-week field (0 or 7 = Sunday, 1 = Monday; names; lists, ranges, steps) as
    the day names it means. APScheduler 3 numbers days from Monday = 0, so its
    ``CronTrigger.from_crontab`` would run "1" on Tuesdays; names mean the same to both."""
    if field == "*":
        return field
    days: set[int] = set()
    for part in field.lower().split(","):
        span, _, step_text = part.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise ValueError(f"'{part}': the step must be a positive number")
        if span == "*":
            low, high = 0, 6
        elif "-" in span:
            low, high = (_weekday(x) for x in span.split("-", 1))
            if high < low:
                raise ValueError(f"'{span}': the range ends before it starts")
        else:
            low = _weekday(span)
            high = 7 if step_text else low
        days.update(d % 7 for d in range(low, high + 1, step or 1))
    return ",".join(_WEEKDAYS[d] for d in sorted(days))


def cron_trigger(expr: str, tz: str = "UTC"):
    """The APScheduler trigger of a standard five-field crontab expression, in ``tz``."""
    from apscheduler.triggers.cron import CronTrigger

    try:
        fields = expr.split()
        if len(fields) != 5:
            raise ValueError(f"wrong number of fields; got {len(fields)}, expected 5")
        fields[4] = crontab_weekdays(fields[4])
        return CronTrigger.from_crontab(" ".join(fields), timezone=tz)
    except ValueError as exc:
        raise ValueError(f"'{expr}' is not a valid crontab expression ({exc})") from None


def validate_crontab(expr: str, tz: str = "UTC") -> str:
    cron_trigger(expr, tz)
    return expr


_EVERY = re.compile(r"^\s*every\s+(.*?)\s*$", re.IGNORECASE)


def schedule_trigger(expr: str, tz: str = "UTC", *, jitter_s: float = 0):
    """The APScheduler trigger of a ``schedule``: a crontab in ``tz`` (``"30 2 * * *"``), or
    ``"every <duration>"`` (``"every 10m"``, ``"every 5s"``): an interval counted from the
    daemon's start, for tests and sub-minute needs. ``jitter_s`` delays each start at random."""
    from apscheduler.triggers.interval import IntervalTrigger

    jitter = int(jitter_s) or None
    every = _EVERY.match(expr)
    if every is None:
        trigger = cron_trigger(expr, tz)
        trigger.jitter = jitter
        return trigger
    try:
        interval = parse_duration(every.group(1))
    except ValueError:
        raise ValueError(f"'{expr}' is not a valid interval: write every <n><unit>, e.g. every 10m or every 30s") from None
    if interval.total_seconds() < 1:
        raise ValueError(f"'{expr}': the interval must be at least 1s")
    return IntervalTrigger(seconds=int(interval.total_seconds()), timezone=tz, jitter=jitter)


def validate_schedule(expr: str, tz: str = "UTC") -> str:
    """A crontab expression or ``every <duration>``; raises ValueError with the reason."""
    schedule_trigger(expr, tz)
    return expr


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OrganizationConfig(_Model):
    name: str = Field(min_length=1)
    domains: tuple[str, ...] = ()
    timezone: str = Field(default_factory=lambda: _system_timezone())
    language: Literal["ja", "en"] = "ja"

    @field_validator("domains")
    @classmethod
    def _domains(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for d in value:
            d = d.strip().lower().rstrip(".")
            if not re.fullmatch(r"[a-z0-9-]+(\.[a-z0-9-]+)+", d):
                raise ValueError(f"'{d}' is not a domain name")
            out.append(d)
        return tuple(out)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone '{value}' (use an IANA name such as Asia/Tokyo)") from None
        return value


_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class S3Config(_Model):
    """``[vault] s3 = {...}``: the WORM copy in S3 Object Lock (evidence/remote.py)."""

    bucket: str
    prefix: str = "shoseki/"
    object_lock_mode: Literal["COMPLIANCE", "GOVERNANCE"] = "COMPLIANCE"
    retain_days: int = Field(default=2555, ge=1, le=36500)
    region: AwsRegion = "us-east-1"
    profile: str | None = None
    endpoint_url: EndpointUrl = None    # moto / an S3-compatible store: https, or http on 127.0.0.1 only
    timeout_s: float = Field(default=60.0, gt=0, le=600)

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        if not _S3_BUCKET.match(value) or ".." in value:
            raise ValueError(f"'{value}' is not an S3 bucket name (3-63 lower-case letters, digits, '.' and '-')")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value.startswith("/") or ".." in value.split("/") or "//" in value:
            raise ValueError(f"'{value}' is not a key prefix: no leading '/', no '..' or '//' (e.g. \"shoseki/\")")
        return value if not value or value.endswith("/") else value + "/"



class VaultConfig(_Model):
    path: ConfigPath
    signing_key: ConfigPath | None = None
    s3: S3Config | None = None


class DefaultsConfig(_Model):
    schedule: str = "0 3 * * *"
    max_age: str = "26h"

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: str) -> str:
        return validate_schedule(value)

    @field_validator("max_age")
    @classmethod
    def _max_age(cls, value: str) -> str:
        parse_duration(value)
        return value


def _duration(value: str) -> str:
    parse_duration(value)
    return value


class DaemonConfig(_Model):
    """``[daemon]``: how ``shoseki run`` schedules (see README.md, "Run as a service")."""

    jitter: str = "0s"              # a random delay of up to this is added to every scheduled start
    max_concurrent: int = Field(default=2, ge=1, le=64)   # collections running at once; others wait
    misfire_grace: str = "1h"       # a start missed by up to this (suspend, overload) still runs, once
    stop_timeout: str = "2m"        # on SIGTERM: time for running collections to seal as partial
    health_port: int = Field(default=0, ge=0, le=65535)   # >0: /healthz and /metrics on 127.0.0.1
    report_schedule: str = ""       # "" off; else a schedule (crontab or "every <duration>") for the report
    verify_schedule: str = ""       # "" off; else a schedule for a full `shoseki verify` of the vault

    _durations = field_validator("jitter", "misfire_grace", "stop_timeout")(_duration)

    @field_validator("report_schedule", "verify_schedule")
    @classmethod
    def _task_schedule(cls, value: str) -> str:
        return validate_schedule(value) if value.strip() else ""

    def seconds(self, key: str) -> float:
        return parse_duration(getattr(self, key)).total_seconds()


class FindingsConfig(_Model):
    """``[findings]``: the thresholds the report's rules use (see README.md, "Findings")."""

    inactive_days: int = Field(default=90, ge=1, le=3650)        # accounts and access keys unused this long
    guest_inactive_days: int = Field(default=90, ge=1, le=3650)  # guests without a sign-in this long
    top_admins_min: int = Field(default=2, ge=0, le=1000)       # fewer holders of a top admin role: a finding
    top_admins_max: int = Field(default=4, ge=1, le=1000)       # more holders: a finding

    @field_validator("top_admins_max")
    @classmethod
    def _max(cls, value: int, info: ValidationInfo) -> int:
        low = info.data.get("top_admins_min")
        if low is not None and value < low:
            raise ValueError(f"{value} is below top_admins_min ({low})")
        return value


class MainConfig(_Model):
    organization: OrganizationConfig
    vault: VaultConfig
    defaults: DefaultsConfig = DefaultsConfig()
    daemon: DaemonConfig = DaemonConfig()
    findings: FindingsConfig = FindingsConfig()


@dataclass(frozen=True)
class ConnectorEntry:
    """One configured connector instance."""

    id: str
    type: str
    schedule: str
    max_age: timedelta
    enabled: bool
    description: str
    config: ConnectorConfig
    source_file: Path
    index: int

    @property
    def cls(self) -> type[Connector]:
        return connector_class(self.type)

    def digest(self) -> str:
        """SHA-256 of the canonical settings (secrets are references, so none are inside)."""
        body = {
            "id": self.id,
            "type": self.type,
            "schedule": self.schedule,
            "max_age_seconds": int(self.max_age.total_seconds()),
            "config": self.config.model_dump(mode="json"),
        }
        return hashlib.sha256(canonical_json(body).encode()).hexdigest()

    def settings(self) -> dict[str, Any]:
        return {"id": self.id, "type": self.type, **self.config.model_dump(mode="json")}


@dataclass(frozen=True)
class LoadedConfig:
    path: Path
    main: MainConfig
    connectors: tuple[ConnectorEntry, ...] = field(default_factory=tuple)

    @property
    def organization(self) -> Organization:
        o = self.main.organization
        return Organization(name=o.name, domains=o.domains, timezone=o.timezone)

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.main.organization.timezone)

    @property
    def vault_path(self) -> Path:
        return self.main.vault.path

    def connector(self, connector_id: str) -> ConnectorEntry:
        for c in self.connectors:
            if c.id == connector_id:
                return c
        known = ", ".join(c.id for c in self.connectors) or "none"
        raise KeyError(f"no connector with id '{connector_id}' (configured: {known})")


def _system_timezone() -> str:
    tz = os.environ.get("TZ")
    if tz:
        return tz
    try:
        link = os.readlink("/etc/localtime")
        return link.split("zoneinfo/", 1)[1]
    except (OSError, IndexError):
        return "UTC"


def default_config_path() -> Path:
    return Path(os.environ.get("SHOSEKI_CONFIG") or DEFAULT_CONFIG)


# -- locating a key in the file, for line numbers ---------------------------------------------


def find_line(text: str, keypath: tuple[Any, ...], *, array_table: str | None = None) -> int | None:
    """Best effort: the line of ``keypath`` in ``text`` (1-based), else of its nearest parent."""
    lines = text.splitlines()
    start, end = 0, len(lines)
    parts = list(keypath)
    if array_table is not None and parts and isinstance(parts[0], int):
        index = parts.pop(0)
        headers = [i for i, l in enumerate(lines) if l.strip() == f"[[{array_table}]]"]
        if index >= len(headers):
            return None
        start = headers[index]
        end = headers[index + 1] if index + 1 < len(headers) else len(lines)
        found = start + 1
    else:
        found = None
    for part in parts:
        if isinstance(part, int):
            continue
        table = re.compile(rf"^\s*\[{re.escape(str(part))}\]\s*$")
        key = re.compile(rf"^\s*{re.escape(str(part))}\s*=")
        for i in range(start, end):
            if table.match(lines[i]) or key.match(lines[i]):
                found = i + 1
                start = i
                break
        else:
            break
    return found


def _format_loc(prefix: str, loc: tuple[Any, ...]) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def pydantic_problems(
    exc: ValidationError, file: Path, text: str, prefix: str, prefix_loc: tuple[Any, ...], array_table: str = "connector"
) -> list[ConfigProblem]:
    """Problems of one validation, located in ``text``; ``prefix_loc`` indexes the ``[[array_table]]``."""
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        msg = msg.removeprefix("Value error, ")
        line = find_line(text, prefix_loc + loc, array_table=array_table if prefix_loc else None)
        problems.append(ConfigProblem(file, _format_loc(prefix, loc), msg, line))
    return problems


def _secret_keys(table: Any, loc: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = []
    if isinstance(table, dict):
        for k, v in table.items():
            if _SECRET_KEY.search(k) and not isinstance(v, (dict, bool)):
                found.append(loc + (k,))
            found += _secret_keys(v, loc + (k,))
    elif isinstance(table, list):
        for i, v in enumerate(table):
            found += _secret_keys(v, loc + (i,))
    return found


def read_toml(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError([ConfigProblem(path, "", "file not found")]) from None
    except OSError as exc:
        raise ConfigError([ConfigProblem(path, "", f"cannot read: {exc.strerror}")]) from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise ConfigError(
            [ConfigProblem(path, "", f"not valid TOML: {exc}", int(m.group(1)) if m else None)]
        ) from None


# -- loading -----------------------------------------------------------------------------------


def load_config(path: Path | str | None = None) -> LoadedConfig:
    """Load and validate everything; raise :class:`ConfigError` listing every problem found."""
    path = Path(path) if path is not None else default_config_path()
    data, text = read_toml(path)
    config_dir = path.resolve().parent
    problems: list[ConfigProblem] = []
    if "connector" in data:
        problems.append(
            ConfigProblem(path, "connector", "connectors go in files under connectors/ beside this file", find_line(text, ("connector",)))
        )
        data = {k: v for k, v in data.items() if k != "connector"}
    main: MainConfig | None = None
    try:
        main = MainConfig.model_validate(data, context={"config_dir": config_dir})
    except ValidationError as exc:
        problems += pydantic_problems(exc, path, text, "", ())
    if main is not None and main.vault.signing_key is not None and not main.vault.signing_key.is_file():
        problems.append(
            ConfigProblem(path, "vault.signing_key", f"file not found: {main.vault.signing_key}", find_line(text, ("vault", "signing_key")))
        )

    entries: list[ConnectorEntry] = []
    seen: dict[str, Path] = {}
    connectors_dir = config_dir / "connectors"
    files = sorted(connectors_dir.glob("*.toml")) if connectors_dir.is_dir() else []
    for file in files:
        try:
            cdata, ctext = read_toml(file)
        except ConfigError as exc:
            problems += exc.problems
            continue
        file_entries, file_problems = _load_connector_file(file, cdata, ctext, main, config_dir)
        problems += file_problems
        for e in file_entries:
            if e.id in seen:
                problems.append(
                    ConfigProblem(file, f"connector[{e.index}].id", f"id '{e.id}' is already used in {seen[e.id]}", find_line(ctext, (e.index, "id"), array_table="connector"))
                )
            else:
                seen[e.id] = file
                entries.append(e)
    if problems:
        raise ConfigError(problems)
    assert main is not None
    return LoadedConfig(path=path, main=main, connectors=tuple(entries))


def _load_connector_file(
    file: Path, data: dict[str, Any], text: str, main: MainConfig | None, config_dir: Path
) -> tuple[list[ConnectorEntry], list[ConfigProblem]]:
    problems: list[ConfigProblem] = []
    entries: list[ConnectorEntry] = []
    extra = [k for k in data if k != "connector"]
    for k in extra:
        problems.append(ConfigProblem(file, k, "unknown key (a connector file holds [[connector]] tables)", find_line(text, (k,))))
    tables = data.get("connector", [])
    if not isinstance(tables, list):
        return entries, problems + [ConfigProblem(file, "connector", "write connectors as [[connector]] tables", find_line(text, ("connector",)))]
    tz = main.organization.timezone if main else "UTC"
    for i, table in enumerate(tables):
        def problem(key: str | tuple[Any, ...], message: str) -> ConfigProblem:
            keys = (key,) if isinstance(key, str) else key
            return ConfigProblem(file, _format_loc(f"connector[{i}]", keys), message, find_line(text, (i, *keys), array_table="connector"))

        before = len(problems)
        secret_locs = _secret_keys(table)
        for loc in secret_locs:
            problems.append(
                problem(loc, f"inline secrets are refused: put the secret in a file and set {loc[-1]}_file = \"PATH\", or name an environment variable with {loc[-1]}_env = \"NAME\"")
            )
        cid = table.get("id")
        if not isinstance(cid, str) or not _ID.match(cid):
            problems.append(problem("id", "required: lower-case letters, digits and '-', e.g. \"files-main\""))
        elif cid in RESERVED_IDS:
            problems.append(problem("id", f"'{cid}' is reserved for the report bundles of `shoseki report`; choose another id"))
        ctype = table.get("type")
        cls = None
        if not isinstance(ctype, str):
            problems.append(problem("type", "required: the connector type, e.g. \"local_files\""))
        else:
            try:
                cls = connector_class(ctype)
            except UnknownConnectorType as exc:
                problems.append(problem("type", str(exc)))
        enabled = table.get("enabled", True)
        if not isinstance(enabled, bool):
            problems.append(problem("enabled", "must be true or false"))
        description = table.get("description", "")
        if not isinstance(description, str):
            problems.append(problem("description", "must be a string"))
        schedule = table.get("schedule", main.defaults.schedule if main else "0 3 * * *")
        try:
            validate_schedule(str(schedule), tz)
        except ValueError as exc:
            problems.append(problem("schedule", str(exc)))
        max_age_text = table.get("max_age", main.defaults.max_age if main else "26h")
        max_age = timedelta(hours=26)
        try:
            max_age = parse_duration(str(max_age_text))
        except ValueError as exc:
            problems.append(problem("max_age", str(exc)))
        options = {k: v for k, v in table.items() if k not in COMMON_CONNECTOR_KEYS}
        cfg: ConnectorConfig | None = None
        if cls is not None:
            try:
                cfg = cls.Config.model_validate(options, context={"config_dir": config_dir})
            except ValidationError as exc:
                already = {_format_loc(f"connector[{i}]", loc) for loc in secret_locs}
                problems += [
                    p for p in pydantic_problems(exc, file, text, f"connector[{i}]", (i,)) if p.keypath not in already
                ]
        if len(problems) == before and cfg is not None:
            entries.append(
                ConnectorEntry(
                    id=cid, type=ctype, schedule=str(schedule), max_age=max_age, enabled=enabled,
                    description=description, config=cfg, source_file=file, index=i,
                )
            )
    return entries, problems

"""The organisation's context: what the evidence is judged against.

Four optional files beside the main configuration (``config/``), each validated once, at load,
into frozen models, and reported like the rest of the configuration (:mod:`collector.config`):
every problem at once, as ``file:line: keypath: message``.

``contractors.toml``
    ``[[contractor]]`` tables: approved contractors (委託先) — ``name``, ``domains``, ``purpose``,
    ``contract_end``, ``responsible``. A domain covers its subdomains.
``exceptions.toml``
    ``[[exception]]`` tables: approved exceptions (例外承認) — ``rule``, ``resource`` and/or
    ``principal`` (exact, or a glob such as ``"0AD0*"`` / ``"*@vendor.example.org"``), ``reason``,
    ``approved_by``, ``approved_on``, ``valid_until``. An exception applies from ``approved_on``
    to ``valid_until`` inclusive; after that it is expired and stops applying.
``register.toml``
    ``[[entry]]`` tables: the personal-information register (個人情報管理台帳) — ``name``,
    ``locations`` (``{ connector = "<connector id>", resource_prefix / bucket / site = … }``),
    ``allowed`` (``"group:<email>"``, ``"person:<email>"``, ``"contractor:<domain>"``),
    ``responsible``.
``roster.csv``
    people, one row each, columns ``email,name,department,manager,status,start,end``. A person
    with several addresses lists them all in the one ``email`` cell, separated by ``;``
    (``a@example.co.jp;a.alias@example.co.jp``). ``status`` is ``active``, ``leaver`` or
    ``contractor``; leavers need ``end``. CSV problems name the file line and the column.

Dates are ISO (``2027-03-31``, a TOML date or a string). Emails and domains are lower-cased;
a domain is written without a scheme or path (``vendor.example.org``, not ``https://…``).
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from collector.config import ConfigError, ConfigProblem, find_line, pydantic_problems, read_toml

CONTRACTORS_FILE = "contractors.toml"
EXCEPTIONS_FILE = "exceptions.toml"
REGISTER_FILE = "register.toml"
ROSTER_FILE = "roster.csv"
ROSTER_COLUMNS = ("email", "name", "department", "manager", "status", "start", "end")
PRINCIPAL_KINDS = ("group", "person", "contractor", "principal")

_DOMAIN = re.compile(r"^[a-z0-9-]+(\.[a-z0-9-]+)+$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


# -- value types -------------------------------------------------------------------------------


def _iso_date(value: Any) -> date:
    if isinstance(value, datetime):
        raise ValueError(f"'{value.isoformat()}' is a date and time: write the date only, e.g. 2027-03-31")
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise ValueError(f"'{value}' is not an ISO date such as 2027-03-31")


def _email(value: str) -> str:
    value = value.strip().lower()
    if not _EMAIL.match(value):
        raise ValueError(f"'{value}' is not an email address")
    return value


def _domain(value: str) -> str:
    value = value.strip().lower().rstrip(".")
    if "://" in value or "/" in value:
        raise ValueError(f"'{value}' is not a domain name: write it without scheme or path, e.g. \"vendor.example.org\"")
    if not _DOMAIN.match(value):
        raise ValueError(f"'{value}' is not a domain name")
    return value


def _aws_account_id(value: str) -> str:
    value = value.strip()
    if not re.fullmatch(r"[0-9]{12}", value):
        raise ValueError(f"'{value}' is not an AWS account id (12 digits, as a string: \"444455556666\")")
    return value


def _canonical_id(value: str) -> str:
    value = value.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError(f"'{value}' is not an S3 canonical user id (64 hexadecimal characters)")
    return value


def _principal(value: str) -> str:
    kind, sep, rest = value.strip().partition(":")
    kind = kind.lower()
    if not sep or kind not in PRINCIPAL_KINDS:
        raise ValueError(f"'{value}' must be written group:<email>, person:<email>, contractor:<domain> "
                         "or principal:<id as the records write it>")
    if kind == "principal":  # any other principal, exactly as its connector names it (uid:1001, an IAM role ARN)
        if not rest.strip():
            raise ValueError(f"'{value}': principal: needs the principal's id, e.g. principal:uid:1001")
        return f"principal:{rest.strip()}"
    return f"{kind}:{_domain(rest) if kind == 'contractor' else _email(rest)}"


IsoDate = Annotated[date, BeforeValidator(_iso_date)]
Email = Annotated[str, AfterValidator(_email)]
Domain = Annotated[str, AfterValidator(_domain)]
Principal = Annotated[str, AfterValidator(_principal)]
Text = Annotated[str, Field(min_length=1)]
AwsAccountId = Annotated[str, AfterValidator(_aws_account_id)]
AwsCanonicalId = Annotated[str, AfterValidator(_canonical_id)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- models ------------------------------------------------------------------------------------


class Contractor(_Model):
    """An approved contractor (委託先)."""

    name: Text
    domains: tuple[Domain, ...] = Field(min_length=1)
    purpose: Text
    contract_end: IsoDate
    responsible: Email
    aws_accounts: tuple[AwsAccountId, ...] = ()   # AWS accounts of the contractor (cross-account trust, bucket grants)
    aws_canonical_ids: tuple[AwsCanonicalId, ...] = ()   # their S3 canonical user ids (grants in bucket ACLs)

    def covers(self, domain: str) -> bool:
        domain = domain.strip().lower().rstrip(".")
        return any(domain == d or domain.endswith("." + d) for d in self.domains)


class ApprovedException(_Model):
    """An approved exception (例外承認) to one rule, for matching resources and/or principals."""

    rule: Text
    resource: Text | None = None       # exact id, or a glob (fnmatch, case-sensitive)
    principal: Text | None = None      # exact, or a glob; compared lower-cased
    reason: Text
    approved_by: Email
    approved_on: IsoDate
    valid_until: IsoDate

    @field_validator("valid_until")
    @classmethod
    def _after_approval(cls, value: date, info: ValidationInfo) -> date:
        approved = info.data.get("approved_on")
        if approved is not None and value < approved:
            raise ValueError(f"{value.isoformat()} is before approved_on ({approved.isoformat()})")
        return value

    @field_validator("principal")
    @classmethod
    def _lower(cls, value: str | None) -> str | None:
        return value.strip().lower() if value is not None else None

    def matches(self, rule_id: str, resource_id: str | None, principal_id: str | None) -> bool:
        if not fnmatchcase(rule_id, self.rule):
            return False
        if self.resource is not None and (resource_id is None or not fnmatchcase(resource_id, self.resource)):
            return False
        if self.principal is not None and (principal_id is None or not fnmatchcase(principal_id.lower(), self.principal)):
            return False
        return True


class Location(_Model):
    """Where one kind of personal information is stored: a connector, narrowed by what is given."""

    connector: Text
    resource_prefix: Text | None = None   # path or id prefix (a shared drive id, a folder path)
    bucket: Text | None = None
    site: Text | None = None


class RegisterEntry(_Model):
    """One line of the personal-information register (個人情報管理台帳)."""

    name: Text
    locations: tuple[Location, ...] = Field(min_length=1)
    allowed: tuple[Principal, ...] = ()
    responsible: Email


class Person(_Model):
    """One roster row."""

    emails: tuple[Email, ...] = Field(min_length=1)
    name: Text
    department: str | None = None
    manager: Email | None = None
    status: Literal["active", "leaver", "contractor"]
    start: IsoDate | None = None
    end: IsoDate | None = Field(default=None, validate_default=True)

    @field_validator("end")
    @classmethod
    def _leaver_end(cls, value: date | None, info: ValidationInfo) -> date | None:
        if value is None and info.data.get("status") == "leaver":
            raise ValueError("required for a leaver: the day they left")
        start = info.data.get("start")
        if value is not None and start is not None and value < start:
            raise ValueError(f"{value.isoformat()} is before start ({start.isoformat()})")
        return value

    @property
    def email(self) -> str:
        return self.emails[0]


# -- the context -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Context:
    contractors: tuple[Contractor, ...] = ()
    exceptions: tuple[ApprovedException, ...] = ()
    register: tuple[RegisterEntry, ...] = ()
    roster: tuple[Person, ...] = ()
    files: tuple[Path, ...] = ()     # the context files that were read
    _by_email: dict[str, Person] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_email", {e: p for p in self.roster for e in p.emails})

    def contractor_for_domain(self, domain: str) -> Contractor | None:
        """The contractor covering ``domain`` (or an email's domain); subdomains count."""
        domain = domain.rsplit("@", 1)[-1]
        return next((c for c in self.contractors if c.covers(domain)), None)

    def exception_for(
        self, rule_id: str, resource_id: str | None = None, principal_id: str | None = None, *, on: date
    ) -> tuple[ApprovedException | None, bool]:
        """``(exception, False)`` if one applies on ``on``; ``(exception, True)`` if only an expired
        one matches (the latest to expire); ``(None, False)`` otherwise. An exception whose
        ``approved_on`` is after ``on`` does not match."""
        expired: ApprovedException | None = None
        for e in self.exceptions:
            if e.approved_on > on or not e.matches(rule_id, resource_id, principal_id):
                continue
            if on <= e.valid_until:
                return e, False
            if expired is None or e.valid_until > expired.valid_until:
                expired = e
        return expired, expired is not None

    def contractor_for_aws_account(self, account_id: str) -> Contractor | None:
        return next((c for c in self.contractors if account_id in c.aws_accounts), None)

    def contractor_for_canonical_id(self, canonical_id: str) -> Contractor | None:
        canonical_id = canonical_id.lower()
        return next((c for c in self.contractors if canonical_id in c.aws_canonical_ids), None)

    def person_by_email(self, email: str) -> Person | None:
        return self._by_email.get(email.strip().lower())


# -- loading -----------------------------------------------------------------------------------


def load_context(config_dir: Path, *, connector_ids: set[str] | None = None) -> Context:
    """Read whichever of the four files exist in ``config_dir``; raise :class:`ConfigError`
    listing every problem. ``connector_ids``: when given, register locations must name one."""
    config_dir = Path(config_dir)
    problems: list[ConfigProblem] = []
    files: list[Path] = []
    texts: dict[str, str] = {}

    def tables(name: str, table: str, model: type[_Model]) -> list[tuple[int, Any]]:
        path = config_dir / name
        if not path.is_file():
            return []
        files.append(path)
        try:
            data, text = read_toml(path)
        except ConfigError as exc:
            problems.extend(exc.problems)
            return []
        out, got = _load_tables(path, data, text, table, model, problems)
        texts[name] = text
        return list(zip(out, got))

    contractors_found = tables(CONTRACTORS_FILE, "contractor", Contractor)
    exceptions_found = tables(EXCEPTIONS_FILE, "exception", ApprovedException)
    register_found = tables(REGISTER_FILE, "entry", RegisterEntry)

    contractors_file = config_dir / CONTRACTORS_FILE
    # a domain, account or canonical id names one contractor: listed twice, a grant's contractor is ambiguous
    for key, what in (("domains", "domain"), ("aws_accounts", "AWS account"), ("aws_canonical_ids", "canonical id")):
        seen: dict[str, str] = {}
        for i, c in contractors_found:
            for j, value in enumerate(getattr(c, key)):
                if value in seen:
                    problems.append(ConfigProblem(
                        contractors_file, f"contractor[{i}].{key}[{j}]", f"{what} '{value}' is already listed for {seen[value]}",
                        find_line(texts[CONTRACTORS_FILE], (i, key), array_table="contractor"),
                    ))
                else:
                    seen[value] = f"contractor[{i}] ({c.name})"

    from evidence.findings.model import RULES  # the rule ids an exception may name

    for i, e in exceptions_found:
        if not any(fnmatchcase(rule, e.rule) for rule in RULES):
            problems.append(ConfigProblem(
                config_dir / EXCEPTIONS_FILE, f"exception[{i}].rule",
                f"'{e.rule}' matches no rule (rules: {', '.join(RULES)})",
                find_line(texts[EXCEPTIONS_FILE], (i, "rule"), array_table="exception"),
            ))

    register_file = config_dir / REGISTER_FILE
    have_contractors = contractors_file.is_file()
    contractor_domains = {d for _, c in contractors_found for d in c.domains}
    for i, entry in register_found:
        text = texts[REGISTER_FILE]
        if connector_ids is not None:
            for j, loc in enumerate(entry.locations):
                if loc.connector not in connector_ids:
                    known = ", ".join(sorted(connector_ids)) or "none"
                    problems.append(ConfigProblem(
                        register_file, f"entry[{i}].locations[{j}].connector",
                        f"no connector with id '{loc.connector}' (configured: {known})",
                        find_line(text, (i, "locations"), array_table="entry"),
                    ))
        if have_contractors:
            for j, principal in enumerate(entry.allowed):
                kind, _, domain = principal.partition(":")
                if kind == "contractor" and domain not in contractor_domains:
                    problems.append(ConfigProblem(
                        register_file, f"entry[{i}].allowed[{j}]", f"'{domain}' is not a domain of any contractor in {CONTRACTORS_FILE}",
                        find_line(text, (i, "allowed"), array_table="entry"),
                    ))

    roster: list[Person] = []
    roster_path = config_dir / ROSTER_FILE
    if roster_path.is_file():
        files.append(roster_path)
        roster = _load_roster(roster_path, problems)

    if problems:
        raise ConfigError(problems)
    return Context(
        contractors=tuple(c for _, c in contractors_found),
        exceptions=tuple(e for _, e in exceptions_found),
        register=tuple(r for _, r in register_found),
        roster=tuple(roster),
        files=tuple(files),
    )


def _load_tables(
    path: Path, data: dict[str, Any], text: str, table: str, model: type[_Model], problems: list[ConfigProblem]
) -> tuple[list[int], list[Any]]:
    """Validate each ``[[table]]``; return the indexes and models of the valid ones."""
    for key in data:
        if key != table:
            problems.append(ConfigProblem(path, key, f"unknown key (this file holds [[{table}]] tables)", find_line(text, (key,))))
    items = data.get(table, [])
    if not isinstance(items, list) or not all(isinstance(t, dict) for t in items):
        problems.append(ConfigProblem(path, table, f"write each one as a [[{table}]] table", find_line(text, (table,))))
        return [], []
    indexes, models = [], []
    for i, item in enumerate(items):
        try:
            models.append(model.model_validate(item))
            indexes.append(i)
        except ValidationError as exc:
            problems.extend(pydantic_problems(exc, path, text, f"{table}[{i}]", (i,), array_table=table))
    return indexes, models


def _load_roster(path: Path, problems: list[ConfigProblem]) -> list[Person]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        problems.append(ConfigProblem(path, "", f"not UTF-8 text ({exc.reason} at byte {exc.start}); save the CSV as UTF-8"))
        return []
    except OSError as exc:
        problems.append(ConfigProblem(path, "", f"cannot read: {exc.strerror}"))
        return []
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    if header is None:
        return []
    header = [h.strip().lower() for h in header]
    bad = False
    for h in header:
        if h not in ROSTER_COLUMNS:
            problems.append(ConfigProblem(path, h, f"unknown column (columns: {', '.join(ROSTER_COLUMNS)})", 1))
            bad = True
    for h in ("email", "name", "status"):
        if h not in header:
            problems.append(ConfigProblem(path, h, "required column is missing", 1))
            bad = True
    if bad:
        return []
    people: list[Person] = []
    seen: dict[str, int] = {}
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            problems.append(ConfigProblem(path, "", f"not valid CSV: {exc}", line))
            break
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            problems.append(ConfigProblem(path, "", f"{len(row)} cells, but the header has {len(header)} columns", line))
            continue
        cells = {h: (v.strip() or None) for h, v in zip(header, row)}
        values: dict[str, Any] = {k: v for k, v in cells.items() if k != "email" and v is not None}
        values["emails"] = [e for e in (cells["email"] or "").split(";") if e.strip()]
        try:
            person = Person.model_validate(values)
        except ValidationError as exc:
            errors = exc.errors()
            item_error = any(e["loc"][:1] == ("emails",) and len(e["loc"]) > 1 for e in errors)
            for err in errors:
                if item_error and err["loc"] == ("emails",):
                    continue   # a bad address also leaves the list short; report the address only
                head = err["loc"][0] if err["loc"] else ""
                column = "email" if head == "emails" else str(head)
                msg = "required" if err["type"] in ("missing", "too_short") else err["msg"].removeprefix("Value error, ")
                problems.append(ConfigProblem(path, column, msg, line))
            continue
        for email in person.emails:
            if email in seen:
                problems.append(ConfigProblem(path, "email", f"'{email}' is already on line {seen[email]}", line))
            else:
                seen[email] = line
        people.append(person)
    return people


__all__ = [
    "ApprovedException", "Context", "Contractor", "Location", "Person", "RegisterEntry", "load_context",
    "CONTRACTORS_FILE", "EXCEPTIONS_FILE", "REGISTER_FILE", "ROSTER_FILE", "ROSTER_COLUMNS",
]

"""The record model: five streams every connector maps its source onto.

A connector yields :class:`Record` objects (one of the four normalised streams) and
:class:`RawPage` objects (one API response page, kept as the system said it). The typed
builders below (:class:`Principal`, :class:`Membership`, :class:`Resource`, :class:`Grant`)
make the ``data`` of a record; :func:`canonical_json` is the one serialisation used for
records, run.json and digests, so two runs that saw the same state write the same bytes.

Timestamps are UTC ISO 8601 strings (``2026-11-26T03:00:00Z``): :func:`utc_iso` makes them.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
import math
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Callable, ClassVar, Literal, Mapping

STREAMS: tuple[str, ...] = ("principals", "memberships", "resources", "grants")

PrincipalKind = Literal[
    "user", "group", "service_account", "guest", "role", "domain", "anyone", "unknown"
]
Role = Literal["owner", "editor", "commenter", "viewer", "admin", "other"]
Via = Literal["direct", "inherited", "group", "link", "default_acl"]
LinkScope = Literal["anyone", "organization", "specific"]


def utc_iso(value: datetime | float | int | None) -> str | None:
    """UTC ISO 8601 with a ``Z`` suffix; seconds precision unless sub-second data exists."""
    if value is None:
        return None
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        value = datetime.fromtimestamp(value, tz=timezone.utc)
    elif value.tzinfo is None:
        raise ValueError(f"naive datetime {value!r}: pass an aware datetime")
    value = value.astimezone(timezone.utc)
    if value.microsecond:
        return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_utc(text: Any) -> datetime | None:
    """The inverse of :func:`utc_iso`: an aware UTC datetime, or None for None, a non-string or
    text that is not ISO 8601. A time without an offset is taken to be UTC."""
    if not isinstance(text, str) or not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value.astimezone(timezone.utc) if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _canonical_json_reference(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _make_fast_canonical_json() -> Callable[[Any], str] | None:
    """:func:`_canonical_json_reference` without its per-call set-up, or None (no C encoder).

    ``json.dumps`` with options builds a ``JSONEncoder`` and a C encoder on every call, which
    costs more than encoding a small record; this builds the C encoder once, exactly as
    ``JSONEncoder.iterencode`` would for these options, except that it keeps no ``markers``
    (the circular-reference check: a dict shared between calls would not be thread-safe). Only
    valid data gets a result from it: on any error (circular data included, which overflows the
    recursion limit instead) the reference is called, so the exception is the reference's own.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    encode_str = json.encoder.encode_basestring  # the C version when the accelerator exists
    if make is None:
        return None
    options = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    try:
        c_encode = make(
            None, options.default, encode_str, None, options.key_separator, options.item_separator,
            options.sort_keys, options.skipkeys, options.allow_nan,
        )
        c_encode({"a": [1, "é", None, True, 1.5]}, 0)
    except Exception:  # pragma: no cover - a json module with another C signature
        return None
    join = "".join
    reference = _canonical_json_reference

    def fast(obj: Any) -> str:
        if type(obj) is str:
            return encode_str(obj)
        try:
            return join(c_encode(obj, 0))
        except Exception:
            return reference(obj)  # raises the reference's exception (or, never seen, returns its text)

    return fast


_CANONICAL_DOC = """Sorted keys, no insignificant white space, non-ASCII kept (UTF-8 on disk).

    Exactly ``json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
    allow_nan=False)``, text and exceptions alike (a test compares), only faster.
    """


def canonical_json(obj: Any) -> str:  # the fallback when there is no C encoder
    return _canonical_json_reference(obj)


_fast_canonical_json = _make_fast_canonical_json()
if _fast_canonical_json is not None:
    _fast_canonical_json.__name__ = _fast_canonical_json.__qualname__ = "canonical_json"
    canonical_json = _fast_canonical_json  # type: ignore[assignment]
canonical_json.__doc__ = _CANONICAL_DOC


class _Builder(ABC):
    """Shared ``to_data``: drops ``None``-free empties consistently and keeps the field order stable."""

    __slots__ = ()
    stream: ClassVar[str]

    def to_data(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    def record(self) -> "Record":
        return Record(self.stream, self.key(), self.to_data())

    @abstractmethod
    def key(self) -> str:
        """The record's key, unique within its stream."""


@dataclass(frozen=True, slots=True)
class Principal(_Builder):
    """A user, group, service account, guest, role, or a pseudo-principal (``domain:<d>``, ``anyone``)."""

    stream: ClassVar[str] = "principals"
    id: str
    kind: PrincipalKind
    email: str | None = None
    display_name: str | None = None
    domain: str | None = None
    external: bool | None = None
    enabled: bool | None = None
    mfa: bool | None = None
    admin: bool | None = None
    roles: tuple[str, ...] = ()
    last_sign_in: str | None = None
    created: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        return self.id


@dataclass(frozen=True, slots=True)
class Membership(_Builder):
    """Group → member."""

    stream: ClassVar[str] = "memberships"
    group_id: str
    member_id: str
    member_kind: PrincipalKind
    role: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        return f"{self.group_id}|{self.member_id}"


@dataclass(frozen=True, slots=True)
class Resource(_Builder):
    """A file, folder, shared drive, site, drive, bucket, account or role."""

    stream: ClassVar[str] = "resources"
    id: str
    kind: str
    name: str | None = None
    path: str | None = None
    owners: tuple[str, ...] = ()
    size: int | None = None
    modified: str | None = None
    shared: bool | None = None
    web_url: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        return self.id


@dataclass(frozen=True, slots=True)
class Grant(_Builder):
    """Principal P has role R on resource X, via V."""

    stream: ClassVar[str] = "grants"
    resource_id: str
    principal_id: str
    principal_kind: PrincipalKind
    role: Role
    raw_role: str
    via: Via = "direct"
    principal_email: str | None = None
    principal_domain: str | None = None
    external: bool | None = None
    link_scope: LinkScope | None = None
    expiry: str | None = None
    inherited_from: str | None = None
    grant_id: str | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        parts = [self.resource_id, self.principal_id, self.via, self.raw_role]
        if self.grant_id:
            parts.append(self.grant_id)
        return "|".join(parts)


BUILDERS: dict[str, type[_Builder]] = {
    b.stream: b for b in (Principal, Membership, Resource, Grant)
}


@dataclass(frozen=True, slots=True)
class Record:
    """One normalised record: ``stream`` is one of :data:`STREAMS`, ``key`` unique within it."""

    stream: str
    key: str
    data: Mapping[str, Any]

    def line(self) -> str:
        """The JSONL line written to ``records/<stream>.jsonl.gz`` (key first, then the record)."""
        return canonical_json({"key": self.key, "record": self.data})


@dataclass(frozen=True, slots=True)
class RawPage:
    """One API response page, unaltered but for secrets removed."""

    endpoint: str
    params: Mapping[str, Any]
    page: int
    response: Any
    status: int = 200
    received: str | None = None

    def line(self) -> str:
        return canonical_json(
            {
                "endpoint": self.endpoint,
                "params": self.params,
                "page": self.page,
                "status": self.status,
                "received": self.received,
                "response": self.response,
            }
        )


def parse_line(line: str | bytes) -> tuple[str, dict[str, Any]]:
    """Inverse of :meth:`Record.line`: ``(key, data)``."""
    obj = json.loads(line)
    return obj["key"], obj["record"]


def field_names(stream: str) -> tuple[str, ...]:
    return tuple(f.name for f in fields(BUILDERS[stream]))  # type: ignore[arg-type]

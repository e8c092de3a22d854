"""What the API parts share: the request context, digest-derived ids, page tokens and sizes."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sandbox.google.discovery import _Method
from sandbox.google.errors import _invalid
from sandbox.google.fields import ALL
from sandbox.org import Person
from sandbox.server import Request


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _digest(*parts: Any, size: int = 8) -> bytes:
    return hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=size).digest()


def _etag(*parts: Any) -> str:
    return '"' + base64.urlsafe_b64encode(_digest(*parts, size=15)).decode().rstrip("=") + '"'


def _num(*parts: Any, digits: int = 16) -> str:
    return str(int.from_bytes(_digest(*parts), "big") % (9 * 10 ** (digits - 1)) + 10 ** (digits - 1))


@dataclass
class _Token:
    value: str
    subject: int | None            # person index, or None for the service account itself
    email: str
    scopes: frozenset[str]
    expires: float                 # time.monotonic()


@dataclass
class _Ctx:
    req: Request
    method: _Method
    path: dict[str, str]
    token: _Token
    caller: Person | None
    mask: Any = ALL
    fields: str = ""

    def arg(self, name: str, default: str | None = None) -> str | None:
        return self.req.arg(name, default)

    def flag(self, *names: str) -> bool:
        for name in names:
            v = self.req.arg(name)
            if v is not None and v.lower() in ("true", "1"):
                return True
        return False


def _page(it: Iterable[tuple[Any, Any]], size: int) -> tuple[list[Any], Any]:
    """Take ``size`` items of ``(cursor, item)``; return the items and the cursor of the next one."""
    items: list[Any] = []
    for cursor, item in it:
        if len(items) == size:
            return items, cursor
        items.append(item)
    return items, None


class Pages:
    """Opaque page tokens (a kind tag plus a cursor) and page-size parameters."""

    @staticmethod
    def _tok(kind: str, *values: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps([kind, *values], separators=(",", ":")).encode()).decode().rstrip("=")

    @staticmethod
    def _untok(token: str | None, kind: str, n: int, location: str = "pageToken") -> list[Any] | None:
        if token is None or token == "":
            return None
        try:
            data = json.loads(_b64d(token))
            if not isinstance(data, list) or data[0] != kind or len(data) != n + 1:
                raise ValueError
            return data[1:]
        except (ValueError, TypeError, IndexError, UnicodeDecodeError):
            raise _invalid(location) from None

    @classmethod
    def _start(cls, ctx: _Ctx, kind: str) -> int:
        """The offset a one-position ``pageToken`` of ``kind`` resumes from (0 without a token)."""
        got = cls._untok(ctx.arg("pageToken"), kind, 1)
        return got[0] if got else 0

    @staticmethod
    def _size(ctx: _Ctx, name: str, default: int, maximum: int, coerce: bool) -> int:
        raw = ctx.arg(name)
        if raw is None or raw == "":
            return default
        try:
            value = int(raw)
        except ValueError:
            raise _invalid(name, f"Invalid value '{raw}'. Values must be integers") from None
        if value < 1:
            raise _invalid(name, f"Invalid value '{raw}'. Values must be within the range: [1, {maximum}]")
        if value > maximum:
            if coerce:
                return maximum
            raise _invalid(name, f"Invalid value '{raw}'. Values must be within the range: [1, {maximum}]")
        return value

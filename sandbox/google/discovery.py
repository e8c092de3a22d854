"""Discovery documents packaged with google-api-python-client, and the route table built from them.

Every method of ``drive.v3`` and ``admin.directory_v1`` is routed by its real path template, with
its scopes, parameters and response schema, so what the stand-in serves and what it refuses
(scopes, ``fields=``) follows the same documents the clients are built from.
"""

from __future__ import annotations

import importlib.resources
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import unquote


@cache
def discovery(name: str) -> dict[str, Any]:
    """A packaged discovery document (``drive.v3`` or ``admin.directory_v1``)."""
    path = importlib.resources.files("googleapiclient") / "discovery_cache" / "documents" / f"{name}.json"
    return json.loads(path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class _Method:
    api: str                       # drive | directory
    name: str                      # files.list
    http: str
    template: str                  # /drive/v3/files/{fileId}
    regex: re.Pattern[str]
    literals: int
    scopes: frozenset[str]
    params: dict[str, Any]
    response: str | None           # response schema name
    doc: str                       # discovery document name

    @property
    def endpoint(self) -> str:
        return f"{self.api}.{self.name}"


def _walk_methods(resources: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    for rname, res in resources.items():
        for mname, m in res.get("methods", {}).items():
            yield f"{prefix}{rname}.{mname}", m
        yield from _walk_methods(res.get("resources", {}), f"{prefix}{rname}.")


@cache
def _routes() -> tuple[dict[tuple[str, int], list[_Method]], list[_Method]]:
    """Route table of every method of both documents, keyed by (HTTP method, segment count)."""
    fixed: dict[tuple[str, int], list[_Method]] = {}
    greedy: list[_Method] = []
    for api, name in (("drive", "drive.v3"), ("directory", "admin.directory_v1"), ("reports", "admin.reports_v1")):
        doc = discovery(name)
        prefix = "/" + doc["servicePath"]
        for mname, m in _walk_methods(doc["resources"]):
            template = prefix + m["path"]
            pattern, literals, is_greedy = "", 0, False
            for piece in re.split(r"(\{\+?[^}]+\})", template):
                if piece.startswith("{+"):
                    pattern += f"(?P<{_group_name(piece[2:-1])}>.+)"
                    is_greedy = True
                elif piece.startswith("{"):
                    pattern += f"(?P<{_group_name(piece[1:-1])}>[^/]+)"
                else:
                    pattern += re.escape(piece)
                    literals += piece.count("/") + len(piece)
            method = _Method(
                api=api, name=mname, http=m["httpMethod"], template=template, regex=re.compile(f"^{pattern}$"),
                literals=literals, scopes=frozenset(m.get("scopes", ())), params=m.get("parameters", {}),
                response=(m.get("response") or {}).get("$ref"), doc=name,
            )
            if is_greedy:
                greedy.append(method)
            else:
                fixed.setdefault((method.http, template.count("/")), []).append(method)
    for methods in fixed.values():
        methods.sort(key=lambda x: -x.literals)
    greedy.sort(key=lambda x: -x.literals)
    return fixed, greedy


def _group_name(param: str) -> str:
    return re.sub(r"\W", "_", param)


def route(method: str, path: str) -> tuple[_Method, dict[str, str]] | None:
    fixed, greedy = _routes()
    for m in fixed.get((method, path.count("/")), ()):
        match = m.regex.match(path)
        if match:
            return m, {k: unquote(v) for k, v in match.groupdict().items()}
    for m in greedy:
        if m.http == method:
            match = m.regex.match(path)
            if match:
                return m, {k: unquote(v) for k, v in match.groupdict().items()}
    return None

"""Partial responses: Google's ``fields=`` grammar, applying a mask, checking it against a schema."""

from __future__ import annotations

import json
from typing import Any

#: The field set each Drive method returns when the request has no ``fields`` parameter.
#: Directory methods return the whole resource.
DEFAULT_FIELDS = {
    "drive.files.list": "kind,incompleteSearch,nextPageToken,files(id,name,mimeType,kind)",
    "drive.files.get": "kind,id,name,mimeType",
    "drive.permissions.list": "kind,nextPageToken,permissions(kind,id,type,role)",
    "drive.permissions.get": "kind,id,type,role",
    "drive.drives.list": "kind,nextPageToken,drives(kind,id,name)",
    "drive.drives.get": "kind,id,name",
    "drive.changes.getStartPageToken": "kind,startPageToken",
    "drive.changes.list": (
        "kind,nextPageToken,newStartPageToken,"
        "changes(kind,type,changeType,time,removed,fileId,driveId,file(kind,id,name,mimeType))"
    ),
}

ALL = None  # a mask leaf: everything below


class FieldsError(ValueError):
    pass


def parse_fields(text: str) -> dict[str, Any]:
    """Parse Google's partial-response grammar (``a,b(c,d),e/f,*``) into a nested mask."""
    pos = 0
    s = text

    def skip_ws() -> None:
        nonlocal pos
        while pos < len(s) and s[pos] in " \t\r\n":
            pos += 1

    def name() -> str:
        nonlocal pos
        skip_ws()
        start = pos
        while pos < len(s) and (s[pos].isalnum() or s[pos] in "_*$.-@#"):
            pos += 1
        if start == pos:
            raise FieldsError(s[start:] or s)
        return s[start:pos]

    def items() -> dict[str, Any]:
        nonlocal pos
        tree: dict[str, Any] = {}
        while True:
            path = [name()]
            skip_ws()
            while pos < len(s) and s[pos] == "/":
                pos += 1
                path.append(name())
                skip_ws()
            sub: dict[str, Any] | None = ALL
            if pos < len(s) and s[pos] == "(":
                pos += 1
                sub = items()
                skip_ws()
                if pos >= len(s) or s[pos] != ")":
                    raise FieldsError(s)
                pos += 1
                skip_ws()
            _merge_path(tree, path, sub)
            if pos < len(s) and s[pos] == ",":
                pos += 1
                continue
            return tree

    tree = items()
    skip_ws()
    if pos != len(s):
        raise FieldsError(s[pos:])
    return tree


def _merge_path(tree: dict[str, Any], path: list[str], sub: dict[str, Any] | None) -> None:
    node = tree
    for i, key in enumerate(path):
        last = i == len(path) - 1
        if key in node and node[key] is ALL:
            return  # already everything below
        if last:
            if sub is ALL:
                node[key] = ALL
            else:
                existing = node.setdefault(key, {})
                for k, v in sub.items():
                    _merge_path(existing, [k], v)
        else:
            node = node.setdefault(key, {})


def apply_fields(value: Any, mask: dict[str, Any] | None) -> Any:
    if mask is ALL or type(value) is _Pre:
        return value
    if isinstance(value, list):
        return [apply_fields(v, mask) for v in value]
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    star = mask.get("*", False) if "*" in mask else False
    if "*" in mask:
        for k, v in value.items():
            out[k] = apply_fields(v, star)
    for k, sub in mask.items():
        if k != "*" and k in value:
            out[k] = apply_fields(value[k], sub)
    return out


class _Pre(list):
    """A JSON array whose elements are already encoded (and already filtered by ``fields``)."""


def _sub_mask(mask: Any, key: str) -> Any:
    """The part of ``mask`` that applies below ``key``; ``False`` when ``key`` is not selected."""
    if mask is ALL:
        return ALL
    if key in mask:
        return mask[key]
    if "*" in mask:
        return mask["*"]
    return False


def _dumps(body: dict[str, Any]) -> bytes:
    if not any(type(v) is _Pre for v in body.values()):
        return json.dumps(body, ensure_ascii=False).encode()
    out = []
    for k, v in body.items():
        if type(v) is _Pre:
            out.append(json.dumps(k).encode() + b": [" + b", ".join(v) + b"]")
        else:
            out.append(json.dumps(k, ensure_ascii=False).encode() + b": " + json.dumps(v, ensure_ascii=False).encode())
    return b"{" + b", ".join(out) + b"}"


def _validate_fields(tree: dict[str, Any] | None, schema: dict[str, Any] | None, schemas: dict[str, Any]) -> str | None:
    """The first field name the schema does not have, or None."""
    if tree is ALL or schema is None:
        return None
    schema = _resolve(schema, schemas)
    if schema.get("type") == "array":
        return _validate_fields(tree, schema.get("items"), schemas)
    props = schema.get("properties")
    extra = schema.get("additionalProperties")
    if props is None and extra is None:
        return None if schema.get("type") in ("object", "any", None) else next(iter(tree), None)
    for key, sub in tree.items():
        if key == "*":
            continue
        if props and key in props:
            bad = _validate_fields(sub, props[key], schemas)
        elif extra is not None:
            bad = _validate_fields(sub, extra, schemas)
        else:
            return key
        if bad:
            return bad
    return None


def _resolve(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = schemas[schema["$ref"]]
    return schema

"""aws_iam's mapping helpers: credential-report rows, policy attachments and their records."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

from connectors._aws import ADMINISTRATOR_ACCESS, AwsAccount, aws_time, document_level, statements
from connectors.base import Organization
from evidence.model import Grant, Record, Resource, canonical_json

DOC_MAX = 8000  # characters of a policy document kept in a record (all of it is in the raw pages)
ROOT_ROW = "<root_account>"


@dataclass
class Attached:
    """One policy a principal holds: its name, ARN (None: inline), level and type."""

    name: str
    arn: str | None
    level: str
    kind: str                # aws_managed | customer_managed | inline
    available: bool = True


@dataclass
class State:
    """What one account's read keeps between passes (bounded by IAM's quotas: groups, policies, the
    credential report's parsed rows)."""

    account: AwsAccount
    internal: frozenset[str]
    org: Organization
    report: dict[str, dict[str, Any]] | None = None             # user ARN -> credentials (parsed row)
    docs: dict[str, Any] = field(default_factory=dict)         # policy ARN -> document (None: unavailable)
    groups: dict[str, tuple[str, list[Attached]]] = field(default_factory=dict)  # name -> (arn, policies)
    seen: set[str] = field(default_factory=set)                 # extra principals already yielded


def attached(managed: Any, inline: Any, docs: dict[str, Any]) -> list[Attached]:
    """The policies of a user, group or role, each with the level its allowed actions grant."""
    out = []
    for p in managed or []:
        arn = p.get("PolicyArn")
        doc = docs.get(arn)
        aws = ":iam::aws:policy/" in (arn or "")
        admin_by_name = aws and str(arn).endswith(f":policy/{ADMINISTRATOR_ACCESS}")
        kind = "aws_managed" if aws else "customer_managed"
        if doc is None:
            out.append(Attached(p.get("PolicyName") or arn, arn, "admin" if admin_by_name else "other", kind, False))
        else:
            out.append(Attached(p.get("PolicyName") or arn, arn, "admin" if admin_by_name else document_level(doc), kind))
    for p in inline or []:
        out.append(Attached(p.get("PolicyName"), None, document_level(p.get("PolicyDocument")), "inline"))
    return out


def parse_credential_report(text: str) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    """The report's CSV as ``({user ARN: credentials}, root credentials or None)``; only parsed rows are kept."""
    users: dict[str, dict[str, Any]] = {}
    root = None
    for row in csv.DictReader(io.StringIO(text)):
        if row.get("user") == ROOT_ROW:
            root = creds_from_row(row)
        else:
            users[row.get("arn") or ""] = creds_from_row(row)
    return users, root



def na(value: Any) -> Any:
    return None if value in (None, "", "N/A", "no_information", "not_supported") else value


def _bool(value: Any) -> bool | None:
    return {"true": True, "false": False}.get(str(value).lower())


def creds_from_row(row: dict[str, Any]) -> dict[str, Any]:
    """A credential-report row as facts (times as UTC ISO text; AWS's "N/A" markers as None)."""
    keys = []
    for n in (1, 2):
        rotated = row.get(f"access_key_{n}_last_rotated")
        if na(rotated) is None:
            continue
        keys.append({"slot": n, "active": _bool(row.get(f"access_key_{n}_active")) is True, "created": aws_time(rotated),
                     "last_used": aws_time(row.get(f"access_key_{n}_last_used_date")),
                     "last_used_service": na(row.get(f"access_key_{n}_last_used_service")),
                     "last_used_region": na(row.get(f"access_key_{n}_last_used_region"))})
    certs = sum(_bool(row.get(f"cert_{n}_active")) is True for n in (1, 2))
    return {"console": _bool(row.get("password_enabled")), "password_last_used": aws_time(row.get("password_last_used")),
            "password_last_changed": aws_time(row.get("password_last_changed")), "mfa": _bool(row.get("mfa_active")) is True,
            "access_keys": keys, "certificates_active": certs, "created": aws_time(row.get("user_creation_time")),
            "source": "credential report"}


def latest(creds: dict[str, Any] | None) -> str | None:
    if not creds:
        return None
    times = [creds.get("password_last_used")] + [k.get("last_used") for k in creds.get("access_keys") or []]
    times = [t for t in times if t]
    return max(times) if times else None


def doc_attr(doc: Any) -> dict[str, Any]:
    if doc is None:
        return {"document": None, "document_available": False}
    text = canonical_json(doc)
    if len(text) <= DOC_MAX:
        return {"document": doc, "document_available": True}
    return {"document": None, "document_available": True,
            "document_omitted": f"{len(text)} characters, {len(statements(doc))} statements: see the raw pages"}


def policy_resource(p: dict[str, Any], doc: Any, *, aws_managed: bool) -> Record:
    return Resource(
        id=p["Arn"], kind="policy", name=p.get("PolicyName"), path=p.get("Path"), modified=aws_time(p.get("UpdateDate")),
        attributes={"aws_managed": aws_managed, "policy_id": p.get("PolicyId"), "default_version": p.get("DefaultVersionId"),
                    "attachment_count": p.get("AttachmentCount"),
                    "permissions_boundary_usage_count": p.get("PermissionsBoundaryUsageCount"),
                    "description": p.get("Description"), "created": aws_time(p.get("CreateDate")), **doc_attr(doc)},
    ).record()


def attached_attr(x: Attached) -> dict[str, Any]:
    return {"name": x.name, "arn": x.arn, "type": x.kind, "level": x.level}


def policy_grant(a: AwsAccount, holder: str, kind: str, x: Attached, *, group: str | None = None) -> Record:
    base = x.arn or "inline"
    attributes: dict[str, Any] = {"policy_arn": x.arn, "policy_type": x.kind, "account_id": a.account_id}
    if not x.available:
        attributes["document_available"] = False
    if group:
        attributes["group"] = group
    return Grant(
        resource_id=a.resource_id, principal_id=holder, principal_kind=kind, role=x.level,  # type: ignore[arg-type]
        raw_role=x.name, via="group" if group else "direct", external=False, inherited_from=group,
        grant_id=f"{group}|{base}" if group else base, attributes=attributes,
    ).record()

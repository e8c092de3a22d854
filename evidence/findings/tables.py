"""The report's row streams: every account, and every grant that reaches beyond the organisation.

Rows are dicts keyed by :data:`ACCOUNT_COLUMNS` / :data:`SHARING_COLUMNS`, produced while the
bags are read (nothing is collected in a list), for the report's accounts.csv and sharing.csv.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterator, Sequence

from collector.context import Context
from evidence.findings import rules as R
from evidence.findings.model import ACCOUNT_COLUMNS, SHARING_COLUMNS, JudgedBundle, Settings
from evidence.vault import Vault


def iter_accounts(vault: Vault, bundles: Sequence[JudgedBundle], context: Context) -> Iterator[dict[str, Any]]:
    """One row per account (user, guest, service account) of every identity source judged."""
    for b in bundles:
        source = R.Source(vault, b)
        if source.type not in R.IDENTITY_TYPES:
            continue
        for key, p in source.records("principals"):
            if not R.is_account(source, p):
                continue
            email = R.email_of(p["id"], p.get("email"))
            person = context.person_by_email(email) if email else None
            row = {
                "connector_id": b.connector_id, "principal": p["id"], "kind": p.get("kind"), "email": email,
                "display_name": p.get("display_name"), "enabled": R.active(source, p), "mfa": p.get("mfa"),
                "admin": p.get("admin"), "external": p.get("external"), "last_sign_in": R.last_activity(source, p),
                "created": p.get("created"), "on_roster": person is not None if context.roster else None,
                "roster_name": person.name if person else None,
                "roster_department": person.department if person else None,
                "roster_status": person.status if person else None,
                "roster_end": person.end.isoformat() if person and person.end else None,
                "bag": b.bag, "record_key": key,
            }
            assert tuple(row) == ACCOUNT_COLUMNS
            yield row


def iter_sharing(vault: Vault, bundles: Sequence[JudgedBundle], context: Context, *, as_of: datetime,
                 domains: Sequence[str]) -> Iterator[dict[str, Any]]:
    """One row per live grant made where it is listed (not inherited) whose audience is not internal
    people: anyone, a domain-wide or organisation link, external people or accounts."""
    world = R.World(as_of=as_of, settings=Settings(), context=context, domains=tuple(domains))
    for b in bundles:
        source = R.Source(vault, b)
        # the rows' resources first (few: only what is shared beyond the organisation), then their
        # names from one pass over resources, then the rows: memory follows the rows, not the bag
        wanted = {g["resource_id"] for _k, g in source.records("grants") if _audience(g, world) is not None}
        if not wanted:
            continue
        names = {r["id"]: (r.get("name"), r.get("kind")) for _k, r in source.records("resources") if r["id"] in wanted}
        for key, g in source.records("grants"):
            found = _audience(g, world)
            if found is None:
                continue
            audience, aud = found
            name, kind = names.get(g["resource_id"], (None, None))
            row = {
                "connector_id": b.connector_id, "resource": g["resource_id"], "resource_name": name,
                "resource_kind": kind, "principal": g["principal_id"], "principal_kind": g.get("principal_kind"),
                "email": R.email_of(g["principal_id"], g.get("principal_email")), "domain": R.domain_of(g),
                "role": g.get("role"), "raw_role": g.get("raw_role"), "via": g.get("via"),
                "link_scope": g.get("link_scope"), "expiry": g.get("expiry"), "audience": audience,
                "contractor": aud.contractor.name if aud.contractor else None, "bag": b.bag, "record_key": key,
            }
            assert tuple(row) == SHARING_COLUMNS
            yield row


def _audience(g: dict[str, Any], world: R.World) -> tuple[str, R.Audience] | None:
    """The sharing.csv audience of a grant, or None when it is not a row (internal people,
    inherited, expired)."""
    if g.get("inherited_from") or not R.live(g, world):
        return None
    aud = R.audience(g, world)
    if aud.kind == "internal":
        if g.get("via") != "link" and not str(g["principal_id"]).startswith("domain:"):
            return None
        return "organization", aud
    if aud.kind == "unknown":
        return ("external", aud) if g.get("external") else None
    return aud.kind, aud

"""Entra ID objects → records: the principal-id scheme and one builder per record kind.

Both modes (full listing, and the base bag plus delta changes) build every record through these
functions, from Graph-shaped dicts — a base record is turned back into the Graph fields it was
made from (:func:`user_from_record`, :func:`group_from_record`) — so the two modes write the
same bytes for the same state.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime, timezone
from typing import Any, Iterable, NamedTuple

from connectors.base import Organization
from evidence.model import Grant, Membership, Principal, Record, Resource, utc_iso

USER_TYPE = "#microsoft.graph.user"
GROUP_TYPE = "#microsoft.graph.group"
SP_TYPE = "#microsoft.graph.servicePrincipal"
NEVER = ("0001-01-01",)  # Graph's "no value" timestamp


# -- ids ------------------------------------------------------------------------------------------


def email_domain(email: str | None) -> str | None:
    return email.rsplit("@", 1)[1].lower() if email and "@" in email else None


def user_email(u: dict[str, Any]) -> str | None:
    """The address a user is known by: ``mail``; for a guest without one, the real address
    encoded in its ``#EXT#`` UPN (``a_b.example#EXT#@tenant`` → ``a@b.example``); else the UPN."""
    mail = (u.get("mail") or "").strip()
    if mail:
        return mail.lower()
    upn = (u.get("userPrincipalName") or "").strip()
    marker = upn.upper().find("#EXT#")
    if marker > 0:
        local = upn[:marker]
        cut = local.rfind("_")
        if cut > 0:
            return (local[:cut] + "@" + local[cut + 1:]).lower()
    return upn.lower() or None


def user_pid(u: dict[str, Any]) -> str:
    email = user_email(u)
    return f"user:{email}" if email else f"user:entra:{u.get('id')}"


def group_pid(g: dict[str, Any]) -> str:
    mail = (g.get("mail") or "").strip()
    if mail and g.get("mailEnabled") is not False:
        return f"group:{mail.lower()}"
    return f"group:entra:{g.get('id')}"


def role_pid(definition_id: str) -> str:
    return f"role:entra:{definition_id}"


def tenant_rid(tenant: str) -> str:
    return f"entra-tenant:{tenant.strip().lower()}"


def user_kind(u: dict[str, Any]) -> str:
    return "guest" if str(u.get("userType") or "").lower() == "guest" else "user"


def external(org: Organization, domain: str | None) -> bool | None:
    internal = org.is_internal_domain(domain)
    return None if internal is None else not internal


class Who(NamedTuple):
    """A directory object as a grant or membership names it."""

    pid: str
    kind: str
    email: str | None
    domain: str | None
    external: bool | None


def who_from_object(obj: dict[str, Any] | None, object_id: str, org: Organization) -> Who:
    """A role assignment's expanded ``principal`` (or a member reference with full fields)."""
    otype = (obj or {}).get("@odata.type", "")
    if obj and otype == USER_TYPE:
        email = user_email(obj)
        domain = email_domain(email)
        return Who(user_pid(obj), user_kind(obj), email, domain, external(org, domain))
    if obj and otype == GROUP_TYPE:
        mail = (obj.get("mail") or "").lower() or None
        domain = email_domain(mail)
        return Who(group_pid(obj), "group", mail, domain, external(org, domain) if mail else None)
    if otype == SP_TYPE:
        return Who(f"service_account:entra:{object_id}", "service_account", None, None, None)
    return Who(f"entra:{object_id}", "unknown", None, None, None)


# -- times ----------------------------------------------------------------------------------------

_FRACTION = re.compile(r"\.(\d{6})\d+")


def gtime(value: str | None) -> str | None:
    """A Graph timestamp as the model's UTC ISO text (``None`` for absent or Graph's year 1)."""
    if not value or value.startswith(NEVER):
        return None
    text = _FRACTION.sub(r".\1", value.replace("Z", "+00:00"))
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return value  # unparseable: kept as Graph said it rather than lost
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return utc_iso(parsed)


def latest(*values: str | None) -> str | None:
    """The latest of some model timestamps (compared as times: text with and without a fraction
    of a second does not sort in time order)."""
    best, best_t = None, None
    for v in values:
        if not v:
            continue
        try:
            t = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            continue
        if best_t is None or t > best_t:
            best, best_t = v, t
    return best


# -- users ----------------------------------------------------------------------------------------


class SignIn(NamedTuple):
    interactive: str | None
    non_interactive: str | None
    successful: str | None


class Mfa(NamedTuple):
    registered: bool | None
    capable: bool | None
    methods: tuple[str, ...]


def signin_from_graph(activity: dict[str, Any] | None) -> SignIn:
    a = activity or {}
    return SignIn(gtime(a.get("lastSignInDateTime")), gtime(a.get("lastNonInteractiveSignInDateTime")),
                  gtime(a.get("lastSuccessfulSignInDateTime")))


def mfa_from_graph(row: dict[str, Any]) -> Mfa:
    reg, cap = row.get("isMfaRegistered"), row.get("isMfaCapable")
    return Mfa(None if reg is None else bool(reg), None if cap is None else bool(cap),
               tuple(sorted(str(m) for m in row.get("methodsRegistered") or [])))


def user_principal(u: dict[str, Any], org: Organization, *, roles: Iterable[str] | None, eligible: Iterable[str],
                   signin: SignIn | None, signin_available: bool, mfa: Mfa | None, mfa_available: bool) -> Principal:
    """``roles`` None: the directory roles could not be read (``admin`` is then unknown)."""
    email = user_email(u)
    domain = email_domain(email)
    enabled = u.get("accountEnabled")
    roles = None if roles is None else sorted(set(roles))
    s = signin or SignIn(None, None, None)
    return Principal(
        id=user_pid(u), kind=user_kind(u), email=email, display_name=u.get("displayName"),  # type: ignore[arg-type]
        domain=domain, external=external(org, domain), enabled=None if enabled is None else bool(enabled),
        mfa=mfa.registered if mfa else None, admin=None if roles is None else bool(roles), roles=tuple(roles or ()),
        last_sign_in=latest(s.interactive, s.non_interactive), created=gtime(u.get("createdDateTime")),
        attributes={
            "object_id": u.get("id"), "upn": u.get("userPrincipalName"), "mail": u.get("mail"),
            "user_type": u.get("userType"), "external_user_state": u.get("externalUserState"),
            "creation_type": u.get("creationType"),
            "mfa_available": mfa_available, "mfa_capable": mfa.capable if mfa else None,
            "mfa_methods": list(mfa.methods) if mfa else [],
            "signin_available": signin_available, "last_interactive_sign_in": s.interactive,
            "last_non_interactive_sign_in": s.non_interactive, "last_successful_sign_in": s.successful,
            "eligible_roles": sorted(set(eligible)),
        },
    )


class Sponsorship(NamedTuple):
    """A guest's sponsors: their principal ids (as this connector names users and groups) and their
    directory object ids (to notice, in an incremental run, that a sponsor itself changed)."""

    principals: tuple[str, ...]
    object_ids: tuple[str, ...]


def sponsorship_from_graph(objects: Iterable[dict[str, Any]], org: Organization) -> Sponsorship:
    """The ``sponsors`` of a guest as Graph lists them (users and groups, ``@odata.type`` set)."""
    pids, oids = set(), set()
    for obj in objects:
        oid = str(obj.get("id"))
        pids.add(who_from_object(obj, oid, org).pid)
        oids.add(oid)
    return Sponsorship(tuple(sorted(pids)), tuple(sorted(oids)))


def sponsorship_from_record(data: dict[str, Any]) -> Sponsorship | None:
    """What a guest record says about its sponsors; None when it does not know them."""
    a = data.get("attributes") or {}
    pids, oids = a.get("sponsors"), a.get("sponsor_object_ids")
    if not isinstance(pids, list) or not isinstance(oids, list):
        return None
    return Sponsorship(tuple(pids), tuple(oids))


def with_sponsors(p: Principal, sponsors: Sponsorship | None) -> Principal:
    """A guest with ``attributes.sponsors`` (sorted principal ids; ``[]``: Graph says none; ``None``:
    not read) and ``attributes.sponsor_object_ids``; any other principal unchanged."""
    if p.kind != "guest":
        return p
    return dataclasses.replace(p, attributes={
        **p.attributes,
        "sponsors": list(sponsors.principals) if sponsors is not None else None,
        "sponsor_object_ids": list(sponsors.object_ids) if sponsors is not None else None,
    })


USER_FIELDS_FROM_RECORD = ("id", "userPrincipalName", "mail", "displayName", "userType", "accountEnabled",
                           "createdDateTime", "externalUserState", "creationType")


def user_from_record(data: dict[str, Any]) -> dict[str, Any]:
    """The Graph fields a user record was made from (to apply a delta to, or to map again)."""
    a = data.get("attributes") or {}
    return {"id": a.get("object_id"), "userPrincipalName": a.get("upn"), "mail": a.get("mail"),
            "displayName": data.get("display_name"), "userType": a.get("user_type"), "accountEnabled": data.get("enabled"),
            "createdDateTime": data.get("created"), "externalUserState": a.get("external_user_state"),
            "creationType": a.get("creation_type")}


def signin_from_record(data: dict[str, Any]) -> SignIn:
    a = data.get("attributes") or {}
    return SignIn(a.get("last_interactive_sign_in"), a.get("last_non_interactive_sign_in"), a.get("last_successful_sign_in"))


def mfa_from_record(data: dict[str, Any]) -> Mfa | None:
    """None when the user was not in the report (disabled) or the report was not readable."""
    if data.get("mfa") is None:
        return None
    a = data.get("attributes") or {}
    return Mfa(data["mfa"], a.get("mfa_capable"), tuple(a.get("mfa_methods") or ()))


# -- groups ---------------------------------------------------------------------------------------


def group_principal(g: dict[str, Any], org: Organization) -> Principal:
    mail = (g.get("mail") or "").lower() or None
    domain = email_domain(mail)
    return Principal(
        id=group_pid(g), kind="group", email=mail, display_name=g.get("displayName"), domain=domain,
        external=external(org, domain) if mail else None,
        attributes={"object_id": g.get("id"), "mail": g.get("mail"), "mail_enabled": g.get("mailEnabled"),
                    "security_enabled": g.get("securityEnabled"), "group_types": sorted(g.get("groupTypes") or [])},
    )


def group_from_record(data: dict[str, Any]) -> dict[str, Any]:
    a = data.get("attributes") or {}
    return {"id": a.get("object_id"), "displayName": data.get("display_name"), "mail": a.get("mail"),
            "mailEnabled": a.get("mail_enabled"), "securityEnabled": a.get("security_enabled"),
            "groupTypes": list(a.get("group_types") or [])}


def membership(group_id: str, group_object_id: str, member: Who, member_object_id: str, member_type: str) -> Record:
    return Membership(
        group_id=group_id, member_id=member.pid, member_kind=member.kind, role="member",  # type: ignore[arg-type]
        attributes={"group_object_id": group_object_id, "member_object_id": member_object_id,
                    "member_type": member_type.removeprefix("#microsoft.graph.") or None, "external": member.external},
    ).record()


# -- roles ----------------------------------------------------------------------------------------


def role_principal(d: dict[str, Any]) -> Record:
    return Principal(
        id=role_pid(str(d.get("id"))), kind="role", display_name=d.get("displayName"),
        attributes={"role_definition_id": d.get("id"), "template_id": d.get("templateId"),
                    "description": d.get("description"), "is_built_in": d.get("isBuiltIn"),
                    "is_enabled": d.get("isEnabled")},
    ).record()


def role_grant(a: dict[str, Any], tenant: str, role_names: dict[str, str], org: Organization, *, eligible: bool) -> Record:
    """An active assignment or a PIM eligibility schedule → role ``admin`` on the tenant."""
    pid_obj = str(a.get("principalId"))
    who = who_from_object(a.get("principal"), pid_obj, org)
    rdid = str(a.get("roleDefinitionId"))
    attributes: dict[str, Any] = {
        "assignment": "eligible" if eligible else "active", "role_definition_id": rdid,
        "directory_scope_id": a.get("directoryScopeId"), "principal_object_id": pid_obj,
        "principal_type": ((a.get("principal") or {}).get("@odata.type") or "").removeprefix("#microsoft.graph.") or None,
    }
    expiry = None
    if eligible:
        schedule = a.get("scheduleInfo") or {}
        expiry = gtime((schedule.get("expiration") or {}).get("endDateTime"))
        attributes.update(member_type=a.get("memberType"), status=a.get("status"),
                          start=gtime(schedule.get("startDateTime")))
    return Grant(
        resource_id=tenant, principal_id=who.pid, principal_kind=who.kind, role="admin",  # type: ignore[arg-type]
        raw_role=role_names.get(rdid, rdid), via="direct", principal_email=who.email, principal_domain=who.domain,
        external=who.external, expiry=expiry, grant_id=str(a.get("id")), attributes=attributes,
    ).record()


def tenant_resource(tenant: str, config_tenant: str, counts: dict[str, int]) -> Record:
    return Resource(id=tenant_rid(tenant), kind="account", name=config_tenant,
                    attributes={"tenant": config_tenant, **counts}).record()


# -- why an optional part could not be read --------------------------------------------------------

LICENCE_CODES = {
    "Authentication_RequestFromNonPremiumTenantOrB2CTenant": "the tenant has no Microsoft Entra ID P1 or P2 licence",
    "AadPremiumLicenseRequired": "the tenant has no Microsoft Entra ID P2 licence (needed for PIM)",
}


def unavailable_reason(status: int, code: str, message: str, permission: str) -> str | None:
    """Why a report or PIM read was refused, in words an administrator can act on; None when the
    answer is not a permission or licence refusal (then it is an error, not "unavailable")."""
    if code in LICENCE_CODES:
        return f"{LICENCE_CODES[code]} ({status} {code})"
    if "licen" in (code + message).lower() or "premium" in (code + message).lower():
        return f"a Microsoft Entra ID licence is missing: {status} {code}: {message}"
    if status == 403:
        return (f"the app lacks the application permission {permission} (grant it with admin consent): "
                f"{status} {code}: {message}")
    return None


__all__ = [
    "Mfa", "SignIn", "Sponsorship", "Who", "email_domain", "gtime", "group_pid", "group_principal", "membership", "role_grant",
    "role_pid", "role_principal", "sponsorship_from_graph", "sponsorship_from_record", "tenant_resource", "tenant_rid",
    "unavailable_reason", "user_email", "user_pid", "user_principal", "who_from_object", "with_sponsors",
]

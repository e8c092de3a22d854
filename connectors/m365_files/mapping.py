"""Graph ``driveItem`` / ``permission`` objects → records. Pure functions: the same API object
always gives the same bytes, whichever call (a first ``root/delta`` walk, a later page of changes,
``items/{id}/permissions``) it came from, and an inherited grant is made from its source's grant
*record* — that is what lets an incremental bag equal a full one.

Ids (they join the ``entra_id`` connector's principals):

* users ``user:<mail, lower case>``; a guest's ``#EXT#`` login (``alice_partner.co.jp#EXT#@
  tenant.onmicrosoft.com``) is resolved to its real address (``user:alice@partner.co.jp``) and its
  kind is ``guest``; a user known only by object id ``user:entra:<id>``;
* Entra groups ``group:<mail, lower case>``, else ``group:entra:<object id>``; SharePoint site
  groups ``site_group:<site or drive id>:<group id>``; apps ``app:<id>``;
* an "anyone with the link" link: ``anyone``; a "people in your organisation" link: the pseudo
  principal ``domain:<the organisation's first domain>`` (kind ``domain``, not external) — the
  same id a Google domain-wide share of that domain has;
* resources ``m365:<drive id>`` (a drive; its root's permissions are its grants) and
  ``m365:<drive id>:<item id>`` (a file or folder).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping

from connectors.base import Organization
from evidence.model import Grant, Record, Resource

ROLES = {"owner": "owner", "sp.owner": "owner", "sp.full control": "owner", "write": "editor",
         "sp.member": "editor", "read": "viewer", "sp.visitor": "viewer"}
LINK_ROLES = {"view": "viewer", "edit": "editor", "review": "commenter", "embed": "viewer",
              "blocksDownload": "viewer", "createOnly": "editor", "addressBar": "viewer", "adminDefault": "editor"}
LINK_SCOPES = {"anonymous": "anyone", "organization": "organization", "users": "specific", "existingAccess": "specific"}
RANK = {"owner": 5, "editor": 4, "commenter": 3, "viewer": 2, "other": 1}


@dataclass(frozen=True)
class DriveInfo:
    """A drive as this run listed it: a SharePoint document library or a user's OneDrive."""

    id: str
    location: str                  # "sharepoint" | "onedrive"
    name: str | None
    web_url: str | None
    drive_type: str | None
    owner: str                     # principal id: ``user:<email>`` (OneDrive) or ``site:<site id>``
    owner_email: str | None = None
    site_id: str | None = None
    site_url: str | None = None
    site_name: str | None = None
    created: str | None = None

    @property
    def label(self) -> str:
        if self.location == "onedrive":
            return f"OneDrive of {self.owner_email or self.owner} ({self.id})"
        return f"SharePoint site {self.site_name or self.site_id} / {self.name} ({self.id})"

    @property
    def scope(self) -> str:
        """What SharePoint site groups and site users are local to."""
        return self.site_id or self.id


# -- ids ------------------------------------------------------------------------------------------


def drive_rid(drive_id: str) -> str:
    return f"m365:{drive_id}"


def item_rid(drive_id: str, item_id: str) -> str:
    return f"m365:{drive_id}:{item_id}"


def drive_of(resource_id: str) -> str | None:
    """The drive id of a resource id (``m365:<drive>`` or ``m365:<drive>:<item>``)."""
    parts = resource_id.split(":")
    return parts[1] if len(parts) >= 2 and parts[0] == "m365" else None


def email_domain(email: str | None) -> str | None:
    return email.rsplit("@", 1)[1].lower() if email and "@" in email else None


def real_address(value: str | None) -> tuple[str | None, bool]:
    """``(address, is_guest)`` from a mail, UPN or SharePoint claims login: a guest's ``#EXT#``
    UPN (``alice_partner.co.jp#EXT#@tenant.onmicrosoft.com``) gives ``alice@partner.co.jp``."""
    if not value:
        return None, False
    text = value.strip()
    if "|" in text:  # "i:0#.f|membership|alice_partner.co.jp#ext#@tenant.onmicrosoft.com"
        text = text.rsplit("|", 1)[1]
    marker = text.lower().find("#ext#")
    if marker < 0:
        return (text.lower() if "@" in text else None), False
    local = text[:marker]
    cut = local.rfind("_")
    if cut <= 0:
        return None, True
    return (local[:cut] + "@" + local[cut + 1:]).lower(), True


def _external(org: Organization, domain: str | None) -> bool | None:
    internal = org.is_internal_domain(domain)
    return None if internal is None else not internal


@dataclass(frozen=True)
class Who:
    """The principal side of a grant."""

    pid: str
    kind: str
    email: str | None = None
    domain: str | None = None
    external: bool | None = None
    name: str | None = None


ANYONE = Who("anyone", "anyone", external=True)


def organization_principal(org: Organization, tenant: str) -> Who:
    """Everyone signed in to the tenant: ``domain:<first domain>`` (``domain:<tenant>`` without one)."""
    domain = org.domains[0] if org.domains else None
    return Who(f"domain:{domain or tenant.lower()}", "domain", domain=domain, external=False)


def identity_principal(ident: Mapping[str, Any], org: Organization, scope: str) -> Who | None:
    """A ``sharePointIdentitySet`` (``grantedToV2``, one of ``grantedToIdentitiesV2``) → principal."""
    group = ident.get("group") or {}
    if group:
        email = (group.get("email") or "").strip().lower() or None
        domain = email_domain(email)
        return Who(f"group:{email}" if email else f"group:entra:{group.get('id')}", "group", email, domain,
                   _external(org, domain), group.get("displayName"))
    user, site_user = ident.get("user") or {}, ident.get("siteUser") or {}
    if user or site_user:
        email, guest = None, False
        for value in (user.get("email"), user.get("userPrincipalName"), site_user.get("email"), site_user.get("loginName")):
            found, is_guest = real_address(value)
            guest = guest or is_guest
            email = email or found
        for value in (user.get("userPrincipalName"), site_user.get("loginName")):
            guest = guest or real_address(value)[1]
        if email:
            pid = f"user:{email}"
        elif user.get("id"):
            pid = f"user:entra:{user['id']}"
        else:
            pid = f"site_user:{scope}:{site_user.get('id')}"
        domain = email_domain(email)
        return Who(pid, "guest" if guest else "user", email, domain, _external(org, domain),
                   user.get("displayName") or site_user.get("displayName"))
    site_group = ident.get("siteGroup") or {}
    if site_group:
        return Who(f"site_group:{scope}:{site_group.get('id')}", "group", name=site_group.get("displayName"))
    app = ident.get("application") or {}
    if app:
        return Who(f"app:{app.get('id')}", "service_account", name=app.get("displayName"))
    device = ident.get("device") or {}
    if device:
        return Who(f"device:{device.get('id')}", "unknown", name=device.get("displayName"))
    return None


def _identities(p: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    if p.get("grantedToV2"):
        yield p["grantedToV2"]
    elif p.get("grantedTo"):
        yield p["grantedTo"]
    for ident in p.get("grantedToIdentitiesV2") or p.get("grantedToIdentities") or ():
        if ident:
            yield ident


def _role(roles: Iterable[str]) -> str:
    mapped = [ROLES.get(r.lower(), "other") for r in roles]
    return max(mapped, key=RANK.__getitem__) if mapped else "other"


# -- grants ---------------------------------------------------------------------------------------


def permission_grants(resource_id: str, p: Mapping[str, Any], org: Organization, *, scope: str, tenant: str,
                      inherited_from: str | None = None) -> list[Record]:
    """One grant per principal a permission reaches (a link shared with three people: three)."""
    roles = [str(r) for r in p.get("roles") or () if r]
    link = p.get("link") or None
    attrs: dict[str, Any] = {}
    if link:
        ltype = str(link.get("type") or "")
        raw_role = ltype or "+".join(sorted(roles)) or "unknown"
        role = LINK_ROLES.get(ltype) or _role(roles)
        link_scope = LINK_SCOPES.get(str(link.get("scope") or ""), "specific")
        attrs["link_type"] = ltype or None
        attrs["link_scope"] = link.get("scope")
        if "preventsDownload" in link:
            attrs["prevents_download"] = bool(link.get("preventsDownload"))
    else:
        raw_role = "+".join(sorted(roles)) or "unknown"
        role, link_scope = _role(roles), None
    if "hasPassword" in p:
        attrs["has_password"] = bool(p.get("hasPassword"))
    invitation = p.get("invitation") or None
    if invitation:
        attrs["invitation"] = True
        if "signInRequired" in invitation:
            attrs["sign_in_required"] = bool(invitation.get("signInRequired"))
    named = [w for w in (identity_principal(i, org, scope) for i in _identities(p)) if w is not None]
    if link_scope in ("anyone", "organization"):
        whos = [ANYONE if link_scope == "anyone" else organization_principal(org, tenant)]
        if named:  # people who have used (redeemed) the link: recorded, not granted separately
            attrs["used_by"] = sorted({w.pid for w in named})
    else:
        whos = named
        email = (invitation or {}).get("email")
        if email:
            address, _ = real_address(email)
            if address and all(w.email != address for w in whos):
                domain = email_domain(address)
                whos.append(Who(f"user:{address}", "user", address, domain, _external(org, domain)))
        if not whos:  # a "specific people" link nobody has been given yet, or a shape we do not know
            whos = [Who(f"unknown:{p.get('id')}", "unknown")]
    via = "inherited" if inherited_from else ("link" if link else "direct")
    out, seen = [], set()
    for w in whos:
        if w.pid in seen:
            continue
        seen.add(w.pid)
        extra = dict(attrs)
        if w.name:
            extra["display_name"] = w.name
        out.append(Grant(
            resource_id=resource_id, principal_id=w.pid, principal_kind=w.kind,  # type: ignore[arg-type]
            role=role, raw_role=raw_role, via=via, principal_email=w.email,  # type: ignore[arg-type]
            principal_domain=w.domain, external=w.external, link_scope=link_scope,  # type: ignore[arg-type]
            expiry=p.get("expirationDateTime") or None, inherited_from=inherited_from, grant_id=p.get("id"),
            attributes=extra,
        ).record())
    return out


def origins(grants: Iterable[Mapping[str, Any]], source_rid: str) -> dict[str, str]:
    """Permission id → where it is set, for the grants of an item that has its own permissions:
    what a descendant shows with the same id comes from there."""
    out: dict[str, str] = {}
    for g in grants:
        if g.get("grant_id"):
            inherited = g.get("via") == "inherited"
            out[g["grant_id"]] = (g.get("inherited_from") or source_rid) if inherited else source_rid
    return out


def item_grants(resource_id: str, permissions: list[Mapping[str, Any]], org: Organization, *, scope: str, tenant: str,
                from_source: Mapping[str, str], rid_of_item: Any) -> list[Record]:
    """Grants of an item with its own permissions. A permission the nearest ancestor with its own
    permissions also has (same id), or one with ``inheritedFrom``, is recorded as inherited from
    where it is set; the rest are the item's own (direct or link)."""
    out: list[Record] = []
    for p in permissions:
        origin = None
        inherited = p.get("inheritedFrom") or {}
        if inherited.get("id"):
            origin = rid_of_item(inherited["id"])
        elif p.get("id") in from_source:
            origin = from_source[p["id"]]
        out.extend(permission_grants(resource_id, p, org, scope=scope, tenant=tenant, inherited_from=origin))
    return out


def inherit(g: Mapping[str, Any], resource_id: str, source_rid: str) -> Record:
    """The grant an item without its own permissions has from its nearest ancestor that has them."""
    origin = (g.get("inherited_from") or source_rid) if g.get("via") == "inherited" else source_rid
    data = dict(g)
    data.update(resource_id=resource_id, via="inherited", inherited_from=origin)
    return Grant(**data).record()


# -- resources ------------------------------------------------------------------------------------


def is_root(item: Mapping[str, Any]) -> bool:
    return "root" in item or not (item.get("parentReference") or {}).get("id")


def has_own_permissions(item: Mapping[str, Any]) -> bool:
    """Under ``Prefer: hierarchicalsharing`` a non-empty ``shared`` facet marks an item whose
    sharing differs from its parent's; an empty one marks sharing that was removed."""
    return bool(item.get("shared"))


def parent_of(item: Mapping[str, Any]) -> str | None:
    return (item.get("parentReference") or {}).get("id")


def is_folder(item: Mapping[str, Any]) -> bool:
    return "folder" in item or "package" in item


def drive_resource(d: DriveInfo, root_item_id: str | None) -> Record:
    attrs: dict[str, Any] = {"location": d.location, "drive_id": d.id, "drive_type": d.drive_type,
                             "root_item_id": root_item_id, "created": d.created}
    if d.location == "onedrive":
        attrs["owner_email"] = d.owner_email
    else:
        attrs.update(site_id=d.site_id, site_url=d.site_url, site_name=d.site_name)
    name = f"OneDrive of {d.owner_email}" if d.location == "onedrive" else f"{d.site_name or d.site_id} / {d.name}"
    return Resource(id=drive_rid(d.id), kind="drive", name=name, owners=(d.owner,), web_url=d.web_url,
                    attributes=attrs).record()


def item_resource(item: Mapping[str, Any], d: DriveInfo) -> Record:
    own = has_own_permissions(item)
    attrs: dict[str, Any] = {"location": d.location, "drive_id": d.id, "item_id": item["id"],
                             "parent_item_id": parent_of(item), "mime_type": (item.get("file") or {}).get("mimeType"),
                             "own_permissions": own, "shared_scope": (item.get("shared") or {}).get("scope")}
    if d.site_id:
        attrs["site_id"] = d.site_id
    size = item.get("size")
    return Resource(
        id=item_rid(d.id, item["id"]), kind="folder" if is_folder(item) else "file", name=item.get("name"),
        owners=(d.owner,), size=size if isinstance(size, int) else None, modified=item.get("lastModifiedDateTime"),
        shared=own, web_url=item.get("webUrl"), attributes=attrs,
    ).record()


__all__ = [
    "ANYONE", "DriveInfo", "Who", "drive_of", "drive_resource", "drive_rid", "has_own_permissions", "identity_principal",
    "inherit", "is_folder", "is_root", "item_grants", "item_resource", "item_rid", "organization_principal", "origins",
    "parent_of", "permission_grants", "real_address",
]

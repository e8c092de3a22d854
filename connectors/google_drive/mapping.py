"""Drive API objects → records. Pure functions: the same API object always gives the same bytes,
whichever call (``files.list``, ``changes.list``, ``permissions.list``) it came from — that is what
lets an incremental bag equal a full one."""

from __future__ import annotations

from typing import Any, Iterator, Mapping

from connectors._google import email_domain, group_pid, user_pid
from connectors.base import Organization
from evidence.model import Grant, Record, Resource

FOLDER_MIME = "application/vnd.google-apps.folder"

PERMISSION_FIELDS = "id,type,role,emailAddress,domain,allowFileDiscovery,expirationTime,deleted,displayName"
MY_FILE_FIELDS = (
    "id,name,mimeType,parents,size,modifiedTime,createdTime,shared,trashed,webViewLink,"
    f"owners(emailAddress),permissions({PERMISSION_FIELDS})"
)
DRIVE_FILE_FIELDS = (
    "id,name,mimeType,parents,size,modifiedTime,createdTime,trashed,webViewLink,driveId,"
    "hasAugmentedPermissions,inheritedPermissionsDisabled"
)
DRIVE_FIELDS = "id,name,createdTime,hidden,restrictions"
FILE_PERMISSION_FIELDS = f"nextPageToken,permissions({PERMISSION_FIELDS},permissionDetails)"
MEMBER_FIELDS = f"nextPageToken,permissions({PERMISSION_FIELDS})"

ROLES = {"owner": "owner", "organizer": "owner", "fileOrganizer": "editor", "writer": "editor",
         "commenter": "commenter", "reader": "viewer"}


def _ts(value: str | None) -> str | None:
    """Drive's ``2026-10-01T12:00:00.000Z`` → the model's ``2026-10-01T12:00:00Z`` (ms kept if non-zero)."""
    if not value:
        return None
    if value.endswith(".000Z"):
        return value[:-5] + "Z"
    return value


def grantee(p: Mapping[str, Any], org: Organization) -> dict[str, Any]:
    """The principal side of a permission: id, kind, email, domain, external, link scope."""
    ptype = p.get("type")
    email = (p.get("emailAddress") or "").lower() or None
    if ptype in ("user", "group"):
        domain = email_domain(email)
        if email:
            pid = user_pid(email) if ptype == "user" else group_pid(email)
        else:  # a deleted account keeps its permission id, not its address
            pid = f"deleted:{p.get('id')}"
        internal = org.is_internal_domain(domain)
        return {"principal_id": pid, "principal_kind": ptype, "principal_email": email, "principal_domain": domain,
                "external": None if internal is None else not internal, "link_scope": None}
    if ptype == "domain":
        domain = (p.get("domain") or "").lower() or None
        internal = org.is_internal_domain(domain)
        return {"principal_id": f"domain:{domain}", "principal_kind": "domain", "principal_email": None,
                "principal_domain": domain, "external": None if internal is None else not internal,
                "link_scope": "organization"}
    if ptype == "anyone":
        return {"principal_id": "anyone", "principal_kind": "anyone", "principal_email": None,
                "principal_domain": None, "external": True, "link_scope": "anyone"}
    return {"principal_id": f"unknown:{p.get('id')}", "principal_kind": "unknown", "principal_email": email,
            "principal_domain": email_domain(email), "external": None, "link_scope": None}


def _attributes(p: Mapping[str, Any], extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    a: dict[str, Any] = {}
    if p.get("type") in ("domain", "anyone"):
        a["discoverable"] = bool(p.get("allowFileDiscovery"))
    if p.get("deleted"):
        a["deleted_principal"] = True
    if p.get("displayName"):
        a["display_name"] = p["displayName"]
    if extra:
        a.update(extra)
    return a


def grant(resource_id: str, p: Mapping[str, Any], org: Organization, *, via: str | None = None,
          role: str | None = None, inherited_from: str | None = None, extra: Mapping[str, Any] | None = None) -> Record:
    who = grantee(p, org)
    raw_role = role or p.get("role") or "unknown"
    if via is None:
        via = "link" if who["link_scope"] else "direct"
    return Grant(
        resource_id=resource_id, role=ROLES.get(raw_role, "other"), raw_role=raw_role, via=via,  # type: ignore[arg-type]
        expiry=_ts(p.get("expirationTime")), inherited_from=inherited_from, grant_id=p.get("id"),
        attributes=_attributes(p, extra), **who,
    ).record()


def file_grants(resource_id: str, permissions: list[Mapping[str, Any]], org: Organization) -> Iterator[Record]:
    """Grants of one item from its permissions; shared-drive permissions carry ``permissionDetails``
    (one grant per distinct inherited/direct detail, so a member who also has a file-level role
    shows both)."""
    for p in permissions:
        details = p.get("permissionDetails")
        if not details:
            yield grant(resource_id, p, org)
            continue
        seen = set()
        for d in details:
            inherited = bool(d.get("inherited"))
            key = (inherited, d.get("role"), d.get("inheritedFrom"))
            if key in seen:
                continue
            seen.add(key)
            ptype = d.get("permissionType") or "file"
            if inherited:
                yield grant(resource_id, p, org, via="inherited", role=d.get("role"), inherited_from=d.get("inheritedFrom"),
                            extra={"permission_type": ptype})
            else:
                yield grant(resource_id, p, org, role=d.get("role"), extra={"permission_type": ptype})


def member_grants(resource_id: str, drive_id: str, members: list[Mapping[str, Any]], org: Organization) -> Iterator[Record]:
    """What every item of a shared drive without its own permissions has: the drive's members."""
    for m in members:
        yield grant(resource_id, m, org, via="inherited", inherited_from=drive_id, extra={"permission_type": "member"})


def _size(f: Mapping[str, Any]) -> int | None:
    try:
        return int(f["size"]) if f.get("size") is not None else None
    except (TypeError, ValueError):
        return None


def my_drive_resource(f: Mapping[str, Any], owner: str) -> Record:
    return Resource(
        id=f["id"], kind="folder" if f.get("mimeType") == FOLDER_MIME else "file", name=f.get("name"),
        owners=(user_pid(owner),), size=_size(f), modified=_ts(f.get("modifiedTime")), shared=f.get("shared"),
        web_url=f.get("webViewLink"),
        attributes={"location": "my_drive", "owner_email": owner, "mime_type": f.get("mimeType"),
                    "parents": list(f.get("parents") or []), "created": _ts(f.get("createdTime"))},
    ).record()


def drive_file_resource(f: Mapping[str, Any], drive_id: str) -> Record:
    augmented = bool(f.get("hasAugmentedPermissions"))
    disabled = bool(f.get("inheritedPermissionsDisabled"))
    return Resource(
        id=f["id"], kind="folder" if f.get("mimeType") == FOLDER_MIME else "file", name=f.get("name"),
        owners=(f"shared_drive:{drive_id}",), size=_size(f), modified=_ts(f.get("modifiedTime")),
        shared=augmented, web_url=f.get("webViewLink"),
        attributes={"location": "shared_drive", "drive_id": drive_id, "mime_type": f.get("mimeType"),
                    "parents": list(f.get("parents") or []), "created": _ts(f.get("createdTime")),
                    "has_augmented_permissions": augmented, "inherited_permissions_disabled": disabled},
    ).record()


def needs_own_permissions(f: Mapping[str, Any]) -> bool:
    """Only these shared-drive items are asked for their permissions; the rest inherit the drive's."""
    return bool(f.get("hasAugmentedPermissions") or f.get("inheritedPermissionsDisabled"))


def shared_drive_resource(d: Mapping[str, Any], members: list[Mapping[str, Any]]) -> Record:
    organizers = sorted(grantee(m, _ANY)["principal_id"] for m in members if m.get("role") == "organizer")
    return Resource(
        id=d["id"], kind="shared_drive", name=d.get("name"), owners=tuple(organizers),
        web_url=f"https://drive.google.com/drive/folders/{d['id']}",
        attributes={"location": "shared_drive", "drive_id": d["id"], "created": _ts(d.get("createdTime")),
                    "hidden": bool(d.get("hidden")), "restrictions": dict(d.get("restrictions") or {}),
                    "members": len(members)},
    ).record()


_ANY = Organization("", ())  # principal ids do not depend on the organisation's domains

"""POSIX ACLs: the kernel's xattr format, and what grants an ACL or a mode yields.

``system.posix_acl_access`` / ``system.posix_acl_default`` hold a little-endian u32 version (2)
and 8-byte entries (u16 tag, u16 perm, u32 id) — ``linux/posix_acl_xattr.h``.
"""

from __future__ import annotations

import os
import struct
from typing import Iterable, NamedTuple

XATTR_ACCESS = "system.posix_acl_access"
XATTR_DEFAULT = "system.posix_acl_default"
ACL_XATTR_VERSION = 2
ACL_UNDEFINED_ID = 0xFFFFFFFF

ACL_USER_OBJ = 0x01
ACL_USER = 0x02
ACL_GROUP_OBJ = 0x04
ACL_GROUP = 0x08
ACL_MASK = 0x10
ACL_OTHER = 0x20

_OBJ_TAGS = (ACL_USER_OBJ, ACL_GROUP_OBJ, ACL_MASK, ACL_OTHER)
_NAMED_TAGS = (ACL_USER, ACL_GROUP)
_TAG_TEXT = {
    ACL_USER_OBJ: "user",
    ACL_USER: "user",
    ACL_GROUP_OBJ: "group",
    ACL_GROUP: "group",
    ACL_MASK: "mask",
    ACL_OTHER: "other",
}
_HEADER = struct.Struct("<I")
_ENTRY = struct.Struct("<HHI")
_PERM_STR = tuple(
    ("r" if p & 4 else "-") + ("w" if p & 2 else "-") + ("x" if p & 1 else "-") for p in range(8)
)


class AclEntry(NamedTuple):
    """One POSIX ACL entry. ``id`` is the uid / gid for ``ACL_USER`` / ``ACL_GROUP``, else None."""

    tag: int
    perm: int
    id: int | None = None

    @property
    def text(self) -> str:
        """``user:1000:rw-`` / ``group::r-x`` / ``mask::r--`` (numeric ids, like ``getfacl -n``)."""
        qualifier = "" if self.id is None else str(self.id)
        return f"{_TAG_TEXT.get(self.tag, hex(self.tag))}:{qualifier}:{_PERM_STR[self.perm & 7]}"


class MalformedAcl(ValueError):
    """The bytes of a ``system.posix_acl_*`` attribute are not a valid POSIX ACL."""


def decode_posix_acl(data: bytes) -> list[AclEntry]:
    """Decode the kernel's xattr form of a POSIX ACL.

    Little-endian u32 version (2), then 8-byte entries (u16 tag, u16 perm, u32 id). Returns []
    for a header without entries (the kernel's "no ACL"). Raises :class:`MalformedAcl` for
    anything the kernel itself would refuse: short / ragged data, another version, unknown tags,
    permission bits beyond rwx, a missing or repeated owner / group / other / mask entry, a
    repeated named entry, or named entries without a mask.
    """
    data = bytes(data)
    if len(data) < _HEADER.size:
        raise MalformedAcl(f"{len(data)} bytes, shorter than the 4-byte header")
    (version,) = _HEADER.unpack_from(data)
    if version != ACL_XATTR_VERSION:
        raise MalformedAcl(f"version {version}, expected {ACL_XATTR_VERSION}")
    body = len(data) - _HEADER.size
    if body % _ENTRY.size:
        raise MalformedAcl(f"{body} bytes of entries is not a multiple of {_ENTRY.size}")
    entries: list[AclEntry] = []
    seen_obj: set[int] = set()
    seen_named: set[tuple[int, int]] = set()
    for tag, perm, ident in _ENTRY.iter_unpack(data[_HEADER.size :]):
        if perm & ~7:
            raise MalformedAcl(f"entry {len(entries)}: permission bits 0x{perm:x} beyond rwx")
        if tag in _NAMED_TAGS:
            if ident == ACL_UNDEFINED_ID:
                raise MalformedAcl(f"entry {len(entries)}: named entry without an id")
            if (tag, ident) in seen_named:
                raise MalformedAcl(f"entry {len(entries)}: {_TAG_TEXT[tag]} {ident} repeated")
            seen_named.add((tag, ident))
            entries.append(AclEntry(tag, perm, ident))
        elif tag in _OBJ_TAGS:
            if tag in seen_obj:
                raise MalformedAcl(f"entry {len(entries)}: {_TAG_TEXT[tag]} entry repeated")
            seen_obj.add(tag)
            entries.append(AclEntry(tag, perm, None))
        else:
            raise MalformedAcl(f"entry {len(entries)}: unknown tag 0x{tag:x}")
    if not entries:
        return entries
    missing = [_TAG_TEXT[t] for t in (ACL_USER_OBJ, ACL_GROUP_OBJ, ACL_OTHER) if t not in seen_obj]
    if missing:
        raise MalformedAcl(f"no {'/'.join(missing)} entry")
    if seen_named and ACL_MASK not in seen_obj:
        raise MalformedAcl("named entries without a mask entry")
    return entries


def encode_posix_acl(entries: Iterable[AclEntry | tuple[int, int, int | None]]) -> bytes:
    """The inverse of :func:`decode_posix_acl` (entries written in the order given)."""
    out = [_HEADER.pack(ACL_XATTR_VERSION)]
    for entry in entries:
        tag, perm, ident = entry
        out.append(_ENTRY.pack(tag, perm, ACL_UNDEFINED_ID if ident is None else ident))
    return b"".join(out)


def acl_to_text(entries: Iterable[AclEntry]) -> str:
    """``user::rw-,user:1000:r--,group::r-x,mask::r-x,other::---``."""
    return ",".join(AclEntry(*e).text for e in entries)


def plant_acl_for_demo(path: str | os.PathLike, *, uid: int, perm: int = 4) -> None:
    """Give user ``uid`` a named ACL entry (``perm``: 4 = r--, 6 = rw-) on ``path``.

    For ``shoseki demo`` and tests only (the connector itself never writes). The other entries
    follow the current mode bits; the mask is widened to let the entry through. Raises
    ``OSError`` (ENOTSUP / EOPNOTSUPP) where the file system has no POSIX ACLs.
    """
    mode = os.stat(path).st_mode
    u, g, o = (mode >> 6) & 7, (mode >> 3) & 7, mode & 7
    acl = [
        AclEntry(ACL_USER_OBJ, u),
        AclEntry(ACL_USER, perm & 7, uid),
        AclEntry(ACL_GROUP_OBJ, g),
        AclEntry(ACL_MASK, g | (perm & 7)),
        AclEntry(ACL_OTHER, o),
    ]
    os.setxattr(path, XATTR_ACCESS, encode_posix_acl(acl))


_ROLE = tuple("editor" if p & 2 else "viewer" if p & 4 else None for p in range(8))

# An ACL "plan": what grants an ACL yields, independent of the file it sits on.
# Each step is (who, id, role, raw_role, attributes) with who one of
# "owner" / "group" (the file's uid / gid), "uid" / "gid" (a named entry), "anyone".
_Plan = tuple[tuple[str, int | None, str, str, dict], ...]


def _acl_plan(entries: list[AclEntry], *, default: bool, setgid_dir: bool) -> _Plan:
    prefix = "default:" if default else ""
    mask = next((e.perm for e in entries if e.tag == ACL_MASK), None)
    steps: list[tuple[str, int | None, str, str, dict]] = []
    for e in entries:
        perm_s = _PERM_STR[e.perm]
        tag = e.tag
        if tag == ACL_MASK:
            continue
        if tag == ACL_USER_OBJ:
            # The default ACL's owner entry applies to whoever creates the child: no principal.
            if not default:
                steps.append(("owner", None, "owner", f"u::{perm_s}", {}))
            continue
        if tag == ACL_OTHER:
            role = _ROLE[e.perm]
            if role:
                steps.append(("anyone", None, role, f"{prefix}o::{perm_s}", {}))
            continue
        # group class: named users, owning group, named groups – limited by the mask
        effective = e.perm if mask is None else e.perm & mask
        role = _ROLE[effective]
        if not role:
            continue
        attrs = {} if mask is None else {"acl_perm": perm_s, "effective": _PERM_STR[effective]}
        if tag == ACL_USER:
            steps.append(("uid", e.id, role, f"{prefix}user:{e.id}:{perm_s}", attrs))
        elif tag == ACL_GROUP:
            steps.append(("gid", e.id, role, f"{prefix}group:{e.id}:{perm_s}", attrs))
        elif tag == ACL_GROUP_OBJ:
            # New children get the folder's group only when the folder is set-group-ID;
            # otherwise the creator's primary group, which nothing here can name.
            if not default or setgid_dir:
                steps.append(("group", None, role, f"{prefix}g::{perm_s}", attrs))
    return tuple(steps)


def _mode_plan(mode: int) -> _Plan:
    perms = mode & 0o777
    u, g, o = perms >> 6, (perms >> 3) & 7, perms & 7
    steps: list[tuple[str, int | None, str, str, dict]] = [
        ("owner", None, "owner", f"u::{_PERM_STR[u]}", {})
    ]
    if _ROLE[g]:
        steps.append(("group", None, _ROLE[g], f"g::{_PERM_STR[g]}", {}))
    if _ROLE[o]:
        steps.append(("anyone", None, _ROLE[o], f"o::{_PERM_STR[o]}", {}))
    return tuple(steps)

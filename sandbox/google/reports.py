"""Admin SDK Reports v1 (``/admin/reports/v1``): ``activities.list`` for the Drive application.

Built from the organisation's change log (:attr:`sandbox.org.Overlay.changes`): every sharing
change (``Org.share`` / ``Org.unshare``) is one ``acl_change`` / ``change_user_access`` event and
every removal one ``delete`` event, with the parameters a collector reads — ``doc_id``,
``owner`` (the owner's address, or the shared drive's name), ``owner_is_shared_drive`` and
``shared_drive_id`` — as the Drive audit log reports them. Newest first, as the API returns them;
``startTime`` / ``endTime`` (RFC 3339) filter, ``maxResults`` up to 1,000. Events appear at once:
the real log lags (hours, by Google's account), which is why a collector that relies on it reads
a window that overlaps the previous one.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sandbox.google.common import _Ctx
from sandbox.google.errors import _invalid


def _rfc3339(value: str, name: str) -> datetime:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise _invalid(name, f"Invalid value '{value}'. Values must match the RFC 3339 format.") from None


class ReportsMixin:
    """The Reports methods of :class:`sandbox.google.GoogleStandIn`."""

    def _activities_list(self, ctx: _Ctx) -> dict[str, Any]:
        self._require_admin(ctx)
        app = ctx.path.get("applicationName")
        user_key = ctx.path.get("userKey")
        if app != "drive":
            return {"kind": "admin#reports#activities", "items": []}
        start = _rfc3339(ctx.arg("startTime"), "startTime") if ctx.arg("startTime") else None
        end = _rfc3339(ctx.arg("endTime"), "endTime") if ctx.arg("endTime") else None
        size = self._size(ctx, "maxResults", 1000, 1000, coerce=False)
        offset = int((self._untok(ctx.arg("pageToken"), "activities", 1) or [0])[0])
        events = []
        for change in reversed(self.org.overlay.changes):  # newest first
            if change["kind"] not in ("file", "file_removed"):
                continue
            at = datetime.fromisoformat(change["time"].replace("Z", "+00:00"))
            if (start and at < start) or (end and at >= end):
                continue
            item = self._drive_event(change)
            if user_key not in ("all", None) and item["actor"]["email"] != user_key.lower():
                continue
            events.append(item)
        page = events[offset:offset + size]
        body: dict[str, Any] = {"kind": "admin#reports#activities", "items": page}
        if offset + size < len(events):
            body["nextPageToken"] = self._tok("activities", offset + size)
        return body

    def _drive_event(self, change: dict[str, Any]) -> dict[str, Any]:
        drive = self.org.drive(change["drive"]) if change.get("drive") is not None else None
        owner = self.org.person(change["owner"]) if change.get("owner") is not None else None
        actor = owner.email if owner else self.org.person(0).email
        params: list[dict[str, Any]] = [
            {"name": "doc_id", "value": change["file_id"]},
            {"name": "owner", "value": drive.name if drive else actor},
            {"name": "owner_is_shared_drive", "boolValue": drive is not None},
        ]
        if drive is not None:
            params.append({"name": "shared_drive_id", "value": drive.id})
        removed = change["kind"] == "file_removed"
        return {
            "kind": "admin#reports#activity",
            "id": {"time": change["time"], "uniqueQualifier": str(change["seq"]), "applicationName": "drive",
                   "customerId": self.customer_id},
            "actor": {"email": actor, "profileId": self.user_id(owner.index if owner else 0)},
            "events": [{"type": "delete" if removed else "acl_change",
                        "name": "delete" if removed else "change_user_access", "parameters": params}],
        }

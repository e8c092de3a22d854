"""Google Drive: who can reach every file of the tenant — My Drives and shared drives.

What is read (all read-only; domain-wide delegation):

* the users to scan, from the Directory as ``admin_subject`` (``users.list``, 500 a page) or
  from the ``users`` list in config; suspended and archived users are scanned too — a leaver's
  "anyone with the link" share lives on in exactly those accounts;
* every shared drive (``drives.list(useDomainAdminAccess)``, 100 a page) and its members
  (``permissions.list(useDomainAdminAccess)``, batched 100 per HTTP call);
* each shared drive's items, listed as one of its own members (an organizer first, or
  ``drive_member_subject``), 1,000 a page; per-item permissions are asked **only** for items with
  ``hasAugmentedPermissions`` or ``inheritedPermissionsDisabled`` (batched 100 per HTTP call) —
  every other item has exactly the drive's members, recorded as ``via = "inherited"``;
* each user's My Drive (impersonating that user, ``'me' in owners and trashed = false``, 1,000 a
  page) with the permissions inline in the same call (a precise ``fields`` mask).

Mapping: a shared drive is a ``shared_drive`` resource with its members as direct grants; items
are ``file``/``folder`` resources with ``owners`` (``user:<email>`` for My Drive, or
``shared_drive:<id>``) and one grant per permission: principal ``user:<email>``,
``group:<email>``, ``domain:<domain>`` or ``anyone``; role owner/editor/commenter/viewer with the
raw Drive role kept; ``via`` direct, link (domain/anyone, with ``link_scope`` and
``attributes.discoverable``), or inherited (``inherited_from`` = the drive); ``expiry``; deleted
accounts as ``deleted:<permission id>``; ``external`` = outside the organisation's domains.

Incremental runs: after a full baseline (every ``full_every_days``, default 7) the cursor keeps
a changes start token per user and per shared drive. An incremental run re-reads users, drives
and drive members (cheap), reads each changes feed, applies the changes to the records of the
previous *complete* bag (checked against its manifest first) and seals a **complete** bag:
run.json says ``mode: incremental`` and names the base bag's digest and the changes applied.
The result equals what a full run would have written for the same state.
"""

from __future__ import annotations

from typing import Any, Iterator, Literal

from pydantic import Field, field_validator

from connectors._google import GoogleClients, GoogleSettings, SubjectRefused, scopes
from connectors.base import CheckResult, Connector, RunContext, choose_mode
from connectors.google_drive.collect import CURSOR_VERSION, DRIVE_ADMIN, DRIVE_USER, MY_DRIVE_Q, Snapshot
from evidence.model import Record, utc_iso


class GoogleDriveConfig(GoogleSettings):
    users: list[str] | None = Field(None, description="scan only these users (default: every user in the Directory)")
    include_suspended: bool = True
    my_drives: bool = True
    shared_drives: bool = True
    drive_member_subject: str | None = Field(None, description="a member of every shared drive to list them as")
    incremental: bool = True
    full_every_days: float = Field(7.0, gt=0, description="a full baseline at least this often")
    change_detection: Literal["feed", "activity"] = Field(
        "feed", description="feed: read every user's and drive's changes feed each run (authoritative); "
                            "activity: read only the feeds of users and drives the Drive audit log names")
    activity_lag_minutes: float = Field(60.0, ge=0, description="how far each audit-log window reaches back")
    batch_size: int = Field(100, ge=1, le=100)
    requests_per_minute: int = Field(12_000, ge=1, description="Drive queries per minute per project")
    requests_per_user_per_minute: int = Field(12_000, ge=1, description="Drive queries per minute per user")
    workers: int = Field(16, ge=1, le=64)

    @field_validator("users")
    @classmethod
    def _users(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        bad = [u for u in value if "@" not in u]
        if bad:
            raise ValueError(f"not email addresses: {bad}")
        return sorted({u.strip().lower() for u in value})


class GoogleDriveConnector(Connector):
    kind = "google_drive"
    Config = GoogleDriveConfig
    streams = ("resources", "grants")
    permissions = tuple(sorted(set(DRIVE_ADMIN + DRIVE_USER + scopes("admin.directory.user.readonly"))))
    # change_detection = "activity" also needs https://www.googleapis.com/auth/admin.reports.audit.readonly
    description = "Google Drive: My Drive and shared-drive files with their permissions"

    @classmethod
    def make_clients(cls, config: GoogleDriveConfig) -> GoogleClients:
        return GoogleClients(config, project_per_minute=config.requests_per_minute,
                             user_per_minute=config.requests_per_user_per_minute)

    def check(self) -> CheckResult:
        result = CheckResult()
        cfg: GoogleDriveConfig = self.config
        try:
            c: GoogleClients = self.ensure_clients()
        except Exception as exc:  # an unreadable key: explained, not raised
            return result.add("service-account key", False, str(exc))
        ctx = RunContext.for_check()
        admin = cfg.admin_subject
        probes = [
            ("directory users (as admin)", "directory", lambda s: s.users().list(customer=cfg.customer, maxResults=1,
                                                                               fields="users(primaryEmail)"),
             "admin.directory.user.readonly", "directory.users.list"),
            ("shared drives (as admin)", "drive", lambda s: s.drives().list(useDomainAdminAccess=True, pageSize=1,
                                                                            fields="drives(id)"),
             "drive.readonly", "drive.drives.list"),
            ("My Drive (as admin)", "drive", lambda s: s.files().list(corpora="user", q=MY_DRIVE_Q, pageSize=1,
                                                                      fields="files(id)"),
             "drive.metadata.readonly", "drive.files.list"),
        ]
        if cfg.users is not None:
            probes = probes[1:]
        for name, api, make, scope, endpoint in probes:
            try:
                c.execute(ctx, endpoint, make(c.service(api)), subject=admin, scopes=scopes(scope))
                result.add(name, True, f"read as {admin}")
            except SubjectRefused as exc:
                result.add(name, False, exc.message)
            except Exception as exc:  # check never raises: it explains
                result.add(name, False, f"{exc} (the service account {c.service_account} needs domain-wide "
                                        f"delegation for https://www.googleapis.com/auth/{scope})")
        return result

    def snapshot(self, ctx: RunContext) -> Iterator[Record]:
        cfg: GoogleDriveConfig = self.config
        clients: GoogleClients = self.ensure_clients()
        ctx.identity = f"{clients.service_account} as {cfg.admin_subject} (and each user scanned)"
        run = Snapshot(cfg, clients, ctx)
        mode, why, cursor = self._mode(ctx, run)
        ctx.note("mode", mode)
        ctx.note("mode_reason", why)
        plan = run.read.plan()
        ctx.note("scanned", {"users": len(plan.users), "shared_drives": len(plan.drives)})
        if mode == "incremental":
            run.baseline = cursor["baseline_utc"]
            yield from run.incremental(plan, cursor)
        else:
            run.baseline = utc_iso(ctx.started)
            yield from run.full(plan)
        if cfg.incremental:
            ctx.set_cursor(run.cursor(plan))

    def _mode(self, ctx: RunContext, run: Snapshot) -> tuple[str, str, dict[str, Any] | None]:
        cfg: GoogleDriveConfig = self.config

        def check(cursor: dict[str, Any]) -> str | None:
            if cfg.change_detection == "activity" and not cursor.get("activity_from"):
                return "the baseline has no audit-log position (change_detection was 'feed')"
            return None

        return choose_mode(ctx, enabled=cfg.incremental, version=CURSOR_VERSION, config_digest=run.config_digest(),
                           full_every_days=cfg.full_every_days, check=check)


__all__ = ["GoogleDriveConfig", "GoogleDriveConnector"]

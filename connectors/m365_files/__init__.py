"""OneDrive and SharePoint: who can reach every file of the tenant, through Microsoft Graph.

What is read (application permissions, read-only; ``connectors/_graph.py`` does auth, retries,
the resource-unit budget and the raw pages):

* every site, in one listing: ``GET /sites/getAllSites?$select=id,name,displayName,webUrl,
  isPersonalSite`` (2 RU a page). Team sites' document libraries come from
  ``/sites/{id}/drives`` (2 RU), OneDrives from their personal site's ``/sites/{id}/drive``
  (1 RU), both in ``$batch``es of 20. This is the cheapest *complete* plan: the alternative,
  ``/users/{id}/drive`` per user (1 RU each), costs the same per OneDrive but misses the
  OneDrives that outlive their account (a deleted leaver's shares live on in exactly those) and
  spends a 404 on every user without one. ``GET /users?$select=id,mail,userPrincipalName&$top=999``
  (1 RU per 999 users) maps each OneDrive's owner to the address the ``entra_id`` connector uses;
* each drive's items: ``GET /drives/{id}/root/delta?$select=id,name,parentReference,file,folder,
  package,shared,deleted,lastModifiedDateTime,size,webUrl,root`` (2 RU, then 1 a page) with
  ``Prefer: hierarchicalsharing, deltashowremovedasdeleted, deltatraversepermissiongaps,
  deltashowsharingchanges``; the last page's delta link is kept, per drive, as the cursor;
* permissions (``/drives/{d}/items/{i}/permissions``, 5 RU each, ``$batch``es of 20) **only** for
  each drive's root and the items whose ``shared`` facet is set — under hierarchical sharing, the
  items whose sharing differs from their parent's. Every other item inherits: it gets its nearest
  such ancestor's grants as ``via = "inherited"``, ``inherited_from`` = where each is set.

Application permissions to grant (admin consent): ``Sites.Read.All`` (sites, drives, items and
their permissions) and ``User.Read.All`` (OneDrive owners' addresses). Microsoft documents that
"to process permissions correctly" with ``deltashowsharingchanges`` an app needs
``Sites.FullControl.All``, which is not read-only; the connector asks for ``Sites.Read.All`` and
works with it (the sandbox stand-in requires only ``Sites.Read.All`` / ``Files.Read.All`` and
``User.Read.All``) — grant ``Sites.FullControl.All`` only if a tenant's delta omits sharing changes.

Mapping (``mapping.py``): drives are ``drive`` resources (``m365:<drive id>``) whose grants are the
root's permissions; items are ``file``/``folder`` resources (``m365:<drive id>:<item id>``) with
``owners`` = the OneDrive's owner (``user:<email>``) or ``site:<site id>``, and attributes
``drive_id``, ``item_id``, ``parent_item_id``, ``site_id``, ``mime_type``, ``own_permissions``.
One grant per principal a permission reaches: sharing links as ``via = "link"`` with
``link_scope`` anyone (``anyone``) / organization (``domain:<the organisation's first domain>``) /
specific (one grant per person the link was given to), the link type as ``raw_role``
(view/edit/review → viewer/editor/commenter), ``expirationDateTime`` as ``expiry``, ``hasPassword``
in ``attributes``; direct grants (``grantedToV2`` / ``grantedToIdentitiesV2``: users, Entra groups,
SharePoint site groups, apps) and pending invitations (``invitation.email``) as ``via = "direct"``.
Guests' ``#EXT#`` logins are resolved to their real address; ``external`` = outside the
organisation's domains. Link URLs are never recorded (an "anyone" link's URL *is* the access).

Incremental runs (``collect.py``): after a full baseline (every ``full_every_days``) each run
reads every site and drive again (cheap), each drive's changes from its delta link (1 RU), and
applies them to the previous *complete* bag (checked against its manifest first), re-reading
permissions only where they may have changed, and seals a **complete** bag equal to what a full
run would write. A 410 on a delta link walks that drive again from scratch (run.json:
``drives_resynced``).

Memory: records are streamed. Per drive being walked, a :class:`~connectors.m365_files.tree.Tree`
(item id → parent, own-permissions flag, folder flag; ~200 bytes an item, measured) and the grants of its
folders that have their own permissions; an incremental run holds that for each drive that
changed, plus the changes themselves and the ids of the records they replace. Nothing is held per
tenant but the list of drives.
"""

from __future__ import annotations

from typing import Any, Iterator

from pydantic import Field

from connectors._graph import GraphClients, GraphSettings
from connectors.base import CheckResult, Connector, RunContext, choose_mode
from connectors.m365_files.collect import CURSOR_VERSION, Snapshot
from connectors.m365_files.reader import COST, DRIVE_SELECT
from evidence.model import Record, utc_iso

PERMISSIONS = ("Sites.Read.All", "User.Read.All")


class M365FilesConfig(GraphSettings):
    ru_per_minute: int = Field(1200, ge=1, description="SharePoint resource units per minute for this app: 1,200 for "
                                                       "0–1k licences, 2,400 1k–5k, 3,600 5k–15k, 4,800 15k–50k, 6,000 above")
    sites: bool = Field(True, description="SharePoint team sites' document libraries")
    onedrives: bool = Field(True, description="every OneDrive")
    incremental: bool = True
    full_every_days: float = Field(7.0, gt=0, description="a full baseline at least this often")


class M365FilesConnector(Connector):
    kind = "m365_files"
    Config = M365FilesConfig
    streams = ("resources", "grants")
    permissions = PERMISSIONS
    description = "OneDrive and SharePoint: every drive's files and folders with who can reach them"

    @classmethod
    def make_clients(cls, config: M365FilesConfig) -> GraphClients:
        from evidence.bundle import collector_version

        return GraphClients(config, ru_per_minute=config.ru_per_minute, version=collector_version())

    def check(self) -> CheckResult:
        result = CheckResult()
        cfg: M365FilesConfig = self.config
        try:
            c: GraphClients = self.ensure_clients()
            c.token()
            result.add("app credential", True, f"token issued for {cfg.client_id}")
        except Exception as exc:  # check never raises: it explains
            return result.add("app credential", False, str(exc))
        ctx = RunContext.for_check()

        def probe(name: str, permission: str, fn: Any) -> Any:
            try:
                value = fn()
                result.add(name, True, "readable")
                return value
            except Exception as exc:
                result.add(name, False, f"{exc} (the app needs the Graph application permission {permission}, "
                                        "with admin consent)")
                return None

        sites = probe("sites (getAllSites)", "Sites.Read.All", lambda: c.get(
            ctx, "sites.getAllSites", "/sites/getAllSites", params={"$select": "id,isPersonalSite", "$top": 1},
            units=COST["sites.getAllSites"])[1].get("value", []))
        if cfg.onedrives:
            probe("users (OneDrive owners)", "User.Read.All", lambda: c.get(
                ctx, "users.list", "/users", params={"$select": "id", "$top": 1}, units=COST["users.list"]))
        if sites:
            site = sites[0]["id"]

            def permissions() -> None:
                drive = c.get(ctx, "sites.drive", f"/sites/{site}/drive", params={"$select": DRIVE_SELECT})[1]
                root = c.get(ctx, "items.get", f"/drives/{drive['id']}/root", params={"$select": "id"})[1]
                c.get(ctx, "items.permissions", f"/drives/{drive['id']}/items/{root['id']}/permissions",
                      units=COST["items.permissions"])

            probe("drive items and their permissions", "Sites.Read.All", permissions)
        return result

    def snapshot(self, ctx: RunContext) -> Iterator[Record]:
        cfg: M365FilesConfig = self.config
        clients: GraphClients = self.ensure_clients()
        credential = "certificate" if cfg.certificate_file is not None else "client secret"
        ctx.identity = f"app {cfg.client_id} in tenant {cfg.tenant_id} ({credential})"
        run = Snapshot(cfg, clients, ctx)
        mode, why, cursor = self._mode(ctx, run)
        ctx.note("mode", mode)
        ctx.note("mode_reason", why)
        plan = run.read.plan()
        run.read.describe(len(plan.drives))
        ctx.note("scanned", {"sites": plan.sites, "personal_sites": plan.personal_sites, "drives": len(plan.drives),
                             "personal_sites_without_drive": plan.without_drive})
        if mode == "incremental":
            run.baseline = cursor["baseline_utc"]  # type: ignore[index]
            yield from run.incremental(plan.drives, cursor)  # type: ignore[arg-type]
        else:
            run.baseline = utc_iso(ctx.started)
            yield from run.full(plan.drives)
        ctx.note("scanned", {**ctx.notes["scanned"], "items_walked": run.stats["items"],
                             "permissions_read": run.stats["permissions_read"]})
        if run.stats.get("items_repeated"):
            ctx.note("items_repeated_in_delta", run.stats["items_repeated"])
        if cfg.incremental:
            ctx.set_cursor(run.cursor())

    def _mode(self, ctx: RunContext, run: Snapshot) -> tuple[str, str, dict[str, Any] | None]:
        cfg: M365FilesConfig = self.config
        return choose_mode(ctx, enabled=cfg.incremental, version=CURSOR_VERSION, config_digest=run.config_digest(),
                           full_every_days=cfg.full_every_days)


__all__ = ["M365FilesConfig", "M365FilesConnector"]

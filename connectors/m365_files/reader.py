"""The Graph calls of ``m365_files``, each with its documented resource-unit cost (reference/apis.md
§1.4: a delta without a token 2, with one 1; any permission read 5; ``getAllSites`` and
``sites/{id}/drives`` 2; one item or drive 1; ``users`` with ``$select`` 1), shared by both modes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator

from connectors._graph import GraphClients, GraphFailure
from connectors.base import RunContext
from connectors.m365_files import mapping as m

PREFER = "hierarchicalsharing, deltashowremovedasdeleted, deltatraversepermissiongaps, deltashowsharingchanges"
DELTA_SELECT = "id,name,parentReference,file,folder,package,shared,deleted,lastModifiedDateTime,size,webUrl,root"
SITE_SELECT = "id,name,displayName,webUrl,isPersonalSite"
DRIVE_SELECT = "id,name,driveType,webUrl,createdDateTime,owner"
USER_SELECT = "id,mail,userPrincipalName"
COST = {"sites.getAllSites": 2, "sites.drives": 2, "sites.drive": 1, "users.list": 1, "drives.delta": 2,
        "drives.delta.next": 1, "items.permissions": 5}
SHARED_CHANGED = "@microsoft.graph.sharedChanged"


@dataclass
class Plan:
    """The drives one run reads, in a stable order, and what the listing noticed."""

    drives: list[m.DriveInfo] = field(default_factory=list)
    sites: int = 0
    personal_sites: int = 0
    without_drive: int = 0


@dataclass
class DeltaPage:
    items: list[dict[str, Any]]
    delta_link: str | None


class Reader:
    def __init__(self, config: Any, clients: GraphClients, ctx: RunContext):
        self.config, self.clients, self.ctx = config, clients, ctx

    # -- what is there ------------------------------------------------------------------------------
    def plan(self) -> Plan:
        """Every site (one ``getAllSites`` listing), then each site's drives in ``$batch``es of 20:
        a team site's document libraries (``sites/{id}/drives``, 2 RU) and a personal site's one
        OneDrive (``sites/{id}/drive``, 1 RU)."""
        cfg, plan = self.config, Plan()
        sites = [s for s in self.sites() if (s.get("isPersonalSite") and cfg.onedrives) or (not s.get("isPersonalSite") and cfg.sites)]
        plan.sites = sum(1 for s in sites if not s.get("isPersonalSite"))
        plan.personal_sites = len(sites) - plan.sites
        addresses = self.user_addresses() if plan.personal_sites else {}
        by_id = {s["id"]: s for s in sites}
        for personal, endpoint in ((False, "sites.drives"), (True, "sites.drive")):
            calls = [(s["id"], f"/sites/{s['id']}/{endpoint.split('.')[1]}?$select={DRIVE_SELECT}", COST[endpoint])
                     for s in sites if bool(s.get("isPersonalSite")) == personal]
            if not calls:
                continue
            self.ctx.source(endpoint=endpoint, url=f"/sites/{{id}}/{endpoint.split('.')[1]}", batched=True, sites=len(calls),
                            **{"$select": DRIVE_SELECT})
            for key, result in self.clients.batch(self.ctx, endpoint, calls).items():
                s = by_id[key]
                where = f"{'personal site' if personal else 'SharePoint site'} {s.get('webUrl') or s['id']}"
                if isinstance(result, GraphFailure):
                    if result.status == 404 and personal:
                        plan.without_drive += 1  # a personal site whose OneDrive was never provisioned
                        continue
                    self.ctx.error(where, f"its drives could not be listed: {result.describe()}")
                    continue
                body = result[1]
                drives = list(body.get("value", [])) if "value" in body else [body]
                if body.get("@odata.nextLink"):
                    for page in self.clients.pages(self.ctx, endpoint, body["@odata.nextLink"], units=COST[endpoint], where=where):
                        drives += page.get("value", [])
                plan.drives.extend(self._drive(d, s, addresses) for d in drives if d.get("id"))
        plan.drives.sort(key=lambda d: (d.location != "sharepoint", d.site_url or "", d.id))
        return plan

    def sites(self) -> Iterator[dict[str, Any]]:
        params = {"$select": SITE_SELECT}
        self.ctx.source(endpoint="sites.getAllSites", url="/sites/getAllSites", **params)
        for page in self.clients.pages(self.ctx, "sites.getAllSites", "/sites/getAllSites", params=params,
                                       units=COST["sites.getAllSites"], where="site listing"):
            yield from page.get("value", [])

    def user_addresses(self) -> dict[str, str]:
        """Entra user id → address (``mail``, else the UPN), so a OneDrive's owner gets the id the
        ``entra_id`` connector gives the same person."""
        params = {"$select": USER_SELECT, "$top": 999}
        self.ctx.source(endpoint="users.list", url="/users", **params)
        out: dict[str, str] = {}
        for page in self.clients.pages(self.ctx, "users.list", "/users", params=params, units=COST["users.list"],
                                       where="user listing"):
            for u in page.get("value", []):
                address, _ = m.real_address(u.get("mail") or u.get("userPrincipalName"))
                if address and u.get("id"):
                    out[u["id"]] = address
        return out

    @staticmethod
    def _drive(d: dict[str, Any], site: dict[str, Any], addresses: dict[str, str]) -> m.DriveInfo:
        if site.get("isPersonalSite"):
            owner = (d.get("owner") or {}).get("user") or {}
            email = addresses.get(owner.get("id") or "") or m.real_address(owner.get("email"))[0]
            pid = f"user:{email}" if email else f"user:entra:{owner['id']}" if owner.get("id") else f"site:{site['id']}"
            return m.DriveInfo(d["id"], "onedrive", d.get("name"), d.get("webUrl"), d.get("driveType"), pid, email,
                               created=d.get("createdDateTime"))
        return m.DriveInfo(d["id"], "sharepoint", d.get("name"), d.get("webUrl"), d.get("driveType"), f"site:{site['id']}",
                           site_id=site["id"], site_url=site.get("webUrl"), site_name=site.get("displayName") or site.get("name"),
                           created=d.get("createdDateTime"))

    def describe(self, drives: int) -> None:
        """The per-drive calls, for run.json's sources."""
        self.ctx.source(endpoint="drives.delta", url="/drives/{id}/root/delta", drives=drives, Prefer=PREFER,
                        **{"$select": DELTA_SELECT})
        self.ctx.source(endpoint="items.permissions", url="/drives/{id}/items/{id}/permissions", batched=True,
                        only="each drive's root and the items whose shared facet is set")

    # -- one drive ----------------------------------------------------------------------------------
    def delta(self, drive: m.DriveInfo, link: str | None = None) -> Iterator[DeltaPage]:
        """Pages of ``root/delta``: the whole drive (no link), or what changed since ``link``. The
        last page carries the next delta link. Raises ``DeltaReset`` on 410."""
        if link is None:
            path, params, first = f"/drives/{drive.id}/root/delta", {"$select": DELTA_SELECT}, COST["drives.delta"]
        else:
            path, params, first = link, None, COST["drives.delta.next"]
        for body in self.clients.pages(self.ctx, "drives.delta", path, params=params, headers={"Prefer": PREFER},
                                       units=first, next_units=COST["drives.delta.next"], where=drive.label):
            yield DeltaPage([i for i in body.get("value", []) if isinstance(i, dict) and i.get("id")],
                            body.get("@odata.deltaLink"))

    def permissions(self, drive: m.DriveInfo, item_ids: list[str]) -> dict[str, list[dict[str, Any]] | GraphFailure]:
        """``items/{id}/permissions`` of each item, 20 per ``$batch`` (5 RU each), pages followed."""
        calls = [(i, f"/drives/{drive.id}/items/{i}/permissions", COST["items.permissions"]) for i in item_ids]
        out: dict[str, list[dict[str, Any]] | GraphFailure] = {}
        for key, result in (self.clients.batch(self.ctx, "items.permissions", calls) if calls else {}).items():
            if isinstance(result, GraphFailure):
                out[key] = result
                continue
            perms = list(result[1].get("value", []))
            link = result[1].get("@odata.nextLink")
            if link:
                for page in self.clients.pages(self.ctx, "items.permissions", link, units=COST["items.permissions"],
                                               where=f"permissions of {key} in {drive.label}"):
                    perms += page.get("value", [])
            out[key] = perms
        return out


def shared_changed(item: dict[str, Any]) -> bool:
    return str(item.get(SHARED_CHANGED, "")).lower() == "true"


__all__ = ["COST", "DELTA_SELECT", "PREFER", "DeltaPage", "Plan", "Reader", "shared_changed"]

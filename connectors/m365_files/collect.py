"""The two ways an ``m365_files`` snapshot is taken — every drive walked with ``root/delta``, or
the previous complete bag plus each drive's changes since its delta link — and the one piece
both use to give every item its grants (:class:`DriveWork`), so they write the same records for
the same state.

Who has what on an item:

* the drive root and every item whose ``shared`` facet is set (under ``Prefer:
  hierarchicalsharing``: an item whose sharing differs from its parent's) have their own
  permissions, read with ``items/{id}/permissions`` — shallowest first, because a permission an
  item shares (by id) with its nearest such ancestor is recorded as inherited from where that
  ancestor has it;
* every other item has exactly its nearest such ancestor's grants, as ``via = "inherited"`` with
  ``inherited_from`` naming where each is set (the drive, or a folder).

Incremental runs re-read permissions only where they may have changed: items annotated
``@microsoft.graph.sharedChanged``, folders in the changes that carry a ``shared`` facet (the
annotation is known to be missing on folders, msgraph-sdk-java#2548), items that became shared or
moved, and — top-down — items with their own permissions below a folder whose grants came out
different (or whose nearest shared ancestor changed). Items without their own permissions below
such a folder get its new grants; the rest of the base bag is carried over unchanged.
"""

from __future__ import annotations

import hashlib
import threading
from collections import Counter
from itertools import groupby
from typing import Any, Callable, Iterable, Iterator

from connectors._graph import DeltaReset, GraphClients, GraphFailure
from connectors.base import Cancelled, ConnectorError, RunContext, SourceError
from connectors.google_drive.pool import run_pool
from connectors.m365_files import mapping as m
from connectors.m365_files.reader import Reader, shared_changed
from connectors.m365_files.tree import History, Node, Tree
from evidence.model import Record, canonical_json

CURSOR_VERSION = 1
MAX_CHANGES_LISTED = 10_000   # run.json lists the changes applied, up to this many
PERMISSION_CHUNK = 200        # items whose permissions are asked at once (10 $batch calls)
EMIT_EVERY = 1_000


class DriveWork:
    """Grants of one drive's items: own permissions read shallowest first, the rest inherited."""

    def __init__(self, run: "Snapshot", drive: m.DriveInfo, tree: Tree, base: dict[str, list[dict[str, Any]]] | None = None):
        self.run, self.drive, self.tree = run, drive, tree
        self.base = base or {}                         # resource id -> grants in the base bag (own folders, root)
        self.fresh: dict[str, list[dict[str, Any]]] = {}  # item id -> grants read this run (own folders, root)
        self.failed = False
        self.read_count = 0

    def rid(self, item_id: str) -> str:
        return m.drive_rid(self.drive.id) if item_id == self.tree.root else m.item_rid(self.drive.id, item_id)

    def grants_of(self, item_id: str) -> list[dict[str, Any]]:
        if item_id in self.fresh:
            return self.fresh[item_id]
        return self.base.get(self.rid(item_id), [])

    def own_pass(self, own: Iterable[str], wanted: Callable[[str], bool] | None = None,
                 on_read: Callable[[str, list[Record]], None] = lambda x, r: None) -> Iterator[list[Record]]:
        """Read the permissions of the items among ``own`` (all, or the ``wanted`` ones), shallowest
        first: an item's grants need its nearest own-permission ancestor's. Without ``wanted``
        (a full walk) levels share ``$batch``es; with it, a level's ``wanted`` may depend on what
        the levels above it gave, so each level is asked on its own."""
        ordered = sorted((self.tree.depth(x), x) for x in own)
        if wanted is None:
            flat = [x for _, x in ordered]
            yield from self._read([flat[n:n + PERMISSION_CHUNK] for n in range(0, len(flat), PERMISSION_CHUNK)], on_read)
            return
        for _, level in groupby(ordered, key=lambda dx: dx[0]):
            todo = [x for _, x in level if wanted(x)]
            yield from self._read([todo[n:n + PERMISSION_CHUNK] for n in range(0, len(todo), PERMISSION_CHUNK)], on_read)

    def _read(self, chunks: Iterable[list[str]], on_read: Callable[[str, list[Record]], None]) -> Iterator[list[Record]]:
        run = self.run
        for chunk in chunks:
            answers = run.read.permissions(self.drive, chunk)
            self.read_count += len(chunk)
            for x in chunk:
                got = answers.get(x)
                if isinstance(got, GraphFailure) or got is None:
                    # named in run.json (the run is partial); an incremental run keeps the base's grants
                    self.failed = True
                    run.ctx.error(f"permissions of {self.rid(x)} in {self.drive.label}",
                                  got.describe() if got is not None else "no answer")
                    continue
                src = self.tree.source(x)
                from_source = m.origins(self.grants_of(src), self.rid(src)) if src is not None else {}
                records = m.item_grants(self.rid(x), got, run.org, scope=self.drive.scope, tenant=run.tenant,
                                        from_source=from_source, rid_of_item=self.rid)
                if self.tree.nodes[x].folder:
                    self.fresh[x] = [r.data for r in records]  # type: ignore[misc]
                on_read(x, records)
                yield records

    def inherited(self, item_id: str) -> list[Record]:
        src = self.tree.source(item_id)
        if src is None:
            return []
        rid, src_rid = self.rid(item_id), self.rid(src)
        return [m.inherit(g, rid, src_rid) for g in self.grants_of(src)]


class Snapshot:
    """One run: full, or incremental on top of ``ctx.base``."""

    baseline: str | None = None

    def __init__(self, config: Any, clients: GraphClients, ctx: RunContext):
        self.config, self.clients, self.ctx = config, clients, ctx
        self.read = Reader(config, clients, ctx)
        self.org = ctx.organization
        self.tenant = config.tenant_id
        self.tokens: dict[str, dict[str, str]] = {}   # drive id -> {"delta": link, "root": root item id}
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()

    def count(self, **amounts: int) -> None:
        with self._lock:
            self.stats.update(amounts)

    def cursor(self) -> dict[str, Any]:
        return {"v": CURSOR_VERSION, "baseline_utc": self.baseline, "config": self.config_digest(),
                "drives": dict(sorted(self.tokens.items()))}

    def config_digest(self) -> str:
        """The settings that change *what* is collected, or where the delta links point: a change
        forces a full run (a stored delta link is only ever sent to the Graph host it came from)."""
        c = self.config
        what = {"tenant": c.tenant_id.lower(), "graph": c.graph_url, "sites": c.sites, "onedrives": c.onedrives,
                "domains": list(self.org.domains)}
        return hashlib.sha256(canonical_json(what).encode()).hexdigest()[:16]

    # -- full -------------------------------------------------------------------------------------
    def full(self, drives: list[m.DriveInfo]) -> Iterator[Record]:
        yield from run_pool(iter(drives), self.walk_drive, workers=self.config.workers)

    def walk_drive(self, drive: m.DriveInfo, emit: Callable[[list[Record]], None]) -> None:
        """One drive from scratch: its items streamed as they come, then the grants. Memory: the
        drive's :class:`Tree` and the grants of its folders that have their own permissions."""
        tree, link, repeated = Tree(None), None, 0
        try:
            for page in self.read.delta(drive):
                out: list[Record] = []
                for item in page.items:
                    if "deleted" in item:
                        continue
                    if m.is_root(item):
                        if tree.root is None:
                            tree.root = item["id"]
                            tree.add(item["id"], None, True, True)
                        continue
                    if item["id"] in tree.nodes:  # seen earlier in this walk: its record is written already
                        repeated += 1
                        continue
                    tree.add(item["id"], m.parent_of(item), m.has_own_permissions(item), m.is_folder(item))
                    out.append(m.item_resource(item, drive))
                emit(out)
                link = page.delta_link or link
            if tree.root is None:
                raise SourceError("the delta listing returned no root item", where=drive.label)
            emit([m.drive_resource(drive, tree.root)])
            work = DriveWork(self, drive, tree)
            for records in work.own_pass([x for x, n in tree.nodes.items() if n.own]):
                emit(records)
            out = []
            for x, node in tree.nodes.items():
                if not node.own:
                    out.extend(work.inherited(x))
                    if len(out) >= EMIT_EVERY:
                        emit(out)
                        out = []
            emit(out)
            self.count(items=len(tree.nodes) - 1, permissions_read=work.read_count)
            if repeated:
                # the delta feed repeats an item that changed while it was listed: the first
                # occurrence is in the bag; no delta link is kept, so the next run lists the drive again
                self.count(items_repeated=repeated)
            elif link and not work.failed:
                self.tokens[drive.id] = {"delta": link, "root": tree.root}
        except Cancelled:
            raise
        except ConnectorError as exc:
            self.tokens.pop(drive.id, None)
            self.ctx.error(drive.label, f"listing stopped: {exc}")

    # -- incremental ------------------------------------------------------------------------------
    def incremental(self, drives: list[m.DriveInfo], cursor: dict[str, Any]) -> Iterator[Record]:
        """Apply each drive's delta to the base bag's records; yields the complete new state."""
        ctx, base = self.ctx, self.ctx.base
        old: dict[str, dict[str, str]] = cursor.get("drives", {})
        by_id = {d.id: d for d in drives}
        gone = {d for d in old if d not in by_id}
        new = [d for d in drives if d.id not in old]

        # 1. each known drive's changes since its delta link (a 410 means: walk it again)
        changes: dict[str, dict[str, dict[str, Any]]] = {}
        resync: list[m.DriveInfo] = []
        failed: set[str] = set()

        def feed(drive: m.DriveInfo, emit: Callable[[list[Any]], None]) -> None:
            try:
                items: dict[str, dict[str, Any]] = {}
                link = None
                for page in self.read.delta(drive, old[drive.id]["delta"]):
                    for item in page.items:  # the last occurrence of an item is its state
                        items.pop(item["id"], None)
                        items[item["id"]] = item
                    link = page.delta_link or link
                emit([("ok", drive, items, link)])
            except DeltaReset as exc:
                emit([("reset", drive, str(exc))])
            except Cancelled:
                raise
            except ConnectorError as exc:
                emit([("failed", drive, str(exc))])

        resynced = []
        for result in run_pool(iter([d for d in drives if d.id in old]), feed, workers=self.config.workers):
            kind, drive = result[0], result[1]
            if kind == "ok":
                if result[3]:
                    self.tokens[drive.id] = {"delta": result[3], "root": old[drive.id]["root"]}
                if result[2]:
                    changes[drive.id] = result[2]
            elif kind == "reset":
                resync.append(drive)
                resynced.append({"drive": drive.id, "name": drive.label, "reason": result[2]})
            else:
                failed.add(drive.id)
                ctx.error(f"changes of {drive.label}", f"not read: {result[2]}")
        rebuild = {d.id for d in resync} | {d.id for d in new}
        dropped = gone | rebuild

        # 2. the shape of every drive that changed, and the grants its inheritance needs, from the base
        trees = {d: Tree(old[d]["root"]) for d in changes}
        for _, data in base.records("resources") if changes else ():
            a = data.get("attributes") or {}
            tree = trees.get(a.get("drive_id"))
            if tree is not None and data["kind"] != "drive":
                tree.add(a["item_id"], a.get("parent_item_id"), bool(a.get("own_permissions")), data["kind"] == "folder")
        base_grants: dict[str, dict[str, list[dict[str, Any]]]] = {d: {} for d in changes}
        for _, g in base.records("grants") if changes else ():
            rid = g["resource_id"]
            did = m.drive_of(rid) or ""
            tree = trees.get(did)
            if tree is None:
                continue
            node = tree.nodes.get(tree.root if rid == m.drive_rid(did) else rid.split(":", 2)[2])  # type: ignore[arg-type]
            if node is not None and node.own and node.folder:
                base_grants[did].setdefault(rid, []).append(g)

        # 3. the drives themselves, re-read every run
        for d in drives:
            if d.id not in rebuild:
                yield m.drive_resource(d, old[d.id]["root"])

        # 4. what changed: new records, and the base records they replace
        replaced = Replaced()
        listed: list[dict[str, str]] = []

        def apply(did: str, emit: Callable[[list[Record]], None]) -> None:
            drive = by_id[did]
            try:
                listed.extend(self.apply_changes(drive, trees[did], changes[did], base_grants[did], emit, replaced))
            except Cancelled:
                raise
            except ConnectorError as exc:  # what was written replaces its base records; the rest stays
                self.tokens.pop(did, None)
                ctx.error(f"changes of {drive.label}", f"not applied: {exc}")

        yield from run_pool(iter(sorted(d for d in changes if d not in dropped)), apply, workers=self.config.workers)
        trees.clear()
        base_grants.clear()

        # 5. new drives, and drives the service asked to resync, walked in full
        yield from run_pool(iter([d for d in drives if d.id in rebuild]), self.walk_drive, workers=self.config.workers)

        # 6. the base, minus what changed
        for key, data in base.records("resources"):
            did = (data.get("attributes") or {}).get("drive_id")
            if data["kind"] == "drive" or did in dropped or data["id"] in replaced.resources:
                continue
            yield Record("resources", key, data)
        for key, g in base.records("grants"):
            rid = g["resource_id"]
            if m.drive_of(rid) in dropped or rid in replaced.grants:
                continue
            yield Record("grants", key, g)

        # 7. what run.json says about it
        for d in failed:  # its records are the base's: the run is partial, and no link is kept
            self.tokens.pop(d, None)
        st = self.stats
        ctx.note("changes_applied", {"drives_with_changes": len(changes), "items_updated": st["items_updated"],
                                     "items_removed": st["items_removed"], "permissions_read": st["permissions_read"],
                                     "inherited_recomputed": st["inherited_recomputed"]})
        listed.sort(key=lambda c: (c["drive"], c["item"]))
        ctx.note("changes", listed[:MAX_CHANGES_LISTED])
        if len(listed) > MAX_CHANGES_LISTED:
            ctx.note("changes_not_listed", len(listed) - MAX_CHANGES_LISTED)
        ctx.note("drives_resynced", sorted(resynced, key=lambda r: r["drive"]))
        ctx.note("listed_in_full", {"new_drives": len(new), "resynced_drives": len(resync), "removed_drives": len(gone)})
        ctx.note("base", {"run_id": base.run_id, "bag": base.relpath, "tagmanifest_sha256": base.digest})

    def apply_changes(self, drive: m.DriveInfo, tree: Tree, items: dict[str, dict[str, Any]],
                      base: dict[str, list[dict[str, Any]]], emit: Callable[[list[Record]], None],
                      replaced: "Replaced") -> list[dict[str, str]]:
        """One drive's changes on top of its base shape: emits the new records, each marked in
        ``replaced`` (its base record is not carried over) before it is emitted; returns the
        changes, for run.json."""
        hist = History(tree)
        work = DriveWork(self, drive, tree, base)
        root_item: dict[str, Any] | None = None
        removed: set[str] = set()
        listed: list[dict[str, str]] = []
        for iid, item in items.items():
            if iid == tree.root:
                root_item = item
                continue
            if "deleted" in item:
                hist.change(iid, None)
                removed.add(iid)
            else:
                hist.change(iid, Node(m.parent_of(item), m.has_own_permissions(item), m.is_folder(item)))
            change = "removed" if iid in removed else "sharing changed" if shared_changed(item) else "updated"
            listed.append({"drive": drive.id, "item": iid, "change": change})
        replaced.mark(resources=[work.rid(x) for x in removed], grants=[work.rid(x) for x in removed])

        # items whose own permissions must be read again, whatever happens above them
        reread: set[str] = set()
        if root_item is not None and (shared_changed(root_item) or "shared" in root_item):
            reread.add(tree.root)  # type: ignore[arg-type]
        for iid, item in items.items():
            if iid == tree.root or iid in removed:
                continue
            node, before = tree.nodes[iid], hist.before.get(iid)
            if node.own and (shared_changed(item) or node.folder or before is None or not before.own
                             or before.parent != node.parent):
                reread.add(iid)

        changed_grants: set[str] = set()  # own folders (and the root) whose grants came out different

        def wanted(x: str) -> bool:
            if x in reread:
                return True
            if x == tree.root:
                return False
            src = tree.source(x)
            return src != hist.old_source(x) or src in changed_grants

        def on_read(x: str, records: list[Record]) -> None:
            replaced.mark(grants=[work.rid(x)])
            if not tree.nodes[x].folder:
                return
            before = hist.old_node(x)
            old = base.get(work.rid(x)) if before is not None and before.own and before.folder else None
            if old is None or _digest(old) != _digest(r.data for r in records):
                changed_grants.add(x)

        for records in work.own_pass([x for x, n in tree.nodes.items() if n.own], wanted, on_read):
            emit(records)

        # items without their own permissions whose nearest shared ancestor, or its grants, changed
        out: list[Record] = []
        marks: list[str] = []
        recomputed = 0
        for x, node in tree.nodes.items():
            if node.own:
                continue
            src = tree.source(x)
            if x in items or src != hist.old_source(x) or src in changed_grants:
                out.extend(work.inherited(x))
                marks.append(work.rid(x))
                recomputed += 1
                if len(out) >= EMIT_EVERY:
                    replaced.mark(grants=marks)
                    emit(out)
                    out, marks = [], []
        replaced.mark(grants=marks)
        emit(out)
        updated = [iid for iid in items if iid != tree.root and iid not in removed]
        replaced.mark(resources=[work.rid(x) for x in updated])
        emit([m.item_resource(items[iid], drive) for iid in updated])
        self.count(items_updated=len(updated), items_removed=len(removed), permissions_read=work.read_count,
                   inherited_recomputed=recomputed)
        if work.failed:
            self.tokens.pop(drive.id, None)
        return listed


class Replaced:
    """Base records an incremental run does not carry over: resources by id, grants by resource id."""

    def __init__(self) -> None:
        self.resources: set[str] = set()
        self.grants: set[str] = set()
        self._lock = threading.Lock()

    def mark(self, *, resources: Iterable[str] = (), grants: Iterable[str] = ()) -> None:
        with self._lock:
            self.resources.update(resources)
            self.grants.update(grants)


def _digest(grants: Iterable[Any]) -> list[str]:
    return sorted(canonical_json(g) for g in grants)


__all__ = ["CURSOR_VERSION", "DriveWork", "Snapshot"]

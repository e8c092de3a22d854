"""The run catalogue and committed cursors (TinyDB, ``vault/.state/catalog.json``).

It is an index, not evidence: everything in it can be rebuilt from the vault with
:func:`rebuild` (``shoseki reindex``). One document per run; writes are few (one per run) and
serialised between processes by the vault's ``catalog`` lock, because TinyDB itself has none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tinydb import Query, TinyDB

from evidence.verify import read_bag_info
from evidence.vault import Vault


class Catalogue:
    def __init__(self, vault: Vault):
        self.vault = vault
        self.path = vault.state / "catalog.json"

    def _db(self) -> TinyDB:
        self.vault.state.mkdir(mode=0o750, parents=True, exist_ok=True)
        return TinyDB(self.path, sort_keys=True, ensure_ascii=False)

    def record_run(self, row: dict[str, Any]) -> None:
        with self.vault.lock("catalog"), self._db() as db:
            db.table("runs").upsert(row, Query().run_id == row["run_id"])

    def commit_cursor(self, connector_id: str, cursor: Any, run_id: str) -> None:
        with self.vault.lock("catalog"), self._db() as db:
            db.table("cursors").upsert(
                {"connector_id": connector_id, "cursor": cursor, "run_id": run_id},
                Query().connector_id == connector_id,
            )

    def cursor(self, connector_id: str) -> Any:
        return self.cursor_entry(connector_id)[0]

    def cursor_entry(self, connector_id: str) -> tuple[Any, str | None]:
        """The committed cursor and the run (a complete one) that committed it."""
        with self._db() as db:
            doc = db.table("cursors").get(Query().connector_id == connector_id)
        return (None, None) if doc is None else (doc["cursor"], doc.get("run_id"))

    def run(self, run_id: str) -> dict[str, Any] | None:
        with self._db() as db:
            doc = db.table("runs").get(Query().run_id == run_id)
        return None if doc is None else dict(doc)

    def runs(self, connector_id: str | None = None) -> list[dict[str, Any]]:
        with self._db() as db:
            table = db.table("runs")
            rows = table.all() if connector_id is None else table.search(Query().connector_id == connector_id)
        return sorted((dict(r) for r in rows), key=lambda r: (r.get("started_utc") or "", r["run_id"]))

    def last_run(self, connector_id: str, *, status: str | None = None) -> dict[str, Any] | None:
        rows = [r for r in self.runs(connector_id) if status is None or r.get("status") == status]
        return rows[-1] if rows else None

    # -- uploads to the WORM copy (evidence/remote.py): one row per bag, keyed by its relpath --
    def record_upload(self, row: dict[str, Any]) -> None:
        with self.vault.lock("catalog"), self._db() as db:
            db.table("uploads").upsert(row, Query().bag == row["bag"])

    def upload(self, bag: str) -> dict[str, Any] | None:
        with self._db() as db:
            doc = db.table("uploads").get(Query().bag == bag)
        return None if doc is None else dict(doc)

    def uploads(self) -> list[dict[str, Any]]:
        with self._db() as db:
            rows = db.table("uploads").all()
        return sorted((dict(r) for r in rows), key=lambda r: (r.get("seq") or 0, r["bag"]))

    def replace_all(self, runs: list[dict[str, Any]], cursors: list[dict[str, Any]]) -> None:
        with self.vault.lock("catalog"):
            uploads = []
            if self.path.exists():
                with self._db() as db:  # what was copied to S3 is not in the vault: keep it
                    uploads = [dict(r) for r in db.table("uploads").all()]
                self.path.unlink()
            with self._db() as db:
                db.table("runs").insert_multiple(runs)
                db.table("cursors").insert_multiple(cursors)
                if uploads:
                    db.table("uploads").insert_multiple(uploads)


def run_row_from_bag(vault: Vault, bag: Path, digest: str | None) -> dict[str, Any]:
    info = read_bag_info(bag)
    try:
        run = json.loads((bag / "data" / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        run = {}
    return {
        "run_id": info.get("External-Identifier") or run.get("run_id") or bag.name,
        "connector_id": info.get("Connector-Id") or run.get("connector_id"),
        "connector_type": info.get("Connector-Type") or run.get("connector_type"),
        "status": info.get("Collection-Status") or run.get("status"),
        "started_utc": info.get("Collected-From-UTC") or run.get("started_utc"),
        "finished_utc": info.get("Collected-To-UTC") or run.get("finished_utc"),
        "bag": vault.relative(bag),
        "digest": digest,
        "counts": run.get("counts", {}),
        "reasons": run.get("reasons", []),
        "mode": run.get("mode", "full"),
    }


def rebuild(vault: Vault) -> tuple[int, int]:
    """Rebuild the catalogue from the vault alone; return (runs, cursors) written."""
    from evidence.verify import tagmanifest_digest

    runs, last_complete = [], {}
    for bag in vault.iter_bags():
        row = run_row_from_bag(vault, bag, tagmanifest_digest(bag))
        runs.append(row)
        if row["status"] == "complete":
            last_complete[row["connector_id"]] = (bag, row["run_id"])
    if vault.aborted.is_dir():
        for leftover in sorted(p for p in vault.aborted.iterdir() if p.is_dir()):
            note = leftover / "aborted.json"
            meta = json.loads(note.read_text(encoding="utf-8")) if note.exists() else {}
            runs.append({"run_id": leftover.name, "status": "aborted", **meta, "bag": None})
    cursors = []
    for connector_id, (bag, run_id) in last_complete.items():
        try:
            cursor = json.loads((bag / "data" / "run.json").read_text(encoding="utf-8")).get("cursor", {}).get("after")
        except (OSError, ValueError):
            cursor = None
        if cursor is not None:
            cursors.append({"connector_id": connector_id, "cursor": cursor, "run_id": run_id})
    Catalogue(vault).replace_all(runs, cursors)
    return len(runs), len(cursors)

"""The vault on disk: where sealed bags, runs in progress, the ledger and the state live.

::

    vault/
      ledger.jsonl             one line per sealed bag, hash-chained (evidence.ledger)
      minisign.pub             the public key bags are signed with (when signing is on)
      2026/2026-11/<bag>/      sealed bags, named by local date-time, connector id and run id
      .partial/<run>/          runs in progress (never inside the dated tree)
      .aborted/<run>/          leftovers of runs that died, moved aside at the next start
      .state/                  the catalogue (an index, rebuildable) and locks
"""

from __future__ import annotations

import fcntl
import os
import re
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator

DIR_MODE = 0o750
FILE_MODE = 0o640
BAG_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{4}[+-]\d{4})_([a-z0-9][a-z0-9-]*)_(r[0-9a-f]+)$")


class AlreadyRunning(RuntimeError):
    def __init__(self, what: str):
        super().__init__(f"{what} is already running in another process")
        self.what = what


def bag_name(started_local: datetime, connector_id: str, run_id: str) -> str:
    """``2026-11-26T0300+0900_files-main_r7f3c2a1``: sortable, no ``:`` (opens on Windows)."""
    return f"{started_local.strftime('%Y-%m-%dT%H%M%z')}_{connector_id}_{run_id}"


def makedirs(path: Path) -> None:
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)


class Vault:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.partial = self.root / ".partial"
        self.aborted = self.root / ".aborted"
        self.state = self.root / ".state"
        self.ledger = self.root / "ledger.jsonl"
        self.public_key = self.root / "minisign.pub"

    def ensure(self) -> "Vault":
        for d in (self.root, self.partial, self.aborted, self.state):
            makedirs(d)
        return self

    def dated_dir(self, started_local: datetime) -> Path:
        return self.root / started_local.strftime("%Y") / started_local.strftime("%Y-%m")

    def relative(self, path: Path) -> str:
        return Path(path).resolve().relative_to(self.root.resolve()).as_posix()

    def iter_bags(self) -> Iterator[Path]:
        """Every sealed bag folder in the dated tree, oldest first."""
        if not self.root.is_dir():
            return
        for year in sorted(p for p in self.root.iterdir() if re.fullmatch(r"\d{4}", p.name) and p.is_dir()):
            for month in sorted(p for p in year.iterdir() if re.fullmatch(r"\d{4}-\d{2}", p.name) and p.is_dir()):
                for bag in sorted(month.iterdir()):
                    if bag.is_dir():
                        yield bag

    @contextmanager
    def lock(self, name: str, *, wait: bool = True) -> Iterator[None]:
        """An exclusive lock between processes (``fcntl.flock``), released on exit or death."""
        makedirs(self.state / "locks")
        fd = os.open(self.state / "locks" / f"{name}.lock", os.O_RDWR | os.O_CREAT, 0o640)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise AlreadyRunning(name) from None
            yield
        finally:
            os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

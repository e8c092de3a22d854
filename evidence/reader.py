"""Reading the records of a sealed bag back: the base an incremental run builds on.

An incremental collection applies the source's changes to the records of the last *complete*
bag and seals a new, complete bag. The base is trusted only after it is checked: its tag
manifest must still have the digest the ledger recorded, and every record file must still have
the digest its manifest names; a base that fails either is not used (the connector then takes a
full snapshot and says why).
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from evidence.model import STREAMS


class BaseBundleProblem(Exception):
    """The base bag cannot be used: missing, changed since it was sealed, or unreadable."""


@dataclass(frozen=True)
class BaseBundle:
    """A sealed, complete bag of the same connector: ``path``, its tag-manifest ``digest``, ``run_id``."""

    path: Path
    digest: str
    run_id: str
    relpath: str = ""

    def run_info(self) -> dict[str, Any]:
        return json.loads((self.path / "data" / "run.json").read_text(encoding="utf-8"))

    def verify(self) -> None:
        """Raise :class:`BaseBundleProblem` unless the tag manifest and every record file are intact."""
        try:
            tag = (self.path / "tagmanifest-sha256.txt").read_bytes()
        except OSError as exc:
            raise BaseBundleProblem(f"{self.relpath or self.path}: cannot read its tag manifest ({exc.strerror})") from None
        if hashlib.sha256(tag).hexdigest() != self.digest:
            raise BaseBundleProblem(f"{self.relpath or self.path}: its tag manifest changed since it was sealed")
        manifest = self._manifest()
        for stream in STREAMS:
            rel = f"data/records/{stream}.jsonl.gz"
            if rel not in manifest:
                continue
            h = hashlib.sha256()
            try:
                with open(self.path / rel, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
            except OSError as exc:
                raise BaseBundleProblem(f"{self.relpath or self.path}: cannot read {rel} ({exc.strerror})") from None
            if h.hexdigest() != manifest[rel]:
                raise BaseBundleProblem(f"{self.relpath or self.path}: {rel} changed since it was sealed")

    def _manifest(self) -> dict[str, str]:
        try:
            text = (self.path / "manifest-sha256.txt").read_text(encoding="utf-8")
        except OSError as exc:
            raise BaseBundleProblem(f"{self.relpath or self.path}: cannot read its manifest ({exc.strerror})") from None
        out = {}
        for line in text.splitlines():
            digest, sep, rel = line.partition("  ")
            if sep:
                out[rel] = digest.lower()
        return out

    def records(self, stream: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(key, data)`` of every record of ``stream``, streamed (never all in memory)."""
        path = self.path / "data" / "records" / f"{stream}.jsonl.gz"
        if not path.exists():
            return
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                obj = json.loads(line)
                yield obj["key"], obj["record"]

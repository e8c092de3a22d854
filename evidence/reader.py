"""Reading the records of a sealed bag back: the base an incremental run builds on.

An incremental collection applies the source's changes to the records of the last *complete*
bag and seals a new, complete bag. The base is trusted only after it is checked: its tag
manifest must still have the digest the ledger recorded, its manifest the digest the tag manifest
names, and run.json and every record file the digest the manifest names; a base that fails is not
used (the connector then takes a full snapshot and says why). Judging (``evidence.findings``)
reads sealed bags through the same check.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from evidence.model import STREAMS
from evidence.verify import parse_manifest


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
        """``data/run.json`` (checked by :meth:`verify` like the records)."""
        return json.loads((self.path / "data" / "run.json").read_text(encoding="utf-8"))

    def verify(self) -> None:
        """Raise :class:`BaseBundleProblem` unless what is read from the bag is as it was sealed.

        The chain of digests is followed from the ledger down: the tag manifest has the digest the
        ledger recorded, the manifest the digest the tag manifest names, and ``data/run.json`` and
        every record file the digest the manifest names. A record file the manifest does not list
        is refused too (:meth:`records` would read it).
        """
        tag = self._read("tagmanifest-sha256.txt", "its tag manifest")
        if _sha256(tag) != self.digest:
            raise BaseBundleProblem(f"{self._name}: its tag manifest changed since it was sealed")
        manifest_bytes = self._read("manifest-sha256.txt", "its manifest")
        if _sha256(manifest_bytes) != parse_manifest(tag.decode("utf-8", "replace"))[0].get("manifest-sha256.txt"):
            raise BaseBundleProblem(f"{self._name}: manifest-sha256.txt changed since it was sealed")
        manifest = parse_manifest(manifest_bytes.decode("utf-8", "replace"))[0]
        for rel in ("data/run.json", *(f"data/records/{stream}.jsonl.gz" for stream in STREAMS)):
            if rel not in manifest:
                if (self.path / rel).exists():
                    raise BaseBundleProblem(f"{self._name}: {rel} is not in its manifest (added after sealing)")
                continue
            h = hashlib.sha256()
            try:
                with open(self.path / rel, "rb") as f:
                    for block in iter(lambda: f.read(1 << 20), b""):
                        h.update(block)
            except OSError as exc:
                raise BaseBundleProblem(f"{self._name}: cannot read {rel} ({exc.strerror})") from None
            if h.hexdigest() != manifest[rel]:
                raise BaseBundleProblem(f"{self._name}: {rel} changed since it was sealed")

    @property
    def _name(self) -> str:
        return self.relpath or str(self.path)

    def _read(self, name: str, what: str) -> bytes:
        try:
            return (self.path / name).read_bytes()
        except OSError as exc:
            raise BaseBundleProblem(f"{self._name}: cannot read {what} ({exc.strerror})") from None

    def records(self, stream: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """``(key, data)`` of every record of ``stream``, streamed (never all in memory)."""
        path = self.path / "data" / "records" / f"{stream}.jsonl.gz"
        if not path.exists():
            return
        with gzip.open(path, "rt", encoding="utf-8") as f:
            for line in f:
                obj = json.loads(line)
                yield obj["key"], obj["record"]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

"""Verification of bags and of the vault: manifests, tag manifest, signatures, chains, ledger.

Every check returns typed problems (never raises for a bad bag) so the CLI can print them in
plain words and tests can assert on them::

    Problem                       base: ``bag`` (vault-relative or absolute), ``path``, ``describe()``
     ├── MissingFile              a file the manifest names is gone
     ├── ChangedFile              its SHA-256 differs (``expected``, ``found``)
     ├── UnexpectedFile           a payload file no manifest names
     ├── BadBagStructure          bagit.txt / bag-info.txt / manifests unreadable or inconsistent
     ├── BadSignature             the minisign signature is missing, malformed, or does not match
     ├── BrokenChain              Previous-Bag-Digest does not name the bag before it
     ├── LedgerMismatch           a ledger line is broken, or disagrees with the bag it names
     └── UnledgeredBag            a bag in the dated tree that the ledger does not know
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from evidence import ledger as ledger_mod
from evidence.vault import Vault

TAG_FILES = ("bag-info.txt", "bagit.txt", "manifest-sha256.txt")


@dataclass(frozen=True)
class Problem:
    bag: str
    path: str = ""

    def describe(self) -> str:
        return f"{self.bag}: problem with {self.path}"


@dataclass(frozen=True)
class MissingFile(Problem):
    def describe(self) -> str:
        return f"{self.bag}: missing file {self.path} (listed in the manifest, not on disk)"


@dataclass(frozen=True)
class ChangedFile(Problem):
    expected: str = ""
    found: str = ""

    def describe(self) -> str:
        return f"{self.bag}: changed file {self.path} (expected sha256 {self.expected}, found {self.found})"


@dataclass(frozen=True)
class UnexpectedFile(Problem):
    def describe(self) -> str:
        return f"{self.bag}: unexpected file {self.path} (not listed in the manifest)"


@dataclass(frozen=True)
class BadBagStructure(Problem):
    message: str = ""

    def describe(self) -> str:
        return f"{self.bag}: {self.path + ': ' if self.path else ''}{self.message}"


@dataclass(frozen=True)
class BadSignature(Problem):
    reason: str = ""

    def describe(self) -> str:
        return f"{self.bag}: bad signature on {self.path}: {self.reason}"


@dataclass(frozen=True)
class BrokenChain(Problem):
    expected: str = ""
    found: str = ""

    def describe(self) -> str:
        return (
            f"{self.bag}: broken chain: bag-info.txt says the previous bag of this connector has "
            f"digest {self.found}, but {self.expected}"
        )


@dataclass(frozen=True)
class LedgerMismatch(Problem):
    line: int = 0
    message: str = ""

    def describe(self) -> str:
        return f"ledger.jsonl line {self.line}: {self.message}" + (f" ({self.bag})" if self.bag else "")


@dataclass(frozen=True)
class UnledgeredBag(Problem):
    def describe(self) -> str:
        return f"{self.bag}: this bag is not recorded in ledger.jsonl (added or moved after sealing?)"


@dataclass
class Report:
    bags: int = 0
    files: int = 0
    bytes: int = 0
    problems: list[Problem] = field(default_factory=list)
    checked: dict[str, str | None] = field(default_factory=dict)  # by verify_vault: bag -> its tag manifest's digest

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def summary(self) -> str:
        """What was checked, for a person: ``3 bag(s), 40 payload file(s), 1,024 bytes checked``."""
        return f"{self.bags} bag(s), {self.files} payload file(s), {self.bytes:,} bytes checked"


def _hash(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
            size += n
    return h.hexdigest(), size


def _read_manifest(bag: Path, name: str, label: str, problems: list[Problem]) -> dict[str, str] | None:
    try:
        text = (bag / name).read_text(encoding="utf-8")
    except FileNotFoundError:
        problems.append(MissingFile(label, name))
        return None
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(BadBagStructure(label, name, f"unreadable: {exc}"))
        return None
    entries, bad_lines = parse_manifest(text)
    problems += [BadBagStructure(label, name, f"line {no} is not '<sha256>  <path>'") for no in bad_lines]
    return entries


def parse_manifest(text: str) -> tuple[dict[str, str], list[int]]:
    """``path -> sha256`` of a BagIt manifest (``<sha256>  <path>`` lines), and the numbers of the
    lines that are not that (an absolute path or ``..`` is not)."""
    entries: dict[str, str] = {}
    bad_lines: list[int] = []
    for no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64 or rel.startswith("/") or ".." in Path(rel).parts:
            bad_lines.append(no)
            continue
        entries[rel] = digest.lower()
    return entries, bad_lines


def read_bag_info(bag: Path) -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        text = (bag / "bag-info.txt").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return info
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            info[key.strip()] = value.strip()
    return info


def tagmanifest_digest(bag: Path) -> str | None:
    try:
        return hashlib.sha256((bag / "tagmanifest-sha256.txt").read_bytes()).hexdigest()
    except OSError:
        return None


def verify_bag(bag: Path, *, label: str | None = None, public_key=None, workers: int = 2) -> Report:
    """Check one bag: structure, both manifests, unexpected files, Payload-Oxum, signature."""
    label = label or str(bag)
    report = Report(bags=1)
    problems = report.problems
    if not (bag / "bagit.txt").is_file():
        problems.append(MissingFile(label, "bagit.txt"))
    tags = _read_manifest(bag, "tagmanifest-sha256.txt", label, problems)
    payload = _read_manifest(bag, "manifest-sha256.txt", label, problems)
    if tags is not None:
        for name in TAG_FILES:
            if name not in tags:
                problems.append(BadBagStructure(label, "tagmanifest-sha256.txt", f"does not list {name}"))
        for rel, expected in sorted(tags.items()):
            path = bag / rel
            if not path.is_file():
                problems.append(MissingFile(label, rel))
                continue
            found, _ = _hash(path)
            if found != expected:
                problems.append(ChangedFile(label, rel, expected, found))
    if payload is not None:
        on_disk = set()
        data = bag / "data"
        for root, dirs, files in os.walk(data):
            dirs.sort()
            for f in files:
                on_disk.add((Path(root) / f).relative_to(bag).as_posix())
        for rel in sorted(on_disk - set(payload)):
            problems.append(UnexpectedFile(label, rel))
        present = sorted(rel for rel in payload if rel in on_disk)
        for rel in sorted(set(payload) - on_disk):
            problems.append(MissingFile(label, rel))
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for rel, (found, size) in zip(present, pool.map(lambda r: _hash(bag / r), present)):
                report.files += 1
                report.bytes += size
                if found != payload[rel]:
                    problems.append(ChangedFile(label, rel, payload[rel], found))
        info = read_bag_info(bag)
        oxum = info.get("Payload-Oxum")
        expected_oxum = f"{report.bytes}.{report.files}"
        if oxum and not any(isinstance(p, (MissingFile, UnexpectedFile)) for p in problems) and oxum != expected_oxum:
            problems.append(BadBagStructure(label, "bag-info.txt", f"Payload-Oxum is {oxum}, the payload is {expected_oxum}"))
    problems.extend(_check_signature(bag, label, public_key))
    return report


def _check_signature(bag: Path, label: str, public_key) -> list[Problem]:
    sig = bag / "tagmanifest-sha256.txt.minisig"
    key_id = read_bag_info(bag).get("Signing-Key-Id")
    if not sig.exists():
        if key_id:
            return [BadSignature(label, sig.name, f"bag-info.txt says it was signed by key {key_id}, but the signature file is missing")]
        return []
    if public_key is None:
        return [BadSignature(label, sig.name, "signed, but no public key was found to check it (vault/minisign.pub or --public-key)")]
    from evidence.signing import SigningError, verify_file

    try:
        verify_file(public_key, bag / "tagmanifest-sha256.txt", sig)
    except SigningError as exc:
        return [BadSignature(label, sig.name, getattr(exc, "reason", None) or str(exc))]
    return []


def load_public_key(path: Path | None):
    if path is None or not path.exists():
        return None
    from evidence.signing import PublicKey

    return PublicKey.load(path)


class VerifyStopped(Exception):
    """``verify_vault`` was asked to stop before it checked every bag (nothing it found is complete)."""


def verify_vault(vault: Vault, *, public_key_path: Path | None = None, workers: int = 2,
                 stop: Callable[[], bool] | None = None) -> Report:
    """Every bag, every per-connector chain, and the ledger. ``stop`` is asked before each bag;
    when it says so, :class:`VerifyStopped` is raised (the daemon's scheduled check, on SIGTERM)."""
    report = Report()
    public_key = load_public_key(public_key_path or vault.public_key)
    state = ledger_state(vault)
    bags_on_disk, by_connector = state.bags, state.by_connector
    report.problems.extend(state.problems)
    for rel, bag in sorted(bags_on_disk.items()):
        if stop is not None and stop():
            raise VerifyStopped(f"stopped after {report.bags} of {len(bags_on_disk)} bag(s)")
        report.checked[rel] = tagmanifest_digest(bag)
        r = verify_bag(bag, label=rel, public_key=public_key, workers=workers)
        report.bags += 1
        report.files += r.files
        report.bytes += r.bytes
        report.problems.extend(r.problems)
    for connector_id, chain in by_connector.items():
        previous: ledger_mod.LedgerEntry | None = None
        for entry in chain:
            bag = bags_on_disk.get(entry.bag)
            if bag is not None:
                stated = read_bag_info(bag).get("Previous-Bag-Digest", "")
                want = f"sha256:{previous.tagmanifest_sha256}" if previous else "none"
                if stated != want:
                    if previous is None:
                        why = "it is the first bag of this connector in the ledger"
                    elif previous.bag not in bags_on_disk:
                        why = f"the previous bag {previous.bag} is missing"
                    else:
                        why = f"the previous bag {previous.bag} has digest {want}"
                    report.problems.append(BrokenChain(entry.bag, "bag-info.txt", expected=why, found=stated or "(none)"))
                elif previous is not None and previous.bag not in bags_on_disk:
                    why = f"the previous bag {previous.bag} is missing"
                    report.problems.append(BrokenChain(entry.bag, "bag-info.txt", expected=why, found=stated))
                elif previous is not None:
                    actual = tagmanifest_digest(bags_on_disk[previous.bag])
                    if f"sha256:{actual}" != stated:
                        why = f"the previous bag {previous.bag} now has digest sha256:{actual}"
                        report.problems.append(BrokenChain(entry.bag, "bag-info.txt", expected=why, found=stated))
            previous = entry
    return report


@dataclass
class LedgerState:
    """The bags in the vault and what the ledger says of them, read at one moment."""

    bags: dict[str, Path]                                   # relpath -> bag directory
    by_connector: dict[str, list[ledger_mod.LedgerEntry]]   # the ledger's lines per connector, in order
    problems: list[Problem]                                 # the ledger's own: chain, missing, changed, unledgered


def ledger_state(vault: Vault) -> LedgerState:
    """List the bags and check the ledger against them (small files only: no payload is hashed).

    In a live vault (one with ``.state/``) this holds the ledger lock, so a seal in progress (the
    rename into the dated tree, then its ledger line) is never seen half done; a copy of a vault
    (an auditor's) is only read, never written to.
    """
    live = vault.state.is_dir() and os.access(vault.state, os.W_OK)
    with vault.lock("ledger") if live else contextlib.nullcontext():
        bags = {vault.relative(b): b for b in vault.iter_bags()}
        ledgered: dict[str, ledger_mod.LedgerEntry] = {}
        by_connector: dict[str, list[ledger_mod.LedgerEntry]] = defaultdict(list)
        problems = list(_check_ledger(vault, ledgered, by_connector, bags))
    problems += [UnledgeredBag(rel) for rel in sorted(set(bags) - set(ledgered))]
    return LedgerState(bags, by_connector, problems)


def _check_ledger(vault, ledgered, by_connector, bags_on_disk) -> Iterator[Problem]:
    prev = ledger_mod.GENESIS
    expected_seq = 1
    for no, raw in ledger_mod.read_lines(vault.ledger):
        try:
            entry = ledger_mod.LedgerEntry.parse(raw, no)
        except (ValueError, KeyError, TypeError) as exc:
            yield LedgerMismatch("", "", no, f"not a valid ledger line ({exc})")
            prev = hashlib.sha256(raw).hexdigest()
            continue
        if entry.prev_line_sha256 != prev:
            yield LedgerMismatch(entry.bag, "", no, "the chain is broken here: the line before it was changed, removed or reordered")
        if entry.seq != expected_seq:
            yield LedgerMismatch(entry.bag, "", no, f"sequence number {entry.seq}, expected {expected_seq}")
        expected_seq = entry.seq + 1
        prev = entry.line_sha256
        ledgered[entry.bag] = entry
        by_connector[entry.connector_id].append(entry)
        bag = bags_on_disk.get(entry.bag)
        if bag is None:
            yield LedgerMismatch(entry.bag, "", no, "the bag this line records is missing from the vault")
            continue
        found = tagmanifest_digest(bag)
        if found != entry.tagmanifest_sha256:
            yield LedgerMismatch(entry.bag, "", no, f"the bag's tagmanifest-sha256.txt has digest {found}, the ledger recorded {entry.tagmanifest_sha256}")

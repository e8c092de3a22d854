"""``shoseki export --from DATE --to DATE OUT.zip``: one period's evidence for the auditor.

The zip holds one top folder, ``shoseki-export_<from>_<to>/``::

    README.txt              ja + en (UTF-8 with BOM): what is inside and how to verify it offline
                            with standard tools, one command a line, each line starting "$ "
    index.html              the vault index (evidence.vault_index) for the exported bags only
    minisign.pub            the public key the bags are signed with (when the vault has one)
    ledger-excerpt.jsonl    the ledger lines of the exported bags, exactly as in ledger.jsonl,
                            preceded by the line just before the first of them (the anchor)
    2026/2026-11/<bag>/…    every bag sealed in the period, at its vault-relative path

Which bags: the ledger lines whose ``sealed_utc`` falls on a local date (organisation time zone)
from ``--from`` to ``--to`` inclusive, and every line between the first and the last of them, so
that the excerpt is an unbroken piece of the chain. The anchor line lets an auditor check the
first exported line's ``prev_line_sha256`` against a line already known (the last line of the
previous export, whose SHA-256 that export's README states); with no line before (the first
bag of the vault) the first line names 64 zeros instead.

Nothing here judges the evidence: problems the vault already shows (a bag the ledger names but
the vault lacks, a broken chain) do not stop the export; they are listed in the README and
returned as warnings, and the auditor's own checks will show them too. Files are streamed into
the zip (no file is read into memory whole); the zip is written beside ``OUT.zip`` and renamed
into place when complete. Every name inside is ASCII (checked before anything is written).
"""

from __future__ import annotations

import os
import shutil
import zipfile
from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2

from evidence import ledger as ledger_mod
from evidence.vault import FILE_MODE, Vault
from evidence.verify import LedgerMismatch, ledger_state, read_bag_info

LEDGER_EXCERPT = "ledger-excerpt.jsonl"
GENERATED = ("README.txt", "index.html", "minisign.pub", LEDGER_EXCERPT)  # order at the top of the zip
CHUNK = 1 << 20
SCOPE = {
    "ja": "{date_from} 〜 {date_to}（{tz}、両日を含む）に封印された {n} 件のバンドル。{created_local} に shoseki export で書き出し。",
    "en": "the {n} bag(s) sealed from {date_from} to {date_to} ({tz}, both days included), exported by shoseki export on {created_local}.",
}


class ExportError(Exception):
    """The export cannot be made as asked; the message says why and what to do."""


@dataclass(frozen=True)
class LedgerLine:
    no: int
    raw: bytes
    entry: ledger_mod.LedgerEntry

    @property
    def sha256(self) -> str:
        return self.entry.line_sha256


@dataclass
class Selection:
    lines: list[LedgerLine]                 # the excerpt's lines after the anchor
    anchor: LedgerLine | None
    bags: list[str]                         # vault-relative, present on disk, sorted
    missing: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ExportResult:
    path: Path
    top: str
    bags: list[str]
    files: int
    bytes: int
    anchor_seq: int | None
    last_line_sha256: str
    warnings: list[str]


# -- which bags ---------------------------------------------------------------------------------------


def _read_ledger(vault: Vault) -> list[LedgerLine]:
    lines = []
    with vault.lock("ledger"):
        for no, raw in ledger_mod.read_lines(vault.ledger):
            try:
                line = LedgerLine(no, raw, ledger_mod.LedgerEntry.parse(raw, no))
                _local_date(line.entry.sealed_utc, timezone.utc)  # a time it can be placed by
                lines.append(line)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ExportError(
                    f"{vault.ledger}: line {no} is not a valid ledger line ({exc}); "
                    "run `shoseki verify` to see the vault's problems"
                ) from None
    return lines


def _local_date(utc_text: str, tz: Any) -> date:
    return datetime.fromisoformat(utc_text.replace("Z", "+00:00")).astimezone(tz).date()


def select(vault: Vault, date_from: date, date_to: date, tz: ZoneInfo) -> Selection:
    """The excerpt and the bags of the period (see the module doc); ExportError when empty."""
    lines = _read_ledger(vault)
    hits = [i for i, line in enumerate(lines) if date_from <= _local_date(line.entry.sealed_utc, tz) <= date_to]
    if not hits:
        raise ExportError(_empty_message(lines, date_from, date_to, tz))
    first, last = hits[0], hits[-1]
    excerpt = lines[first:last + 1]
    on_disk = {vault.relative(b) for b in vault.iter_bags()}  # a line naming a path outside the tree is not followed
    present, missing = [], []
    for line in excerpt:
        (present if line.entry.bag in on_disk else missing).append(line.entry.bag)
    return Selection(excerpt, lines[first - 1] if first > 0 else None, sorted(present), missing)


def _empty_message(lines: list[LedgerLine], date_from: date, date_to: date, tz: ZoneInfo) -> str:
    period = f"{date_from.isoformat()} to {date_to.isoformat()} ({tz})"
    if not lines:
        return f"nothing to export: the vault's ledger records no sealed bag yet (period asked: {period})"
    days = [_local_date(line.entry.sealed_utc, tz) for line in lines]
    return (f"nothing to export: no bag was sealed from {period}; "
            f"the vault holds bags sealed from {min(days).isoformat()} to {max(days).isoformat()}")


# -- what goes into the zip ---------------------------------------------------------------------------


def bag_files(bag: Path) -> list[Path]:
    """Every file of a bag, sorted by relative path; anything but a regular file is refused."""
    out = []
    for root, dirs, files in os.walk(bag):
        dirs.sort()
        for name in files:
            path = Path(root) / name
            if path.is_symlink() or not path.is_file():
                raise ExportError(f"{path}: not a regular file; a sealed bag holds only regular files")
            out.append(path)
    return sorted(out, key=lambda p: p.relative_to(bag).as_posix())


def plan(vault: Vault, top: str, bags: list[str]) -> list[tuple[str, Path]]:
    """``(name in the zip, file on disk)`` for every bag file, in the zip's order."""
    entries = []
    for rel in bags:
        bag = vault.root / rel
        entries += [(f"{top}/{rel}/{p.relative_to(bag).as_posix()}", p) for p in bag_files(bag)]
    return entries


def check_ascii(names: list[str]) -> None:
    bad = [n for n in names if not n.isascii()]
    if bad:
        shown = ", ".join(n.encode("ascii", "backslashreplace").decode() for n in bad[:5])
        raise ExportError(
            f"{len(bad)} file name(s) are not ASCII, which the export does not allow (auditors' tools "
            f"and Windows read them differently): {shown}{' …' if len(bad) > 5 else ''}"
        )


# -- the README ---------------------------------------------------------------------------------------


def key_id(public_key: Path) -> str | None:
    """The key id as minisign prints it (16 hex digits), or None without a key."""
    try:
        from evidence.signing import PublicKey

        return PublicKey.load(public_key).key_id_hex
    except Exception:
        return None


def _bag_row(vault: Vault, rel: str, tz: ZoneInfo, line: LedgerLine) -> dict[str, Any]:
    info = read_bag_info(vault.root / rel)
    sealed = datetime.fromisoformat(line.entry.sealed_utc.replace("Z", "+00:00")).astimezone(tz)
    return {
        "rel": rel, "sealed_local": sealed.strftime("%Y-%m-%d %H:%M"), "connector_id": line.entry.connector_id,
        "connector_type": info.get("Connector-Type") or line.entry.connector_type,
        "status": info.get("Collection-Status") or line.entry.status,
    }


def render_readme(context: dict[str, Any]) -> str:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("evidence", "templates"), autoescape=False,
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
    )
    return env.get_template("export_README.txt.j2").render(**context)


def readme_context(
    vault: Vault, sel: Selection, *, date_from: date, date_to: date, tz: ZoneInfo, organization: str,
    now: datetime, signed: bool, warnings: list[str],
) -> dict[str, Any]:
    by_bag = {line.entry.bag: line for line in sel.lines}
    rows = [_bag_row(vault, rel, tz, by_bag[rel]) for rel in sel.bags]
    rows.sort(key=lambda r: (r["sealed_local"], r["rel"]))
    return {
        "date_from": date_from.isoformat(), "date_to": date_to.isoformat(), "tz": str(tz),
        "organization": organization, "created_local": now.astimezone(tz).strftime("%Y-%m-%d %H:%M %z"),
        "created_utc": now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "rows": rows, "reports": sum(1 for r in rows if r["connector_type"] == "report"),
        "example": sel.bags[0], "signed": signed, "key_id": key_id(vault.public_key) if signed else None,
        "anchor": sel.anchor, "first": sel.lines[0], "last": sel.lines[-1], "excerpt_lines": len(sel.lines),
        "ledger_file": LEDGER_EXCERPT, "warnings": warnings, "genesis": ledger_mod.GENESIS,
    }


# -- writing ------------------------------------------------------------------------------------------


def _info(name: str, when: datetime, *, stored: bool = False, mode: int = 0o644) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=when.timetuple()[:6])
    info.compress_type = zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED
    info.external_attr = (0o100000 | mode) << 16
    return info


def _add_bytes(zf: zipfile.ZipFile, name: str, data: bytes, when: datetime) -> None:
    zf.writestr(_info(name, when), data)


def _add_file(zf: zipfile.ZipFile, name: str, path: Path) -> int:
    st = path.stat()
    when = datetime.fromtimestamp(max(st.st_mtime, 315532800))  # zip dates start in 1980
    info = _info(name, when, stored=path.name.endswith(".gz"), mode=st.st_mode & 0o777)
    info.file_size = st.st_size
    with open(path, "rb") as src, zf.open(info, "w", force_zip64=True) as dst:
        shutil.copyfileobj(src, dst, CHUNK)
    return st.st_size


def _warnings(vault: Vault, sel: Selection) -> list[str]:
    """What the auditor's checks of this export will find, said before they find it: the ledger's
    problems in the period (read now), and what the latest check of each bag found (payload files
    are not hashed again here; ``shoseki verify`` does that)."""
    from evidence.vault_index import load_cache

    lo, hi = sel.lines[0].no, sel.lines[-1].no
    chosen = set(sel.bags)
    out = [f"{rel}: the ledger records this bag, but it is missing from the vault (not in this export)" for rel in sel.missing]
    for p in ledger_state(vault).problems:
        in_range = isinstance(p, LedgerMismatch) and lo <= p.line <= hi
        if (in_range or p.bag in chosen) and p.bag not in sel.missing:
            out.append(p.describe())
    checks = load_cache(vault)
    for rel in sel.bags:
        check = checks.get(rel) or {}
        if check.get("ok") is False:
            out += [f"{rel}: its latest check ({check.get('by')}, {check.get('checked_utc')}) found: {problem}"
                    for problem in check.get("problems", [])]
    return out


def export_period(
    vault: Vault, date_from: date, date_to: date, out: Path, *, tz: ZoneInfo | str, language: str = "ja",
    organization: str = "", force: bool = False, now: datetime | None = None,
) -> ExportResult:
    """Write ``out`` (a zip) with the period's bags, the ledger excerpt, the public key, an index
    and the README. Raises :class:`ExportError` with a message for a person."""
    tz = ZoneInfo(tz) if isinstance(tz, str) else tz
    now = now or datetime.now(timezone.utc)
    if date_from > date_to:
        raise ExportError(f"--from {date_from.isoformat()} is after --to {date_to.isoformat()}")
    out = Path(out)
    if out.exists() and not force:
        raise ExportError(f"{out} already exists; choose another name, or add --force to replace it")
    if not out.parent.is_dir():
        raise ExportError(f"{out.parent}: no such folder; create it first, or choose another place for the zip")
    sel = select(vault, date_from, date_to, tz)
    top = f"shoseki-export_{date_from.isoformat()}_{date_to.isoformat()}"
    entries = plan(vault, top, sel.bags)
    check_ascii([top, *(name for name, _ in entries)])
    signed = vault.public_key.is_file()
    warnings = _warnings(vault, sel)
    context = readme_context(vault, sel, date_from=date_from, date_to=date_to, tz=tz, organization=organization,
                             now=now, signed=signed, warnings=warnings)
    generated = _generated(vault, sel, context, tz=tz, language=language, organization=organization, now=now)
    size = _write_zip(out, top, generated, entries, now.astimezone(tz))
    return ExportResult(out, top, sel.bags, len(entries), size, sel.anchor.entry.seq if sel.anchor else None,
                        sel.lines[-1].sha256, warnings)


def _generated(vault: Vault, sel: Selection, context: dict[str, Any], *, tz: ZoneInfo, language: str,
               organization: str, now: datetime) -> dict[str, bytes]:
    from evidence.vault_index import render_vault_index

    excerpt = b"".join(line.raw + b"\n" for line in ([sel.anchor] if sel.anchor else []) + sel.lines)
    scope = SCOPE[language].format(n=len(sel.bags), **context)
    files = {
        "README.txt": ("\ufeff" + render_readme(context)).encode("utf-8"),
        "index.html": render_vault_index(vault, tz=tz, language=language, organization=organization,
                                         bags=sel.bags, scope=scope, now=now).encode("utf-8"),
        LEDGER_EXCERPT: excerpt,
    }
    if vault.public_key.is_file():
        files["minisign.pub"] = vault.public_key.read_bytes()
    return files


def _write_zip(out: Path, top: str, generated: dict[str, bytes], entries: list[tuple[str, Path]], when: datetime) -> int:
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    size = 0
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            for name in GENERATED:
                if name in generated:
                    _add_bytes(zf, f"{top}/{name}", generated[name], when)
            for name, path in entries:
                size += _add_file(zf, name, path)
        os.chmod(tmp, FILE_MODE)  # evidence: as restricted as in the vault
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return size


__all__ = ["export_period", "ExportError", "ExportResult", "select", "LEDGER_EXCERPT"]

"""``vault/index.html``: every bag by month, the latest report first, and each bag's verification.

It is a convenience page for people (admins, auditors), not evidence: it lives beside
``ledger.jsonl`` at the top of the vault, outside the dated tree, so ``verify`` and ``reindex``
never look at it. It is rewritten after every seal (``collector.runner.refresh_vault_index``,
and by ``evidence.report`` after a report is sealed)::

    from evidence.vault_index import write_vault_index
    write_vault_index(vault, tz=config.tz, language="ja", organization="Example K.K.")

Verification without re-hashing the vault at every seal: ``vault/.state/verified.json`` keeps,
per bag, the SHA-256 of its ``tagmanifest-sha256.txt`` and of ``minisign.pub`` when it was
checked, the result and when. A bag is checked again (:func:`evidence.verify.verify_bag`) only
when it is not in the cache or either digest changed; newest bags first, within a time budget
(the rest show as "not checked yet" and are taken at the next write). A payload file changed
under an unchanged tag manifest is therefore seen by the next full ``shoseki verify``, which
records its results here too (:func:`record_verification`); the page says when each bag was
last checked and by which. The ledger check (chain, every bag present with the digest the
ledger recorded, no unledgered bag) reads only small files and runs at every write.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable
from urllib.parse import quote
from zoneinfo import ZoneInfo


from evidence.model import parse_utc, utc_iso
from evidence.render import jinja_env
from evidence.vault import BAG_NAME, FILE_MODE, Vault
from evidence.verify import (
    LedgerMismatch, Report, UnledgeredBag, ledger_state, load_public_key, read_bag_info, tagmanifest_digest, verify_bag,
)

INDEX_NAME = "index.html"
CACHE_NAME = "verified.json"
CACHE_FORMAT = "shoseki-verified/1"
REPORT_TYPE = "report"
DEFAULT_BUDGET_S = 60.0
SHOWN_PROBLEMS = 20  # per bag on the page; the full list is one `shoseki verify` away

TEXT: dict[str, dict[str, str]] = {
    "ja": {
        "title": "証跡保管庫の索引", "generated": "作成", "organization": "組織", "tz": "時間帯",
        "bags": "バンドル", "latest_report": "最新のレポート", "no_report": "まだレポートはありません（shoseki report で作成します）。",
        "open_report": "レポートを開く", "months": "月別", "when": "日時", "connector": "コネクタ", "type": "種類",
        "status": "収集状態", "check": "検証", "ledger": "台帳", "open": "開く", "ok": "OK", "failed": "問題あり",
        "unchecked": "未検証", "checked": "検証日時", "by_index": "索引作成時", "by_verify": "shoseki verify",
        "ledger_ok": "台帳 (ledger.jsonl) の連鎖とバンドルの対応に問題はありません。",
        "ledger_problems": "台帳の問題", "summary": "概要", "bags_ok": "検証 OK", "bags_failed": "問題あり",
        "bags_unchecked": "未検証", "scope": "範囲", "how": "検証について",
        "how_text": "各バンドルは初めて見つかったとき（またはタグマニフェストが変わったとき）に一度検証され、"
                    "その日時を表示しています。すべてのファイルを改めて検証するには shoseki verify を実行するか、"
                    "常駐サービスの [daemon] verify_schedule で定期的な全件検証を設定してください。",
        "empty": "保管庫にはまだバンドルがありません。",
        "report": "レポート", "more": "ほか {n} 件（shoseki verify で全件を表示）",
    },
    "en": {
        "title": "Evidence vault index", "generated": "Generated", "organization": "Organization", "tz": "Time zone",
        "bags": "Bundles", "latest_report": "Latest report", "no_report": "No report yet (shoseki report makes one).",
        "open_report": "Open the report", "months": "By month", "when": "When", "connector": "Connector", "type": "Type",
        "status": "Collection status", "check": "Verification", "ledger": "Ledger", "open": "Open", "ok": "OK",
        "failed": "problems", "unchecked": "not checked yet", "checked": "Checked", "by_index": "at indexing",
        "by_verify": "shoseki verify",
        "ledger_ok": "The ledger (ledger.jsonl) chain is intact and matches every bag.",
        "ledger_problems": "Ledger problems", "summary": "Summary", "bags_ok": "verified OK", "bags_failed": "with problems",
        "bags_unchecked": "not checked yet", "scope": "Scope", "how": "About verification",
        "how_text": "Each bag is verified once, when it is first seen (or when its tag manifest changes), and the time "
                    "of that check is shown. Run shoseki verify to check every file again, or set [daemon] verify_schedule "
                    "for the service to do it on a schedule.",
        "empty": "The vault holds no bags yet.",
        "report": "report", "more": "{n} more (shoseki verify lists them all)",
    },
}


# -- the verification cache ---------------------------------------------------------------------


def cache_path(vault: Vault) -> Path:
    return vault.state / CACHE_NAME


def load_cache(vault: Vault) -> dict[str, dict[str, Any]]:
    """Bag relpath -> ``{tagmanifest_sha256, public_key_sha256, ok, problems, checked_utc, by}``."""
    try:
        data = json.loads(cache_path(vault).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or not isinstance(data.get("bags"), dict):
        return {}
    return data["bags"]


def _write_atomic(path: Path, text: str, tmp_dir: Path) -> None:
    """Write ``text`` to a temporary file in ``tmp_dir`` (same file system), fsync, rename over ``path``."""
    tmp = tmp_dir / f"{path.name}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _save_cache(vault: Vault, bags: dict[str, dict[str, Any]]) -> None:
    vault.state.mkdir(mode=0o750, parents=True, exist_ok=True)
    text = json.dumps({"format": CACHE_FORMAT, "bags": bags}, ensure_ascii=False, indent=1, sort_keys=True) + "\n"
    _write_atomic(cache_path(vault), text, vault.state)


def _key_digest(vault: Vault) -> str | None:
    try:
        return hashlib.sha256(vault.public_key.read_bytes()).hexdigest()
    except OSError:
        return None


def _entry(digest: str | None, key: str | None, problems: list[str], checked: datetime, by: str) -> dict[str, Any]:
    return {
        "tagmanifest_sha256": digest, "public_key_sha256": key, "ok": not problems,
        "problems": problems, "checked_utc": utc_iso(checked), "by": by,
    }


def _is_current(entry: dict[str, Any] | None, digest: str | None, key: str | None) -> bool:
    return bool(entry) and entry.get("tagmanifest_sha256") == digest and entry.get("public_key_sha256") == key


def refresh_verification(
    vault: Vault, *, budget_s: float = DEFAULT_BUDGET_S, now: datetime | None = None,
) -> dict[str, dict[str, Any]]:
    """Verify every bag the cache does not know (or whose digests changed), newest first, for at
    most ``budget_s`` seconds; save and return the cache (entries of vanished bags are dropped)."""
    with vault.lock("verified"):
        cache = load_cache(vault)
        bags = {vault.relative(b): b for b in vault.iter_bags()}
        key = _key_digest(vault)
        public_key = load_public_key(vault.public_key)
        deadline = time.monotonic() + max(0.0, budget_s)
        fresh = {rel: e for rel, e in cache.items() if rel in bags}
        for rel in sorted(bags, reverse=True):
            digest = tagmanifest_digest(bags[rel])
            if _is_current(fresh.get(rel), digest, key):
                continue
            fresh.pop(rel, None)
            if time.monotonic() >= deadline:
                continue
            report = verify_bag(bags[rel], label=rel, public_key=public_key)
            fresh[rel] = _entry(digest, key, [p.describe() for p in report.problems], now or datetime.now(timezone.utc), "index")
        if fresh != cache:
            _save_cache(vault, fresh)
        return fresh


def record_verification(vault: Vault, report: Report, *, now: datetime | None = None) -> int:
    """Store the per-bag results of a full :func:`evidence.verify.verify_vault` run (``shoseki
    verify``) in the cache; return how many bags were recorded. Ledger problems are not stored:
    the index checks the ledger afresh every time."""
    checked = now or datetime.now(timezone.utc)
    by_bag: dict[str, list[str]] = defaultdict(list)
    for p in report.problems:
        if not isinstance(p, (LedgerMismatch, UnledgeredBag)):
            by_bag[p.bag].append(p.describe())
    with vault.lock("verified"):
        cache = load_cache(vault)
        key = _key_digest(vault)
        bags = {vault.relative(b) for b in vault.iter_bags()}
        for rel, digest in report.checked.items():  # a bag sealed since the verify began is not among them
            cache[rel] = _entry(digest, key, by_bag.get(rel, []), checked, "verify")
        _save_cache(vault, {rel: e for rel, e in cache.items() if rel in bags})
    return len(report.checked)


# -- the page -----------------------------------------------------------------------------------------


@dataclass
class BagRow:
    rel: str
    month: str
    when: datetime | None
    connector_id: str
    connector_type: str
    status: str
    is_report: bool
    href: str | None
    check: dict[str, Any] | None
    ledger: list[str] = field(default_factory=list)

    @property
    def check_state(self) -> str:
        if self.check is None:
            return "unchecked"
        return "ok" if self.check.get("ok") else "failed"


def _bag_time(bag: Path, info: dict[str, str]) -> datetime | None:
    """When the run started: the folder name says it (local time with its offset); bag-info's
    Collected-From-UTC when the name is not the usual one."""
    m = BAG_NAME.match(bag.name)
    if m:
        try:
            return datetime.strptime(m.group(1), "%Y-%m-%dT%H%M%z")
        except ValueError:
            pass
    return parse_utc(info.get("Collected-From-UTC") or info.get("Collected-To-UTC"))


def _href(rel: str, is_report: bool, bag: Path) -> str | None:
    page = "data/index.html" if is_report else "data/summary.html"
    return quote(f"{rel}/{page}") if (bag / page).is_file() else None


def bag_rows(vault: Vault, rels: Iterable[str], cache: dict[str, dict[str, Any]], problems: list[Any]) -> list[BagRow]:
    by_bag: dict[str, list[str]] = defaultdict(list)
    for p in problems:
        if p.bag:
            by_bag[p.bag].append(p.describe())
    rows = []
    for rel in rels:
        bag = vault.root / rel
        info = read_bag_info(bag)
        ctype = info.get("Connector-Type", "?")
        is_report = ctype == REPORT_TYPE
        rows.append(BagRow(
            rel=rel, month=Path(rel).parent.name, when=_bag_time(bag, info),
            connector_id=info.get("Connector-Id") or _name_part(bag.name), connector_type=ctype,
            status=info.get("Collection-Status", "?"), is_report=is_report, href=_href(rel, is_report, bag),
            check=cache.get(rel), ledger=by_bag.get(rel, []),
        ))
    return rows


def _name_part(name: str) -> str:
    m = BAG_NAME.match(name)
    return m.group(2) if m else "?"


def _local(value: datetime | None, tz: ZoneInfo) -> str:
    return value.astimezone(tz).strftime("%Y-%m-%d %H:%M") if value else "?"


def _sort_key(row: BagRow) -> tuple[float, str]:
    return (row.when.timestamp() if row.when else 0.0, row.rel)


def page_context(
    rows: list[BagRow], problems: list[Any], *, tz: ZoneInfo, language: str, organization: str,
    now: datetime, scope: str | None = None,
) -> dict[str, Any]:
    """What the template shows: months newest first, bags newest first in each."""
    rows = sorted(rows, key=_sort_key, reverse=True)
    months: dict[str, list[BagRow]] = {}
    for row in sorted(rows, key=lambda r: r.month, reverse=True):
        months.setdefault(row.month, []).append(row)
    reports = [r for r in rows if r.is_report]
    other = "en" if language == "ja" else "ja"
    counts = {state: sum(1 for r in rows if r.check_state == state) for state in ("ok", "failed", "unchecked")}
    return {
        "lang": language, "t": TEXT[language], "a": TEXT[other], "organization": organization, "tz": str(tz),
        "generated": _local(now, tz), "months": months, "latest_report": reports[0] if reports else None,
        "total": len(rows), "counts": counts, "ledger_problems": [p.describe() for p in problems],
        "scope": scope, "shown": SHOWN_PROBLEMS,
        "local": lambda v: _local(v, tz), "local_utc": lambda s: _local(parse_utc(s), tz),
    }


def render_page(context: dict[str, Any]) -> str:
    return jinja_env(True).get_template("vault_index.html.j2").render(**context)


def _zone(tz: ZoneInfo | str) -> ZoneInfo:
    return ZoneInfo(tz) if isinstance(tz, str) else tz


def _language(language: str) -> str:
    if language not in TEXT:
        raise ValueError(f"language must be one of {', '.join(TEXT)}, not {language!r}")
    return language


def render_vault_index(
    vault: Vault, *, tz: ZoneInfo | str, language: str = "ja", organization: str = "",
    bags: Iterable[str] | None = None, scope: str | None = None,
    verify_budget_s: float = DEFAULT_BUDGET_S, now: datetime | None = None,
) -> str:
    """The page's HTML, for the whole vault or only ``bags`` (vault-relative paths; the export
    uses it for a period, with ``scope`` saying which)."""
    language, zone = _language(language), _zone(tz)
    now = now or datetime.now(timezone.utc)
    cache = refresh_verification(vault, budget_s=verify_budget_s, now=now)
    problems = ledger_state(vault).problems
    if bags is None:
        rels = [vault.relative(b) for b in vault.iter_bags()]
    else:
        rels = sorted(bags)
        problems = [p for p in problems if p.bag in set(rels)]
    rows = bag_rows(vault, rels, cache, problems)
    context = page_context(rows, problems, tz=zone, language=language, organization=organization, now=now, scope=scope)
    return render_page(context)


def index_path(vault: Vault) -> Path:
    return vault.root / INDEX_NAME


def write_vault_index(
    vault: Vault, *, tz: ZoneInfo | str, language: str = "ja", organization: str = "",
    verify_budget_s: float = DEFAULT_BUDGET_S, now: datetime | None = None,
) -> Path:
    """Rewrite ``vault/index.html`` atomically (a temporary file in ``.state/``, then a rename;
    mode 0640) and return its path. Verifies the bags not verified before (see the module doc);
    raises what it meets (the caller after a seal logs it and goes on)."""
    with vault.lock("index"):
        html = render_vault_index(
            vault, tz=tz, language=language, organization=organization, verify_budget_s=verify_budget_s, now=now,
        )
        target = index_path(vault)
        _write_atomic(target, html, vault.state)
    return target


__all__ = [
    "write_vault_index", "render_vault_index", "refresh_verification", "record_verification",
    "load_cache", "index_path", "REPORT_TYPE",
]

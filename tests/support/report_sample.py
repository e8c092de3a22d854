"""A small vault and a hand-built assessment of it, for the report tests (unit and browser).

The vault holds real, signed ``local_files`` bags (collected from a tiny share); the assessment
points its findings, privileged holders and register accessors at records of those bags, so the
report's evidence section is read from sealed bags exactly as it is for a real judgement. The
rules engine is not involved: what the report shows is known in advance.
"""

from __future__ import annotations

import gzip
import json
import os
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from conftest import files_connector, write_config

from collector.config import LoadedConfig, load_config
from collector.context import Context
from collector.runner import load_signing_key, prepare, run_connector
from evidence import ledger
from evidence.findings.model import (
    Accessor, Assessment, EvidenceRef, Finding, JudgedBundle, PrivilegedHolder, RegisterView,
)
from evidence.vault import Vault

INJECTION = "=HYPERLINK(\"http://evil.example\",\"x\")"


@dataclass(frozen=True)
class Control:
    id: str
    framework: str
    ref: str
    title_ja: str
    title_en: str
    confirmed: bool
    note: str = ""


class FakeCatalogue:
    """The control catalogue's interface (evidence.controls.Catalogue), with three controls."""

    frameworks = ("ISO/IEC 27001:2022", "JIS Q 15001:2023")
    _controls = {
        "iso27001:A.5.15": Control("iso27001:A.5.15", "ISO/IEC 27001:2022", "A.5.15", "アクセス制御", "Access control", True),
        "iso27001:A.8.5": Control("iso27001:A.8.5", "ISO/IEC 27001:2022", "A.8.5", "セキュアな認証", "Secure authentication", True),
        "jisq15001:A.3.4.3.2": Control("jisq15001:A.3.4.3.2", "JIS Q 15001:2023", "A.3.4.3.2", "安全管理措置",
                                       "Security measures", False, "clause number not confirmed"),
    }

    def control(self, control_id: str) -> Control:
        return self._controls[control_id]

    def controls_for(self, rule_id: str) -> tuple[str, ...]:
        return {
            "public_share": ("iso27001:A.5.15", "jisq15001:A.3.4.3.2"),
            "admin_without_mfa": ("iso27001:A.8.5",),
            "collection_missing": ("iso27001:A.5.15",),
        }.get(rule_id, ())


def make_share(base: Path) -> Path:
    root = base / "share"
    (root / "人事").mkdir(parents=True)
    (root / "人事" / "給与.csv").write_text("x", encoding="utf-8")
    (root / "open").mkdir()
    os.chmod(root / "open", 0o777)
    return root


def collected_vault(base: Path, *, language: str = "ja", signed: bool = True,
                    extra_connectors: dict[str, str] | None = None) -> tuple[LoadedConfig, Vault, Any, Path]:
    """A config with one local_files connector (``files-main``), collected once; (config, vault, key, share)."""
    from evidence.signing import write_keypair

    share = make_share(base)
    key_path = None
    if signed:
        key_path, public = base / "keys" / "minisign.key", base / "keys" / "minisign.pub"
        key_path.parent.mkdir()
        write_keypair(key_path, public)
    connectors = {"files.toml": files_connector(share), **(extra_connectors or {})}
    path = write_config(base, connectors=connectors, signing_key=key_path)
    if language != "ja":
        text = path.read_text(encoding="utf-8").replace('timezone = "Asia/Tokyo"', f'timezone = "Asia/Tokyo"\nlanguage = "{language}"')
        path.write_text(text, encoding="utf-8")
    config = load_config(path)
    vault, key, _ = prepare(config)
    collect(config, key)
    return config, vault, key, share


def collect(config: LoadedConfig, key: Any = None) -> None:
    run_connector(config, config.connector("files-main"), signing_key=key if key is not None else load_signing_key(config))


def judged(vault: Vault, connector_id: str = "files-main", connector_type: str = "local_files") -> JudgedBundle:
    entry = ledger.last_for_connector(vault.ledger, connector_id)
    assert entry is not None
    return JudgedBundle(connector_id=connector_id, connector_type=connector_type, max_age_s=93600, bag=entry.bag,
                        digest=entry.tagmanifest_sha256, status=entry.status, sealed_utc=entry.sealed_utc,
                        collected_to_utc=entry.sealed_utc, age_s=60.0)


def first_keys(vault: Vault, bundle: JudgedBundle, stream: str, n: int = 2) -> list[str]:
    keys = []
    with gzip.open(vault.root / bundle.bag / "data" / "records" / f"{stream}.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            keys.append(json.loads(line)["key"])
            if len(keys) == n:
                break
    return keys


def ref(bundle: JudgedBundle, stream: str, key: str) -> EvidenceRef:
    return EvidenceRef(bundle.connector_id, bundle.bag, bundle.digest, stream, key)


def sample_assessment(vault: Vault, as_of: datetime | None = None) -> Assessment:
    """Findings of three statuses, an injection attempt, a missing record, a connector without evidence."""
    b = judged(vault)
    missing = JudgedBundle(connector_id="drive-main", connector_type="google_drive", max_age_s=93600)
    grants = first_keys(vault, b, "grants")
    principals = first_keys(vault, b, "principals")
    findings = (
        Finding("admin_without_mfa", "critical", "files-main", principal=principals[0], principal_email="root@example.co.jp",
                detail={"roles": ["super admin"], "mfa": False}, evidence=(ref(b, "principals", principals[0]),),
                controls=("iso27001:A.8.5",)),
        Finding("public_share", "high", "files-main", resource="/share/open", resource_name="共有フォルダ",
                principal="anyone", detail={"role": "editor", "link_scope": "anyone", "expiry": None},
                evidence=(ref(b, "grants", grants[0]), ref(b, "grants", grants[1])),
                controls=("iso27001:A.5.15", "jisq15001:A.3.4.3.2")),
        Finding("public_share", "high", "files-main", resource="00123", resource_name=INJECTION, principal="anyone",
                detail={"role": "viewer"}, evidence=(ref(b, "grants", grants[1]),),
                controls=("iso27001:A.5.15", "jisq15001:A.3.4.3.2"), status="excepted", exception=1,
                exception_until=date(2027, 3, 31)),
        Finding("public_share", "high", "files-main", resource="/share/old", resource_name="旧資料", principal="anyone",
                evidence=(ref(b, "grants", "no|such|grant"),), controls=("iso27001:A.5.15",),
                status="exception_expired", exception=2, exception_until=date(2026, 1, 31)),
        Finding("collection_missing", "high", "drive-main", detail={"max_age_s": 93600},
                evidence=(), controls=("iso27001:A.5.15",)),
    )
    holder = PrivilegedHolder("files-main", principals[0], "root@example.co.jp", "管理者 太郎", ("super admin",), True,
                              True, False, ref(b, "principals", principals[0]))
    register = RegisterView(
        name="従業員の給与情報", responsible="人事部長", locations=("files-main: /share/人事",),
        allowed=("group:jinji@example.co.jp",),
        accessors=(
            Accessor(principals[0], "root@example.co.jp", "owner", True, "direct", "/share/人事", ref(b, "grants", grants[0])),
            Accessor("anyone", None, "viewer", False, "link", "/share/人事/給与.csv", ref(b, "grants", grants[1])),
        ),
        resources=2,
    )
    return Assessment(
        as_of=as_of or datetime.now(timezone.utc), organization="テスト株式会社", bundles=(b, missing),
        findings=findings, privileged=(holder,), register=(register,), settings={"inactive_days": 90},
    )


def account_rows(vault: Vault, bundles, context) -> Iterator[dict[str, Any]]:
    """Stand-in for evidence.findings.iter_accounts: rows a spreadsheet would mangle if it could."""
    yield {"connector_id": "files-main", "principal": "00123", "kind": "user", "email": "a@example.co.jp",
           "display_name": "@SUM(1+1)", "enabled": True, "mfa": None, "admin": False, "external": False,
           "last_sign_in": "2026-11-25T15:00:00Z", "created": "2020-04-01T00:00:00Z", "on_roster": True,
           "roster_name": "山田 花子", "roster_department": "人事部", "roster_status": "active", "roster_end": None,
           "bag": "2026/2026-11/x", "record_key": "00123"}


def sharing_rows(vault: Vault, bundles, context, **_: Any) -> Iterator[dict[str, Any]]:
    yield {"connector_id": "files-main", "resource": "1E5", "resource_name": "-2+3", "resource_kind": "file",
           "principal": "anyone", "principal_kind": "anyone", "email": None, "domain": None, "role": "viewer",
           "raw_role": "reader", "via": "link", "link_scope": "anyone", "expiry": "2026-12-31T15:00:00Z",
           "audience": "anyone", "contractor": None, "bag": "2026/2026-11/x", "record_key": "k"}


def use_sample_tables(monkeypatch) -> None:
    import evidence.findings as findings

    monkeypatch.setattr(findings, "iter_accounts", account_rows)
    monkeypatch.setattr(findings, "iter_sharing", sharing_rows)


def seal_sample(config: LoadedConfig, vault: Vault, key: Any, assessment: Assessment, *, baseline=None, period=None):
    """Seal ``assessment`` as a report (the way build_report does, without judging) and publish it."""
    from evidence.report import Period, previous_report_baseline, publish_report, seal_report

    period = period or Period(as_of=assessment.as_of)
    baseline = baseline or previous_report_baseline(vault, period.as_of)
    result = seal_report(config, vault, assessment, period, baseline, context=Context(), catalogue=FakeCatalogue(),
                         signing_key=key)
    publish_report(config, vault, result.sealed)
    return result

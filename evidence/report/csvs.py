"""The report's CSV files for Excel: their columns, the writer, columns.csv, findings.csv's rows."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any, Mapping, Sequence
from zoneinfo import ZoneInfo

from evidence.findings.model import (
    ACCOUNT_COLUMNS,
    SEVERITY_LABELS,
    SHARING_COLUMNS,
    EvidenceRef,
    Finding,
)
from evidence.report.changes import CHANGE_COLUMNS
from evidence.report.words import in_language, status_text
from evidence.tables import csv_cell, csv_id_cell, local_converter

# -- CSV files ----------------------------------------------------------------------------------------

FINDING_COLUMNS = (
    ("finding_id", "id"), ("severity", "text"), ("severity_label", "text"), ("rule", "text"), ("title", "text"),
    ("connector_id", "id"), ("resource", "id"), ("resource_name", "text"), ("principal", "id"),
    ("principal_email", "text"), ("status", "text"), ("status_label", "text"), ("exception", "text"),
    ("exception_until", "text"), ("controls", "text"), ("detail", "text"), ("evidence_bag", "id"),
    ("evidence_digest", "id"), ("evidence_stream", "text"), ("evidence_key", "id"),
)
PRIVILEGED_COLUMNS = (
    ("connector_id", "id"), ("principal", "id"), ("email", "text"), ("display_name", "text"), ("roles", "text"),
    ("top", "text"), ("enabled", "text"), ("mfa", "text"), ("evidence_bag", "id"), ("evidence_key", "id"),
)
_ID_COLUMNS = {"connector_id", "principal", "resource", "record_key", "bag"}
_TIME_COLUMNS = {"last_sign_in", "created", "expiry"}


def _spec(columns: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """Column kinds of a plain column list (ids as text, timestamps UTC + local)."""
    return tuple((c, "id" if c in _ID_COLUMNS else "time" if c in _TIME_COLUMNS else "text") for c in columns)


ACCOUNT_SPEC = _spec(ACCOUNT_COLUMNS)
SHARING_SPEC = _spec(SHARING_COLUMNS)


def csv_header(spec: Sequence[tuple[str, str]]) -> list[str]:
    return [h for name, kind in spec for h in ((f"{name}_utc", f"{name}_local") if kind == "time" else (name,))]


class CsvFile:
    """One CSV file for Excel, written row by row: UTF-8 with BOM, CRLF, cells as in evidence.tables.

    ``spec`` is ``(name, kind)`` per column: ``id`` (kept as text by Excel), ``text`` (formula
    injection neutralised; lists joined with "; ", mappings as JSON) or ``time`` (a UTC ISO
    string, written as ``<name>_utc`` and ``<name>_local`` in the organisation's time zone).
    """

    def __init__(self, path: Path, spec: Sequence[tuple[str, str]], tz: ZoneInfo):
        self.path = path
        self.spec = tuple(spec)
        self.rows = 0
        self._local = local_converter(tz)
        self._file = open(path, "w", encoding="utf-8", newline="")  # noqa: SIM115 - closed by close()
        self._file.write("\ufeff")
        self._writer = csv.writer(self._file)
        self._writer.writerow(csv_header(self.spec))

    def write(self, row: Mapping[str, Any]) -> None:
        cells: list[Any] = []
        for name, kind in self.spec:
            value = row.get(name)
            if kind == "id":
                cells.append(csv_id_cell(value))
            elif kind == "time":
                cells.extend((csv_cell(value), self._local(value)))
            else:
                cells.append(csv_cell(value))
        self._writer.writerow(cells)
        self.rows += 1

    def close(self) -> None:
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def __enter__(self) -> "CsvFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _c(ja: str, en: str, description_ja: str, description_en: str) -> tuple[str, str, str, str]:
    return ja, en, description_ja, description_en


#: columns.csv of a report: every column of its CSV files, in Japanese and English
COLUMN_DOCS: dict[str, dict[str, tuple[str, str, str, str]]] = {
    "findings.csv": {
        "finding_id": _c("指摘ID", "Finding id", "規則・コネクタ・対象・アカウントから決まる ID。次回のレポートでも同じ問題は同じ ID",
                         "Made from rule, connector, resource and principal: the same problem keeps its id in the next report"),
        "severity": _c("重要度", "Severity", "critical / high / medium / low / info", "critical / high / medium / low / info"),
        "severity_label": _c("重要度 (表示名)", "Severity (label)", "レポートの言語での重要度", "The severity in the report's language"),
        "rule": _c("規則", "Rule", "指摘の規則 ID", "The rule's id"),
        "title": _c("内容", "Title", "規則の名前 (レポートの言語)", "The rule's title, in the report's language"),
        "connector_id": _c("コネクタ", "Connector", "証跡を収集したコネクタの ID", "The connector the evidence came from"),
        "resource": _c("対象 ID", "Resource id", "ファイル・フォルダ・共有ドライブ・バケットなどの ID", "Id of the file, folder, drive, bucket …"),
        "resource_name": _c("対象名", "Resource name", "対象の名前またはパス", "Its name or path"),
        "principal": _c("アカウント ID", "Principal id", "ユーザー・グループ・ゲストなどの ID", "Id of the user, group, guest …"),
        "principal_email": _c("メールアドレス", "Email", "アカウントのメールアドレス", "The principal's email address"),
        "status": _c("対応状況", "Status", "open / excepted / exception_expired", "open / excepted / exception_expired"),
        "status_label": _c("対応状況 (表示名)", "Status (label)", "レポートの言語での対応状況", "The status in the report's language"),
        "exception": _c("例外番号", "Exception", "exceptions.toml の何番目の例外か (1 から)", "Which exception of exceptions.toml (1-based)"),
        "exception_until": _c("例外の期限", "Exception until", "例外の有効期限 (この日まで有効)", "The last day the exception applies"),
        "controls": _c("管理策", "Controls", "この指摘が関係する管理策の ID", "Ids of the controls this finding evidences"),
        "detail": _c("詳細", "Detail", "判定に使った事実 (JSON)", "The facts judged (JSON)"),
        "evidence_bag": _c("証跡バンドル", "Evidence bag", "証跡のバンドル (保管庫からの相対パス、複数は ; 区切り)",
                           "The evidence bag, relative to the vault (several separated by ;)"),
        "evidence_digest": _c("バンドルのダイジェスト", "Bag digest", "バンドルの tagmanifest-sha256.txt の SHA-256",
                              "SHA-256 of the bag's tagmanifest-sha256.txt"),
        "evidence_stream": _c("ストリーム", "Stream", "レコードのストリーム (run は run.json)", "The record's stream (run: run.json)"),
        "evidence_key": _c("レコードキー", "Record key", "ストリーム内のレコードのキー", "The record's key within its stream"),
    },
    "changes.csv": {
        "connector_id": _c("コネクタ", "Connector", "コネクタの ID", "The connector's id"),
        "stream": _c("ストリーム", "Stream", "principals / memberships / resources / grants", "principals / memberships / resources / grants"),
        "change": _c("変化", "Change", "added (追加) / removed (削除) / changed (変更)", "added / removed / changed"),
        "key": _c("レコードキー", "Record key", "レコードのキー (削除は比較元の、それ以外は判定したバンドルのキー)",
                  "The record's key (removed: in the baseline bag; otherwise in the bag judged)"),
        "old_key": _c("以前のキー", "Old key", "ロール変更でキーが変わった権限の、比較元でのキー", "For a grant whose key changed with its role: its key in the baseline bag"),
        "resource": _c("対象", "Resource", "対象の ID・パス (権限・グループ所属はその対象・グループ)", "The resource (grants), group (memberships) or resource path"),
        "principal": _c("アカウント", "Principal", "アカウントのメールアドレスまたは ID", "The principal's email address or id"),
        "fields": _c("変わった項目", "Fields", "変更されたフィールド", "The fields that changed"),
        "role_old": _c("以前の権限", "Old role", "権限の変更前のロール", "A grant's role before"),
        "role_new": _c("新しい権限", "New role", "権限の変更後のロール", "A grant's role after"),
        "state_changes": _c("状態の変化", "State changes", "enabled / mfa / admin / kind のうち変わったもの", "Which of enabled, mfa, admin, kind changed"),
        "became_shared": _c("共有された", "Became shared", "共有されていなかった対象が共有された", "The resource became shared"),
        "became_public": _c("公開された", "Became public", "誰でもアクセスできる状態になった", "The resource became reachable by anyone"),
        "from_bag": _c("比較元バンドル", "From bag", "比較元のバンドル", "The baseline bag"),
        "to_bag": _c("比較先バンドル", "To bag", "判定したバンドル", "The bag judged"),
    },
    "accounts.csv": {
        "connector_id": _c("コネクタ", "Connector", "コネクタの ID", "The connector's id"),
        "principal": _c("アカウント ID", "Principal id", "アカウントの ID", "The account's id"),
        "kind": _c("種類", "Kind", "user / guest / service_account など", "user / guest / service_account …"),
        "email": _c("メールアドレス", "Email", "メールアドレス", "Email address"),
        "display_name": _c("表示名", "Display name", "表示名", "Display name"),
        "enabled": _c("有効", "Enabled", "サインインできるか", "Whether it can sign in"),
        "mfa": _c("MFA", "MFA", "多要素認証 (空欄は不明)", "Multi-factor authentication (empty: unknown)"),
        "admin": _c("管理者", "Admin", "管理者ロールを持つか", "Holds an administrator role"),
        "external": _c("社外", "External", "組織のドメイン外か", "Outside the organisation's domains"),
        "last_sign_in_utc": _c("最終サインイン (UTC)", "Last sign-in (UTC)", "最後にサインインした日時", "When it last signed in"),
        "last_sign_in_local": _c("最終サインイン ({tz})", "Last sign-in ({tz})", "同じ日時を組織のタイムゾーンで", "The same, in the organisation's time zone"),
        "created_utc": _c("作成 (UTC)", "Created (UTC)", "作成日時", "When it was created"),
        "created_local": _c("作成 ({tz})", "Created ({tz})", "同じ日時を組織のタイムゾーンで", "The same, in the organisation's time zone"),
        "on_roster": _c("名簿にある", "On roster", "roster.csv の人と一致したか", "Matched a person of roster.csv"),
        "roster_name": _c("氏名 (名簿)", "Name (roster)", "名簿の氏名", "The person's name on the roster"),
        "roster_department": _c("部署 (名簿)", "Department (roster)", "名簿の部署", "The person's department"),
        "roster_status": _c("在籍状況 (名簿)", "Status (roster)", "active / leaver / contractor", "active / leaver / contractor"),
        "roster_end": _c("終了日 (名簿)", "End (roster)", "退職日・契約終了日", "Leaving or contract end date"),
        "bag": _c("証跡バンドル", "Evidence bag", "このアカウントを記録したバンドル", "The bag recording this account"),
        "record_key": _c("レコードキー", "Record key", "principals ストリームのキー", "Its key in the principals stream"),
    },
    "privileged.csv": {
        "connector_id": _c("コネクタ", "Connector", "コネクタの ID", "The connector's id"),
        "principal": _c("アカウント ID", "Principal id", "アカウントの ID", "The account's id"),
        "email": _c("メールアドレス", "Email", "メールアドレス", "Email address"),
        "display_name": _c("表示名", "Display name", "表示名", "Display name"),
        "roles": _c("ロール", "Roles", "持っている管理者ロール", "The administrator roles held"),
        "top": _c("最上位管理者", "Top admin", "最上位の管理者ロール (特権管理者・全体管理者・AWS 管理者) を持つか",
                  "Holds a top administrator role (super admin, Global Administrator, AWS admin)"),
        "enabled": _c("有効", "Enabled", "サインインできるか", "Whether it can sign in"),
        "mfa": _c("MFA", "MFA", "多要素認証 (空欄は不明)", "Multi-factor authentication (empty: unknown)"),
        "evidence_bag": _c("証跡バンドル", "Evidence bag", "証跡のバンドル", "The evidence bag"),
        "evidence_key": _c("レコードキー", "Record key", "証跡のレコードキー", "The evidence record's key"),
    },
    "sharing.csv": {
        "connector_id": _c("コネクタ", "Connector", "コネクタの ID", "The connector's id"),
        "resource": _c("対象 ID", "Resource id", "共有されている対象の ID", "Id of the shared resource"),
        "resource_name": _c("対象名", "Resource name", "対象の名前またはパス", "Its name or path"),
        "resource_kind": _c("対象の種類", "Resource kind", "file / folder / drive / bucket など", "file / folder / drive / bucket …"),
        "principal": _c("共有先 ID", "Principal id", "共有先の ID (anyone は誰でも)", "Id of who it is shared with (anyone: everyone)"),
        "principal_kind": _c("共有先の種類", "Principal kind", "user / group / domain / anyone など", "user / group / domain / anyone …"),
        "email": _c("メールアドレス", "Email", "共有先のメールアドレス", "Their email address"),
        "domain": _c("ドメイン", "Domain", "共有先のドメイン", "Their domain"),
        "role": _c("権限", "Role", "owner / editor / commenter / viewer など", "owner / editor / commenter / viewer …"),
        "raw_role": _c("元の権限名", "Raw role", "収集元での権限名", "The role as the source names it"),
        "via": _c("経路", "Via", "direct / inherited / group / link", "direct / inherited / group / link"),
        "link_scope": _c("リンクの範囲", "Link scope", "anyone / organization / specific", "anyone / organization / specific"),
        "expiry_utc": _c("有効期限 (UTC)", "Expiry (UTC)", "共有の有効期限 (空欄は期限なし)", "When the share expires (empty: never)"),
        "expiry_local": _c("有効期限 ({tz})", "Expiry ({tz})", "同じ日時を組織のタイムゾーンで", "The same, in the organisation's time zone"),
        "audience": _c("相手", "Audience", "anyone / unapproved / contractor_ended / contractor / external / organization",
                       "anyone / unapproved / contractor_ended / contractor / external / organization"),
        "contractor": _c("委託先", "Contractor", "contractors.toml の委託先名", "The contractor's name in contractors.toml"),
        "bag": _c("証跡バンドル", "Evidence bag", "この権限を記録したバンドル", "The bag recording this grant"),
        "record_key": _c("レコードキー", "Record key", "grants ストリームのキー", "Its key in the grants stream"),
    },
}

CSV_SPECS: dict[str, tuple[tuple[str, str], ...]] = {
    "findings.csv": FINDING_COLUMNS, "changes.csv": CHANGE_COLUMNS, "accounts.csv": ACCOUNT_SPEC,
    "privileged.csv": PRIVILEGED_COLUMNS, "sharing.csv": SHARING_SPEC,
}


DICTIONARY_HEADER = ("file", "column", "日本語名", "English name", "説明", "description")


def write_columns_csv(path: Path, tz: ZoneInfo) -> None:
    """The data dictionary of the report's CSV files (laid out like a collection bag's columns.csv)."""
    with CsvFile(path, [(h, "text") for h in DICTIONARY_HEADER], tz) as out:
        for name, spec in CSV_SPECS.items():
            for column in csv_header(spec):
                texts = [t.replace("{tz}", tz.key) for t in COLUMN_DOCS[name][column]]
                out.write(dict(zip(DICTIONARY_HEADER, (name, column, *texts))))


def _evidence_cells(refs: Sequence[EvidenceRef]) -> dict[str, str]:
    return {
        "evidence_bag": "; ".join(r.bag for r in refs), "evidence_digest": "; ".join(r.digest for r in refs),
        "evidence_stream": "; ".join(r.stream for r in refs), "evidence_key": "; ".join(r.key for r in refs),
    }


def finding_row(f: Finding, lang: str) -> dict[str, Any]:
    return {
        "finding_id": f.id, "severity": f.severity, "severity_label": in_language(SEVERITY_LABELS[f.severity], lang),
        "rule": f.rule, "title": f.info.title(lang), "connector_id": f.connector_id, "resource": f.resource,
        "resource_name": f.resource_name, "principal": f.principal, "principal_email": f.principal_email,
        "status": f.status, "status_label": status_text(f, lang), "exception": f.exception,
        "exception_until": f.exception_until.isoformat() if f.exception_until else None,
        "controls": list(f.controls), "detail": dict(f.detail), **_evidence_cells(f.evidence),
    }

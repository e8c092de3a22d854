"""The texts of a report in Japanese and English, and the page's choice between them."""

from __future__ import annotations

from typing import Sequence

from markupsafe import Markup, escape

from evidence.findings.model import STATUS_LABELS, Finding

# -- words ----------------------------------------------------------------------------------------------


def in_language(pair: Sequence[str], lang: str) -> str:
    return pair[0] if lang == "ja" else pair[1]


def status_text(f: Finding, lang: str) -> str:
    """open / covered by exception N until DATE / exception N expired on DATE."""
    until = f.exception_until.isoformat() if f.exception_until else "?"
    if f.status == "excepted":
        return f"例外 {f.exception} により承認済み ({until} まで)" if lang == "ja" else f"Covered by exception {f.exception} until {until}"
    if f.status == "exception_expired":
        return f"例外 {f.exception} の期限切れ ({until} まで有効だった)" if lang == "ja" else f"Exception {f.exception} expired (valid until {until})"
    return in_language(STATUS_LABELS[f.status], lang)


#: (Japanese, English) of every fixed text of index.html
LABELS: dict[str, tuple[str, str]] = {
    "title": ("アクセス権限レポート", "Access review report"),
    "as_of": ("判定日時", "As of"),
    "period": ("対象期間", "Period"),
    "generated": ("作成日時", "Generated"),
    "report_id": ("レポート ID", "Report id"),
    "organization": ("組織", "Organisation"),
    "summary": ("概要", "Summary"),
    "no_data_banner": ("最新かつ完全な証跡がないコネクタがあります。これらについては「指摘なし」は「問題なし」ではなく「データなし」です。",
                       "Some connectors have no current, complete evidence: for them, no finding means no data, not no problem."),
    "collection": ("収集の状態と鮮度", "Collection status and freshness"),
    "connector": ("コネクタ", "Connector"),
    "type": ("種類", "Type"),
    "freshness": ("鮮度", "Freshness"),
    "status": ("状態", "Status"),
    "collected": ("収集終了", "Collected"),
    "age": ("経過時間", "Age"),
    "max_age": ("許容期間", "Max age"),
    "bundle": ("バンドル", "Bundle"),
    "reasons": ("理由", "Reasons"),
    "open_summary": ("概要", "summary"),
    "severity": ("重要度", "Severity"),
    "open": ("未対応", "Open"),
    "excepted": ("例外承認済み", "Excepted"),
    "exception_expired": ("例外期限切れ", "Exception expired"),
    "total": ("合計", "Total"),
    "findings_by_severity": ("重要度別の指摘", "Findings by severity"),
    "findings_by_control": ("管理策別の指摘", "Findings by control"),
    "control": ("管理策", "Control"),
    "control_ref": ("参照", "Reference"),
    "confirmed": ("規格本文との照合", "Checked against the standard"),
    "confirmed_yes": ("確認済み", "confirmed"),
    "confirmed_no": ("未確認 (参考)", "unconfirmed reference"),
    "controls_note": ("「未確認」の参照は規格本文と照合できていない対応付けです。", "An unconfirmed reference is a mapping not yet checked against the standard's text."),
    "findings": ("指摘事項", "Findings"),
    "no_findings": ("指摘事項はありません。上の収集状態も確認してください。", "No findings. Check the collection status above as well."),
    "why": ("なぜ問題か", "Why it matters"),
    "finding_id": ("指摘 ID", "Finding id"),
    "resource": ("対象", "Resource"),
    "principal": ("アカウント・共有先", "Principal"),
    "detail": ("詳細", "Details"),
    "evidence": ("証跡", "Evidence"),
    "more_in_csv": ("件目以降は findings.csv を参照してください", "onwards: see findings.csv"),
    "changes": ("前回のレポートからの変化", "Changes since the previous report"),
    "changes_period": ("期間中の変化", "Changes during the period"),
    "baseline_previous": ("比較元: 前回のレポート", "Compared with the previous report"),
    "baseline_period": ("比較元: 期間の初日の終わり時点のバンドル", "Compared with the bundles as of the end of the period's first day"),
    "baseline_none": ("前回のレポートがないため、変化は計算していません。", "There is no previous report, so changes were not computed."),
    "baseline_unavailable": ("前回のレポートを封印時のまま読めないため、変化は計算していません。shoseki verify で確認してください。",
                             "The previous report cannot be read as it was sealed, so changes were not computed; run shoseki verify."),
    "state_compared": ("比較しました", "compared"),
    "state_same": ("前回と同じバンドル (変化なし)", "same bundle as before: nothing changed"),
    "state_no_baseline": ("比較元なし", "nothing to compare with"),
    "state_new_connector": ("前回は判定対象ではなかったコネクタ", "not judged by the baseline"),
    "state_no_bag": ("どちらかの時点でバンドルがありません", "no bundle on one side"),
    "state_unavailable": ("比較元のバンドルが見つからないか封印後に変更されています", "the baseline bundle is missing or changed since it was sealed"),
    "change": ("変化", "Change"),
    "stream": ("ストリーム", "Stream"),
    "what": ("内容", "What"),
    "added": ("追加", "added"),
    "removed": ("削除", "removed"),
    "changed": ("変更", "changed"),
    "first_shown": ("件を表示。すべては changes.csv にあります", "shown; changes.csv has every one"),
    "became_public": ("公開された", "became public"),
    "became_shared": ("共有された", "became shared"),
    "role_changed": ("権限が変わった", "role changed"),
    "register": ("個人情報管理台帳: 認められたアクセスと実際のアクセス", "Personal-information register: allowed and actual access"),
    "no_register": ("個人情報管理台帳 (register.toml) がありません。", "There is no personal-information register (register.toml)."),
    "responsible": ("責任者", "Responsible"),
    "locations": ("保管場所", "Locations"),
    "allowed": ("アクセスを認められた者", "Allowed"),
    "resources_matched": ("該当するリソース", "Resources matched"),
    "accessors": ("実際にアクセスできる者", "Actual accessors"),
    "allowed_yes": ("台帳で許可", "allowed"),
    "allowed_no": ("台帳にない", "NOT allowed"),
    "role": ("権限", "Role"),
    "via": ("経路", "Via"),
    "privileged": ("特権を持つアカウント", "Privileged role holders"),
    "no_privileged": ("管理者ロールを持つアカウントは記録されていません。", "No holder of an administrator role was recorded."),
    "roles": ("ロール", "Roles"),
    "top": ("最上位管理者", "Top admin"),
    "enabled": ("有効", "Enabled"),
    "mfa": ("MFA", "MFA"),
    "yes": ("はい", "yes"),
    "no": ("いいえ", "no"),
    "unknown": ("不明", "unknown"),
    "evidence_section": ("証跡: 判定に使ったレコード", "Evidence: the records judged"),
    "evidence_intro": ("各バンドルは封印・署名された収集時のままです。ダイジェストは bag の tagmanifest-sha256.txt の SHA-256 です。",
                       "Each bundle is as it was sealed and signed at collection; the digest is the SHA-256 of its tagmanifest-sha256.txt."),
    "digest": ("ダイジェスト", "Digest"),
    "key": ("キー", "Key"),
    "record_missing": ("このレコードはバンドルの中に見つかりませんでした。", "This record was not found in the bundle."),
    "files": ("ファイル", "Files"),
    "file_findings": ("指摘事項の一覧 (Excel)", "every finding (Excel)"),
    "file_changes": ("変化の一覧", "every change"),
    "file_accounts": ("全アカウントと名簿との照合", "every account, matched with the roster"),
    "file_privileged": ("特権を持つアカウント", "privileged role holders"),
    "file_sharing": ("社外・リンクによる共有", "sharing beyond the organisation, and links"),
    "file_columns": ("各列の説明", "what each column means"),
    "file_report_json": ("機械可読な同じ内容", "the same, for machines"),
    "file_readme": ("このレポートの説明と検証方法", "what this report is and how to verify it"),
    "jump": ("目次", "Contents"),
}

FRESHNESS_LABELS = {
    "ok": ("最新", "current"), "stale": ("古い (許容期間超過)", "STALE (older than max age)"),
    "missing": ("証跡なし", "NO EVIDENCE"), "failed": ("収集失敗", "FAILED"), "partial": ("一部欠落", "PARTIAL"),
}


class Words:
    """Texts of index.html in the report's language, with the other language as a subtitle."""

    def __init__(self, lang: str):
        self.lang = lang
        self.other = "en" if lang == "ja" else "ja"

    def pick(self, pair: Sequence[str]) -> str:
        return in_language(pair, self.lang)

    def both(self, pair: Sequence[str]) -> Markup:
        main, alt = in_language(pair, self.lang), in_language(pair, self.other)
        if main == alt:
            return escape(main)
        return Markup('{} <span class="alt" lang="{}">{}</span>').format(main, self.other, alt)

    def t(self, key: str) -> Markup:
        return self.both(LABELS[key])

    def p(self, key: str) -> str:
        return self.pick(LABELS[key])

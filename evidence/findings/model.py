"""What a judgement is made of: rules, findings, the bundles judged, and the assessment.

A :class:`Finding` says one thing that needs attention, about one resource and/or principal of
one connector instance, with the record it was read from (:class:`EvidenceRef`: the bag, its
tag-manifest digest, the stream and the record key), so an auditor can open the evidence. Its
``id`` is stable across reports (rule, connector, resource, principal), so the same problem
keeps its id from one report to the next.

The rules' ids, severities and bilingual texts are :data:`RULES`; the controls a rule evidences
come from the control catalogue (:mod:`evidence.controls`), not from here.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any, Literal, Mapping

Severity = Literal["critical", "high", "medium", "low", "info"]
SEVERITIES: tuple[Severity, ...] = ("critical", "high", "medium", "low", "info")
SEVERITY_LABELS = {
    "critical": ("重大", "Critical"), "high": ("高", "High"), "medium": ("中", "Medium"),
    "low": ("低", "Low"), "info": ("情報", "Info"),
}
Status = Literal["open", "excepted", "exception_expired"]
STATUS_LABELS = {
    "open": ("未対応", "Open"),
    "excepted": ("例外承認済み", "Covered by an approved exception"),
    "exception_expired": ("例外の期限切れ", "Exception expired"),
}


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    title_ja: str
    title_en: str
    why_ja: str
    why_en: str

    def title(self, lang: str) -> str:
        return self.title_ja if lang == "ja" else self.title_en

    def why(self, lang: str) -> str:
        return self.why_ja if lang == "ja" else self.why_en


def _rules(*rules: Rule) -> dict[str, Rule]:
    return {r.id: r for r in rules}


RULES: dict[str, Rule] = _rules(
    Rule("public_share", "high",
         "誰でもアクセスできる共有 (リンクを知っている全員・匿名リンク・公開バケット)",
         "Shared with anyone (anyone-with-the-link, anonymous link, public bucket)",
         "リンクやURLを知っていれば社外の誰でも、認証なしで読めます (編集権限なら書き換えも)。個人情報が含まれていれば漏えいになります。",
         "Anyone who has or guesses the link or URL can read it without signing in (edit it, if the role allows). "
         "If it holds personal information, that is a leak."),
    Rule("unapproved_domain", "high",
         "承認されていないドメインとの共有・グループ所属",
         "Shared with, or a member of a group from, a domain that is neither internal nor an approved contractor",
         "委託先として契約・承認されていない組織の者がアクセスできます。委託先の監督 (JIS Q 15001 の委託先管理) の範囲外です。",
         "Someone from an organisation with no contract or approval can reach it, outside the supervision of contractors "
         "(委託先管理) the standards require."),
    Rule("contractor_after_end", "high",
         "契約終了後の委託先のアクセス",
         "Access by a contractor after its contract ended",
         "契約が終わった委託先は個人情報を扱う根拠がありません。アクセスを外すか、契約の延長を台帳に反映してください。",
         "A contractor whose contract has ended has no basis to handle the organisation's information. Remove the access, "
         "or record the extended contract in contractors.toml."),
    Rule("share_without_expiry", "medium",
         "有効期限のない社外共有",
         "External share without an expiry date",
         "期限のない社外共有は、業務が終わった後も残り続けます。期限を設定すると、見直し漏れがあってもアクセスが自動的に終わります。",
         "An external share without an expiry outlives the work it was made for; an expiry ends access even when a review "
         "is missed."),
    Rule("guest_without_sponsor", "medium",
         "責任者 (スポンサー) のいないゲスト",
         "Guest account without a sponsor",
         "誰が招待し、誰が必要性を判断するのかが分からないゲストは、不要になっても削除されません。",
         "A guest nobody is responsible for is never removed when no longer needed: nobody is asked."),
    Rule("guest_inactive", "medium",
         "長期間サインインのないゲスト",
         "Guest with no sign-in for a long time",
         "使われていないゲストアカウントは不要なアクセス経路です。棚卸しで削除を検討してください。",
         "An unused guest account is an access path nobody needs; review it for removal."),
    Rule("guest_can_edit", "medium",
         "編集権限を持つゲスト",
         "Guest with edit rights",
         "ゲスト (社外の者) が内容を変更・削除・再共有できます。閲覧で足りないか確認してください。",
         "An outside person can change, delete or re-share the content; check whether viewing would do."),
    Rule("admin_without_mfa", "critical",
         "多要素認証 (MFA) のない管理者",
         "Administrator without multi-factor authentication",
         "管理者のパスワードが漏れると、組織のすべてのデータと設定が奪われます。管理者には MFA が必須です。",
         "A leaked administrator password gives away every account, file and setting of the organisation; "
         "administrators must use MFA."),
    Rule("account_without_mfa", "high",
         "多要素認証 (MFA) のないアカウント",
         "Account without multi-factor authentication",
         "パスワードだけのアカウントは、フィッシングや使い回しで乗っ取られやすく、そのアカウントが見られる個人情報がすべて危険にさらされます。",
         "A password-only account is easily taken over by phishing or password reuse, and with it everything it can reach."),
    Rule("inactive_account", "medium",
         "長期間使われていないアカウント・アクセスキー",
         "Account or access key not used for a long time",
         "使われていないアカウントは退職・異動の処理漏れであることが多く、乗っ取られても気付かれません。",
         "Unused accounts are often a missed leaver or move, and a takeover of one goes unnoticed."),
    Rule("leaver_enabled", "high",
         "退職者のアカウントが有効",
         "Leaver's account still enabled",
         "退職者がまだサインインでき、在職中と同じ情報にアクセスできます。",
         "Someone who has left can still sign in and reach everything they could before."),
    Rule("leaver_owns_shared", "high",
         "退職者・停止アカウントが所有する共有中のデータ",
         "Shared data owned by a leaver or a suspended account",
         "所有者がいなくなった共有は誰も見直さず、アカウント削除時にデータごと失われることもあります。所有者を移してください。",
         "Shares owned by someone who has gone are reviewed by nobody, and the data can vanish when the account is deleted; "
         "transfer the ownership."),
    Rule("privileged_too_few", "medium",
         "最上位管理者が 2 名未満",
         "Fewer than two holders of a top administrator role",
         "最上位管理者が 1 名だけだと、その人が不在の時に誰も管理・緊急対応ができません。",
         "With a single top administrator, nobody can administer or respond to an incident when that person is away."),
    Rule("privileged_too_many", "medium",
         "最上位管理者が多すぎる",
         "Too many holders of a top administrator role",
         "最上位管理者が多いほど、乗っ取られると全体が危険になるアカウントが増えます。最小権限にしてください。",
         "Each top administrator is an account whose takeover exposes everything; keep to least privilege."),
    Rule("single_owner", "medium",
         "所有者・管理者が 1 名だけの共有場所",
         "Shared location with a single owner",
         "所有者が 1 名だけの共有ドライブ・サイト・バケットは、その人の異動・退職で管理できなくなります (属人化)。",
         "A shared drive, site or bucket with one owner becomes unmanaged when that person moves or leaves."),
    Rule("leaver_only_owner", "high",
         "所有者が退職者だけの共有場所",
         "Shared location whose only owner is a leaver",
         "共有ドライブ・サイト・バケットの管理者が退職者しかおらず、現在誰も管理していません。",
         "The only owner of a shared drive, site or bucket has left: nobody manages it now."),
    Rule("register_drift", "high",
         "個人情報管理台帳にないアクセス",
         "Access to registered personal information by someone not allowed in the register",
         "個人情報管理台帳で認めていない者が、その個人情報の保管場所にアクセスできます。台帳か権限のどちらかを直してください。",
         "Someone the personal-information register does not allow can reach where that information is kept; "
         "correct either the register or the access."),
    Rule("not_on_roster", "medium",
         "名簿にないアカウント (共有・不明アカウント)",
         "Account that matches no person on the roster (shared or orphan account)",
         "誰のものか分からないアカウントは、利用者の責任を追えず、退職処理からも漏れます。",
         "An account that belongs to no known person cannot be held to account and is missed by leaver processes."),
    Rule("collection_failed", "high",
         "証跡の収集に失敗",
         "Evidence collection failed",
         "最新の収集が失敗しているため、このコネクタについては「指摘なし」ではなく「データなし」です。",
         "The latest collection failed: for this connector, no finding means no data, not no problem."),
    Rule("collection_partial", "medium",
         "証跡の収集が不完全",
         "Evidence collection incomplete (partial)",
         "最新の収集が一部欠けています。欠けた部分についての指摘は出ません。",
         "The latest collection is missing parts: nothing is reported about what is missing."),
    Rule("collection_stale", "high",
         "証跡が古い",
         "Evidence is older than its maximum age",
         "最新の証跡が許容期間より古く、現在の状態を表していません。",
         "The latest evidence is older than its maximum age: it does not show the current state."),
    Rule("collection_missing", "high",
         "証跡がない",
         "No evidence collected",
         "設定されたコネクタの証跡が判定日までに一度も封印されていません。",
         "A configured connector has no sealed evidence as of the report date."),
)


@dataclass(frozen=True)
class EvidenceRef:
    """Where a finding was read from: one record of one sealed bag."""

    connector_id: str
    bag: str            # the bag's path relative to the vault root
    digest: str         # the bag's tag-manifest SHA-256
    stream: str         # principals | memberships | resources | grants | run
    key: str            # the record's key within its stream ("" for run.json)

    @property
    def anchor(self) -> str:
        """A fragment id for HTML (ASCII, stable)."""
        return "ev-" + hashlib.sha256(f"{self.bag}|{self.stream}|{self.key}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: Severity
    connector_id: str
    resource: str | None = None
    principal: str | None = None
    resource_name: str | None = None
    principal_email: str | None = None
    detail: Mapping[str, Any] = field(default_factory=dict)   # facts (role, expiry, last sign-in …), JSON-safe
    evidence: tuple[EvidenceRef, ...] = ()
    controls: tuple[str, ...] = ()                           # control ids from the catalogue
    status: Status = "open"
    exception: int | None = None                             # 1-based position in exceptions.toml
    exception_until: date | None = None

    @property
    def id(self) -> str:
        body = "|".join((self.rule, self.connector_id, self.resource or "", self.principal or ""))
        return "F-" + hashlib.sha256(body.encode()).hexdigest()[:12]

    @property
    def info(self) -> Rule:
        return RULES[self.rule]

    def with_(self, **changes: Any) -> "Finding":
        return replace(self, **changes)


@dataclass(frozen=True)
class JudgedBundle:
    """The bag judged for one configured connector (or the fact that there is none)."""

    connector_id: str
    connector_type: str
    max_age_s: int
    bag: str | None = None            # vault-relative path; None: nothing sealed as of the date
    digest: str | None = None
    status: str | None = None         # complete | partial | failed
    sealed_utc: str | None = None
    collected_to_utc: str | None = None
    reasons: tuple[str, ...] = ()
    age_s: float | None = None        # as_of − collected_to
    stale: bool = False

    @property
    def freshness(self) -> str:
        """ok | stale | missing | failed | partial: what the report shows per connector."""
        if self.bag is None:
            return "missing"
        if self.status == "failed":
            return "failed"
        if self.stale:
            return "stale"
        return "partial" if self.status == "partial" else "ok"


@dataclass(frozen=True)
class PrivilegedHolder:
    connector_id: str
    principal: str
    email: str | None
    display_name: str | None
    roles: tuple[str, ...]
    top: bool                          # holds a top administrator role (super admin, Global Administrator, AWS admin)
    enabled: bool | None
    mfa: bool | None
    evidence: EvidenceRef


@dataclass(frozen=True)
class Accessor:
    principal: str
    email: str | None
    role: str
    allowed: bool
    via: str                           # direct | group | inherited | link …
    resource: str                      # one resource it reaches (the first seen)
    evidence: EvidenceRef


@dataclass(frozen=True)
class RegisterView:
    """One register entry: where it is, who may access it, who actually can."""

    name: str
    responsible: str
    locations: tuple[str, ...]         # "connector: narrowing" as written
    allowed: tuple[str, ...]
    accessors: tuple[Accessor, ...]
    resources: int                     # how many resources matched the locations


@dataclass(frozen=True)
class Assessment:
    as_of: datetime                    # aware; the judging instant
    organization: str
    bundles: tuple[JudgedBundle, ...]
    findings: tuple[Finding, ...]
    privileged: tuple[PrivilegedHolder, ...]
    register: tuple[RegisterView, ...]
    settings: Mapping[str, Any] = field(default_factory=dict)   # thresholds used (inactive days …)


@dataclass(frozen=True)
class Settings:
    """Thresholds the rules use (``[findings]`` in shoseki.toml)."""

    inactive_days: int = 90            # accounts and access keys
    guest_inactive_days: int = 90
    top_admins_min: int = 2
    top_admins_max: int = 4


#: accounts.csv: every account (user, guest, service account) of every judged bag, with the roster match
ACCOUNT_COLUMNS = (
    "connector_id", "principal", "kind", "email", "display_name", "enabled", "mfa", "admin", "external",
    "last_sign_in", "created", "on_roster", "roster_name", "roster_department", "roster_status", "roster_end",
    "bag", "record_key",
)
#: sharing.csv: every grant that reaches beyond the owner's organisation or is a link
SHARING_COLUMNS = (
    "connector_id", "resource", "resource_name", "resource_kind", "principal", "principal_kind", "email",
    "domain", "role", "raw_role", "via", "link_scope", "expiry", "audience", "contractor", "bag", "record_key",
)
#: the ``audience`` of a sharing row
AUDIENCES = ("anyone", "unapproved", "contractor_ended", "contractor", "external", "organization")

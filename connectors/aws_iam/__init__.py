"""AWS IAM: users, groups, roles, the root user, their credentials, and who may do what in the account.

What it reads, per account (the cheapest correct plan of apis.md §1.5):

* ``sts:GetCallerIdentity`` — the account and the identity used (run.json ``identity``);
* ``iam:GetAccountSummary`` and ``iam:GetAccountPasswordPolicy`` (no policy is a fact, not an error);
* the credential report: ``GenerateCredentialReport`` until ``COMPLETE`` (IAM reuses a report
  less than 4 hours old: its ``GeneratedTime`` is in run.json's notes), then
  ``GetCredentialReport``; its CSV gives every user's console password, MFA, access keys (age,
  last use, service, region) and the root user's row. A user created after the report was
  generated is read with ``GetLoginProfile``, ``ListMFADevices``, ``ListAccessKeys`` and
  ``GetAccessKeyLastUsed`` instead. A report without a root row (moto) is recorded as such.
* ``GetAccountAuthorizationDetails`` paginated to the end (``MaxItems`` 1000, ``Marker``), in two
  passes so that users stream: groups + customer-managed policies first, then users + roles;
* ``GetPolicy`` + ``GetPolicyVersion`` for each AWS-managed policy that is attached (once each).

Mapping onto the record model:

* principals: users, groups and roles by ARN (kind user / group / role); the root user as
  ``arn:aws:iam::<account>:root`` (kind user, ``admin``); for a user ``enabled`` = a console
  password or an active access key, ``mfa`` = the report's ``mfa_active``, ``admin`` = any own or
  group policy that allows ``*`` (or all of IAM) on ``*`` without a condition, or
  AdministratorAccess; ``last_sign_in`` = the latest console sign-in or access-key use; ``email``
  from an ``Email`` tag. Attributes hold the access keys (slot, active, created, last used), the
  console state, tags, groups, boundary and policies. Principals a trust policy names outside
  the account's IAM: ``aws-account:<id>`` (kind ``domain``: everyone that account lets assume
  the role), ``aws-service:<name>``, ``anyone`` and foreign ARNs, with ``external`` = the account
  is neither read in this run nor listed in ``internal_accounts``.
* memberships: group ARN → user ARN.
* resources: the account ``aws-account:<id>`` (kind account: summary, password policy, credential
  report facts), each role (kind role: the trust policy), each customer-managed policy and each
  attached AWS-managed policy (kind policy: the document when under 8,000 characters).
* grants — *policy attachments are grants on the account* (``aws-account:<id>``), because an
  identity policy is what a principal may do in the account; the resources its statements name
  stay in the policy's document. ``role`` is derived from the allowed actions (admin: ``*`` or
  all of IAM on ``*``; editor: any write; viewer: reads only; other), ``raw_role`` is the policy
  name, ``grant_id`` its ARN (``inline`` for an inline policy). A group's policies are granted to
  the group (``via`` direct) *and* to every member (``via`` group, ``inherited_from`` the group).
  The root user holds ``admin`` (``raw_role`` root). *Trust policies are grants on the role*: each
  principal allowed to assume it, ``raw_role`` the ``sts:`` actions, ``role`` the level of the
  role's own policies (what assuming it gives), conditions and ``sts:ExternalId`` in attributes.
  Permission boundaries, SCPs and explicit denies do not lower the level (they are recorded).

Needs (all in the AWS managed policy ``SecurityAudit``): see ``permissions``.
"""

from __future__ import annotations

import time
from typing import Any, Iterator

from pydantic import Field

from connectors._aws import (
    ADMINISTRATOR_ACCESS,
    AwsAccount,
    AwsClients,
    AwsConnector,
    AwsSettings,
    Probe,
    aws_time,
    condition_scope,
    document,
    max_level,
    principal_entries,
    statements,
    who,
)
from connectors.aws_iam.mapping import (
    ROOT_ROW,
    State,
    attached,
    attached_attr,
    latest,
    na,
    parse_credential_report,
    policy_grant,
    policy_resource,
)
from connectors.base import (
    PermissionDenied,
    RunContext,
    SourceError,
)
from evidence.model import Grant, Membership, Principal, RawPage, Record, Resource

DETAILS = "iam.GetAccountAuthorizationDetails"


class AwsIamConfig(AwsSettings):
    """The AWS settings plus the IAM page size and the credential-report wait."""

    page_size: int = Field(1000, ge=1, le=1000, description="MaxItems of GetAccountAuthorizationDetails")
    credential_report_timeout_s: float = Field(300.0, gt=0, le=3600, description="give up waiting for the report after")
    credential_report_poll_s: float = Field(2.0, ge=0, le=60, description="first wait between GenerateCredentialReport polls")


class AwsIamConnector(AwsConnector):
    """IAM users, groups, roles, the root user, credentials and policy grants of one or more AWS accounts."""

    kind = "aws_iam"
    Config = AwsIamConfig
    streams = ("principals", "memberships", "resources", "grants")
    permissions = (
        "iam:GetAccountAuthorizationDetails", "iam:GenerateCredentialReport", "iam:GetCredentialReport",
        "iam:GetAccountSummary", "iam:GetAccountPasswordPolicy", "iam:GetPolicy", "iam:GetPolicyVersion",
        "iam:GetLoginProfile", "iam:ListMFADevices", "iam:ListAccessKeys", "iam:GetAccessKeyLastUsed",
        "sts:AssumeRole (only with assume_roles: on each listed role, granted by its trust policy)",
    )
    description = (
        "Snapshots AWS IAM: every user with console access, MFA and access keys (age and last use) from the "
        "credential report, groups and memberships, roles with their trust policies (cross-account trusts are "
        "grants to the other account), the root user, the password policy, and every policy attachment as a "
        "grant on the account (admin / editor / viewer from the allowed actions)."
    )

    config: AwsIamConfig

    # -- check ----------------------------------------------------------------------------------
    def check_probes(self, clients: AwsClients, ctx: RunContext) -> list[tuple[str, Probe]]:
        def details(a: AwsAccount) -> str:
            iam = clients.client(a.key, "iam")
            clients.call(ctx, a, iam, "get_account_authorization_details", where="check", Filter=["Group"], MaxItems=1)
            return "GetAccountAuthorizationDetails answered"

        def report(a: AwsAccount) -> str:
            iam = clients.client(a.key, "iam")
            got = clients.call(ctx, a, iam, "get_credential_report", where="check",
                               missing=("ReportNotPresent", "ReportExpired", "ReportInProgress"))
            return "GetCredentialReport answered" + ("" if got else " (no current report: the run generates one)")

        def account(a: AwsAccount) -> str:
            iam = clients.client(a.key, "iam")
            clients.call(ctx, a, iam, "get_account_summary", where="check")
            clients.call(ctx, a, iam, "get_account_password_policy", where="check", missing=("NoSuchEntity",))
            return "GetAccountSummary and GetAccountPasswordPolicy answered"

        return [
            ("users, groups, roles, policies (principals, memberships, grants)", details),
            ("credential report (console, MFA, access keys)", report),
            ("account summary and password policy (resources)", account),
        ]

    # -- snapshot ---------------------------------------------------------------------------------
    def snapshot(self, ctx: RunContext) -> Iterator[Record | RawPage]:
        clients: AwsClients = self.ensure_clients()
        clients.bind(ctx)
        reports: dict[str, Any] = {}
        try:
            yield from self.each_account(ctx, clients, lambda account, internal: self._account(
                ctx, clients, State(account, internal, ctx.organization), reports))
        finally:
            if reports:
                ctx.note("credential_report", reports)
            clients.note_requests(ctx)

    def _account(self, ctx: RunContext, clients: AwsClients, st: State, reports: dict[str, Any]) -> Iterator[Record]:
        a = st.account
        iam = clients.client(a.key, "iam")
        acct = a.account_id

        def optional(method: str, where: str, missing: tuple[str, ...] = ()) -> tuple[dict[str, Any] | None, bool]:
            try:
                return clients.call(ctx, a, iam, method, where=where, missing=missing), True
            except PermissionDenied as exc:
                ctx.error(where, str(exc))
                return None, False

        summary, summary_ok = optional("get_account_summary", f"account {acct} summary")
        pw, pw_ok = optional("get_account_password_policy", f"account {acct} password policy", ("NoSuchEntity",))
        summary_map = (summary or {}).get("SummaryMap") or {}
        ctx.source(endpoint="iam.GetAccountSummary", account=acct)
        ctx.source(endpoint="iam.GetAccountPasswordPolicy", account=acct)

        # the credential report: console, MFA, keys for every user, and the root user's row
        st.report, root = self._credential_report(ctx, clients, a, iam, reports)
        yield Resource(
            id=a.resource_id, kind="account", name=acct,
            attributes={
                "account_id": acct, "partition": a.partition, "read_as": a.identity,
                "summary": dict(sorted(summary_map.items())) if summary_ok else None,
                "password_policy": (pw or {}).get("PasswordPolicy") if pw_ok else None,
                "password_policy_configured": (pw is not None) if pw_ok else None,
                "credential_report_available": st.report is not None,
                "credential_report_root_row": (root is not None) if st.report is not None else None,
            },
        ).record()
        yield from self._root(a, root, summary_map if summary_ok else None)

        # pass 1: groups and customer-managed policies (kept: users' admin state depends on them)
        params = {"Filter": ["Group", "LocalManagedPolicy"], "MaxItems": self.config.page_size}
        ctx.source(endpoint=DETAILS, account=acct, **params)
        groups: list[dict[str, Any]] = []
        for page in clients.pages(ctx, a, iam, "get_account_authorization_details", where=f"account {acct} groups",
                                  token_in="Marker", token_out="Marker", more="IsTruncated", **params):
            for p in page.get("Policies") or []:
                versions = p.get("PolicyVersionList") or []
                default = next((v for v in versions if v.get("IsDefaultVersion")), None)
                doc = document(default.get("Document")) if default else None
                st.docs[p["Arn"]] = doc
                yield policy_resource(p, doc, aws_managed=False)
            groups.extend(page.get("GroupDetailList") or [])
        yield from self._fetch_managed(ctx, clients, a, iam, st, [g.get("AttachedManagedPolicies") for g in groups])
        for g in groups:
            held = self._attached_policies(g.get("AttachedManagedPolicies"), g.get("GroupPolicyList"), st)
            st.groups[g["GroupName"]] = (g["Arn"], held)
            yield Principal(
                id=g["Arn"], kind="group", display_name=g["GroupName"], external=False,
                admin=any(x.level == "admin" for x in held), roles=tuple(sorted({x.name for x in held})),
                created=aws_time(g.get("CreateDate")),
                attributes={"account_id": acct, "group_id": g.get("GroupId"), "path": g.get("Path"),
                            "policies": [attached_attr(x) for x in held]},
            ).record()
            for x in held:
                yield policy_grant(a, g["Arn"], "group", x)

        # pass 2: users and roles, streamed page by page
        params = {"Filter": ["User", "Role"], "MaxItems": self.config.page_size}
        ctx.source(endpoint=DETAILS, account=acct, **params)
        for page in clients.pages(ctx, a, iam, "get_account_authorization_details", where=f"account {acct} users and roles",
                                  token_in="Marker", token_out="Marker", more="IsTruncated", **params):
            users, roles = page.get("UserDetailList") or [], page.get("RoleDetailList") or []
            yield from self._fetch_managed(ctx, clients, a, iam, st, [x.get("AttachedManagedPolicies") for x in users + roles])
            for u in users:
                yield from self._user(ctx, clients, a, iam, u, st)
            for r in roles:
                yield from self._role(a, r, st)

    # -- the credential report --------------------------------------------------------------------
    def _credential_report(self, ctx: RunContext, clients: AwsClients, a: AwsAccount, iam: Any,
                           reports: dict[str, Any]) -> tuple[dict[str, dict[str, Any]] | None, dict[str, Any] | None]:
        cfg = self.config
        where = f"account {a.account_id} credential report"
        ctx.source(endpoint="iam.GenerateCredentialReport", account=a.account_id)
        deadline = time.monotonic() + cfg.credential_report_timeout_s
        delay = cfg.credential_report_poll_s
        try:
            polls = 0
            while True:
                state = (clients.call(ctx, a, iam, "generate_credential_report", where=where, page=polls) or {}).get("State")
                if state == "COMPLETE":
                    break
                if time.monotonic() + delay > deadline:
                    raise SourceError(f"the credential report was not ready after {cfg.credential_report_timeout_s:.0f} s "
                                      f"(state {state})", where=where)
                clients.sleep(delay)
                delay = min(delay * 2, 15.0)
                polls += 1
            answer = clients.call(ctx, a, iam, "get_credential_report", where=where) or {}
        except (PermissionDenied, SourceError) as exc:
            ctx.error(where, f"{exc} (console access, MFA and access keys of every user are unknown in this run)")
            reports[a.account_id] = {"available": False}
            return None, None
        content = answer.get("Content") or b""
        text = content.decode("utf-8-sig") if isinstance(content, (bytes, bytearray)) else str(content)
        users, root = parse_credential_report(text)
        reports[a.account_id] = {"available": True, "generated": aws_time(answer.get("GeneratedTime")),
                                 "rows": len(users) + (root is not None), "root_row": root is not None, "polls": polls + 1}
        if root is None:
            ctx.logger.info("account %s: the credential report has no %s row; the root user's MFA comes from "
                            "the account summary", a.account_id, ROOT_ROW)
        return users, root

    # -- AWS-managed policies: fetched only when attached, once -------------------------------------
    def _fetch_managed(self, ctx: RunContext, clients: AwsClients, a: AwsAccount, iam: Any, st: State,
                       lists: list[Any]) -> Iterator[Record]:
        wanted = sorted({p.get("PolicyArn") for lst in lists for p in (lst or []) if p.get("PolicyArn")} - set(st.docs))
        for arn in wanted:
            where = f"policy {arn}"
            try:
                policy = (clients.call(ctx, a, iam, "get_policy", where=where, PolicyArn=arn) or {}).get("Policy") or {}
                version = (clients.call(ctx, a, iam, "get_policy_version", where=where, PolicyArn=arn,
                                        VersionId=policy.get("DefaultVersionId")) or {}).get("PolicyVersion") or {}
            except (PermissionDenied, SourceError) as exc:
                ctx.error(where, f"{exc} (grants of this policy are recorded with role 'other' unless it is {ADMINISTRATOR_ACCESS})")
                st.docs[arn] = None
                continue
            doc = document(version.get("Document"))
            st.docs[arn] = doc
            yield policy_resource(policy, doc, aws_managed=":iam::aws:policy/" in arn)

    @staticmethod
    def _attached_policies(managed: Any, inline: Any, st: State) -> list:
        return attached(managed, inline, st.docs)

    # -- principals ---------------------------------------------------------------------------------
    def _root(self, a: AwsAccount, creds: dict[str, Any] | None, summary: dict[str, Any] | None) -> Iterator[Record]:
        arn = a.arn("iam", "root")
        if creds is not None:
            mfa, mfa_source = creds["mfa"], "credential report"
        elif summary is not None and "AccountMFAEnabled" in summary:
            mfa, mfa_source = bool(summary["AccountMFAEnabled"]), "account summary (AccountMFAEnabled)"
        else:
            mfa, mfa_source = None, None
        attributes: dict[str, Any] = {
            "account_id": a.account_id, "credential_report_row": creds is not None, "mfa_source": mfa_source,
            "access_keys_present": bool(summary.get("AccountAccessKeysPresent")) if summary and "AccountAccessKeysPresent" in summary else None,
        }
        if creds is not None:
            attributes.update({"access_keys": creds["access_keys"], "password_last_used": creds["password_last_used"],
                               "password_last_changed": creds["password_last_changed"]})
        yield Principal(id=arn, kind="user", display_name=f"root user of {a.account_id}", external=False, mfa=mfa, admin=True,
                        last_sign_in=latest(creds), created=creds["created"] if creds else None,
                        attributes=attributes).record()
        yield Grant(resource_id=a.resource_id, principal_id=arn, principal_kind="user", role="admin", raw_role="root",
                    via="direct", external=False, grant_id="root",
                    attributes={"policy_type": "root", "note": "the root user can do everything in the account"}).record()

    def _user(self, ctx: RunContext, clients: AwsClients, a: AwsAccount, iam: Any, u: dict[str, Any],
              st: State) -> Iterator[Record]:
        arn, name = u["Arn"], u["UserName"]
        creds: dict[str, Any] | None = None
        if st.report is not None:
            creds = st.report.get(arn) or self._creds_by_calls(ctx, clients, a, iam, name, arn)
        own = self._attached_policies(u.get("AttachedManagedPolicies"), u.get("UserPolicyList"), st)
        groups = [(g, *st.groups.get(g, (a.arn("iam", f"group/{g}"), []))) for g in u.get("GroupList") or []]
        inherited = [x for _, _, attached in groups for x in attached]
        tags = {t.get("Key"): t.get("Value") for t in u.get("Tags") or []}
        email = next((v for k, v in tags.items() if str(k).lower() in ("email", "mail", "e-mail") and v and "@" in v), None)
        email = email.lower() if email else None
        domain = email.rsplit("@", 1)[1] if email else None
        internal = st.org.is_internal_domain(domain)
        enabled = None if creds is None else bool(creds["console"]) or any(k["active"] for k in creds["access_keys"])
        boundary = (u.get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn")
        yield Principal(
            id=arn, kind="user", email=email, display_name=name, domain=domain,
            external=False if internal is None else not internal, enabled=enabled,
            mfa=None if creds is None else creds["mfa"], admin=any(x.level == "admin" for x in own + inherited),
            roles=tuple(sorted({x.name for x in own + inherited})), last_sign_in=latest(creds),
            created=aws_time(u.get("CreateDate")),
            attributes={
                "account_id": a.account_id, "user_id": u.get("UserId"), "path": u.get("Path"), "tags": tags,
                "groups": sorted(g for g, _, _ in groups), "permissions_boundary": boundary,
                "policies": [attached_attr(x) for x in own],
                "console_access": None if creds is None else creds["console"],
                "password_last_used": None if creds is None else creds["password_last_used"],
                "password_last_changed": None if creds is None else creds["password_last_changed"],
                "access_keys": None if creds is None else creds["access_keys"],
                "signing_certificates_active": None if creds is None else creds["certificates_active"],
                "credentials_source": None if creds is None else creds["source"],
            },
        ).record()
        for g, garn, _ in groups:
            yield Membership(group_id=garn, member_id=arn, member_kind="user", role="member",
                             attributes={"group_name": g, "account_id": a.account_id}).record()
        for x in own:
            yield policy_grant(a, arn, "user", x)
        for g, garn, held in groups:
            for x in held:
                yield policy_grant(a, arn, "user", x, group=garn)

    def _creds_by_calls(self, ctx: RunContext, clients: AwsClients, a: AwsAccount, iam: Any, name: str,
                        arn: str) -> dict[str, Any] | None:
        """A user the credential report does not list yet (created after it): read one by one."""
        where = f"user {arn}"
        try:
            login = clients.call(ctx, a, iam, "get_login_profile", where=where, missing=("NoSuchEntity",), UserName=name)
            mfa = (clients.call(ctx, a, iam, "list_mfa_devices", where=where, UserName=name) or {}).get("MFADevices") or []
            keys = (clients.call(ctx, a, iam, "list_access_keys", where=where, UserName=name) or {}).get("AccessKeyMetadata") or []
            out = []
            for n, k in enumerate(sorted(keys, key=lambda k: str(k.get("CreateDate"))), 1):
                used = (clients.call(ctx, a, iam, "get_access_key_last_used", where=where, AccessKeyId=k["AccessKeyId"])
                        or {}).get("AccessKeyLastUsed") or {}
                out.append({"slot": n, "active": k.get("Status") == "Active", "created": aws_time(k.get("CreateDate")),
                            "last_used": aws_time(used.get("LastUsedDate")), "last_used_service": na(used.get("ServiceName")),
                            "last_used_region": na(used.get("Region"))})
        except (PermissionDenied, SourceError) as exc:
            ctx.error(where, f"{exc} (not in the credential report; its console, MFA and keys are unknown)")
            return None
        profile = (login or {}).get("LoginProfile") or {}
        return {"console": login is not None, "password_last_used": None,
                "password_last_changed": aws_time(profile.get("CreateDate")), "mfa": bool(mfa), "access_keys": out,
                "certificates_active": None, "created": None, "source": "per-user calls (not in the credential report)"}

    def _role(self, a: AwsAccount, r: dict[str, Any], st: State) -> Iterator[Record]:
        arn = r["Arn"]
        attached = self._attached_policies(r.get("AttachedManagedPolicies"), r.get("RolePolicyList"), st)
        level = max_level(x.level for x in attached)
        trust = document(r.get("AssumeRolePolicyDocument"))
        last = r.get("RoleLastUsed") or {}
        yield Principal(
            id=arn, kind="role", display_name=r["RoleName"], external=False, admin=level == "admin",
            roles=tuple(sorted({x.name for x in attached})), last_sign_in=aws_time(last.get("LastUsedDate")),
            created=aws_time(r.get("CreateDate")),
            attributes={"account_id": a.account_id, "role_id": r.get("RoleId"), "path": r.get("Path"),
                        "last_used_region": last.get("Region"), "policies": [attached_attr(x) for x in attached],
                        "permissions_boundary": (r.get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn"),
                        "tags": {t.get("Key"): t.get("Value") for t in r.get("Tags") or []}},
        ).record()
        yield Resource(
            id=arn, kind="role", name=r["RoleName"], path=r.get("Path"), owners=(a.resource_id,),
            attributes={"account_id": a.account_id, "trust_policy": trust, "description": r.get("Description"),
                        "max_session_duration_s": r.get("MaxSessionDuration"),
                        "instance_profiles": sorted(p.get("InstanceProfileName") for p in r.get("InstanceProfileList") or [])},
        ).record()
        for x in attached:
            yield policy_grant(a, arn, "role", x)
        own_iam = f"arn:{a.partition}:iam::{a.account_id}:"
        for n, s in enumerate(statements(trust)):
            if s.get("Effect") != "Allow" or "Principal" not in s:
                continue
            actions = sorted(str(x) for x in (s.get("Action") if isinstance(s.get("Action"), list) else [s.get("Action")]) if x)
            scope, keys = condition_scope(s.get("Condition"))
            external_id = any(str(k).lower() == "sts:externalid" for block in (s.get("Condition") or {}).values()
                              if isinstance(block, dict) for k in block)
            for ptype, value in principal_entries(s.get("Principal")):
                w = who(ptype, value, st.internal)
                public = w.kind == "anyone"
                yield Grant(
                    resource_id=arn, principal_id=w.id, principal_kind=w.kind, role=level,  # type: ignore[arg-type]
                    raw_role=",".join(actions) or "sts:AssumeRole", via="direct",
                    external=(True if scope == "anyone" else None) if public else w.external,
                    link_scope=scope if public else None, grant_id=f"trust:{s.get('Sid') or n}",  # type: ignore[arg-type]
                    attributes={"source": "trust policy", "principal": w.raw, "principal_type": ptype, "account_id": w.account,
                                "condition": s.get("Condition"), "restricted_by": keys, "external_id_required": external_id,
                                "sid": s.get("Sid") or None},
                ).record()
                own_identity = w.id.startswith(own_iam) and w.kind in ("user", "role", "group")  # recorded from IAM itself
                if w.id not in st.seen and not own_identity:
                    st.seen.add(w.id)
                    yield Principal(id=w.id, kind=w.kind, display_name=w.display_name,  # type: ignore[arg-type]
                                    external=True if public else w.external,
                                    attributes={"account_id": w.account, "principal": w.raw, "source": "trust policy"}).record()

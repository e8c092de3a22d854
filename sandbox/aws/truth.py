"""The AWS truth: counts, planted problems and per-entity facts, derived from an :class:`AwsPlan` (no AWS call)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

from sandbox.aws.plan import (
    ADMIN_POLICY,
    ADMINS,
    GROUP_POLICIES,
    MOTO_DEFAULT_ACCOUNT_ID,
    OLD_KEY_DAYS,
    STRONG_PASSWORD_LENGTH,
    UNUSED_KEY_DAYS,
    AwsPlan,
    aws_plan,
    canonical_id,
)
from sandbox.org import REFERENCE_TIME, Org


@dataclass(frozen=True)
class AwsTruth:
    """Counts, planted problems and the per-entity facts a read-back can be checked against."""

    account_id: str
    aws_managed_policies: bool
    counts: dict[str, int]
    problems: list[dict[str, Any]]
    users: dict[str, dict[str, Any]] = field(repr=False)
    roles: dict[str, dict[str, Any]] = field(repr=False)
    buckets: dict[str, dict[str, Any]] = field(repr=False)
    customer_policies: dict[str, str] = field(repr=False)     # name -> ARN
    password_policy: dict[str, Any] = field(repr=False)
    account_public_access_block: dict[str, bool] = field(repr=False)

    @property
    def problem_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(p["kind"] for p in self.problems).items()))

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "problem_counts": self.problem_counts}


def _problems(org: Org, plan: AwsPlan) -> Iterator[dict[str, Any]]:
    ref = REFERENCE_TIME.date()
    acct = plan.account_id
    for u in plan.users:
        arn = plan.user_arn(u.name)
        p = org.person(u.person)
        if u.status == "leaver" and u.active:
            yield {"kind": "iam_leaver_active", "subject": arn, "where": "iam", "detail": f"{u.email} left {p.end}"}
        if u.status == "contractor" and p.end and p.end < ref and u.active:
            yield {"kind": "iam_contractor_after_contract_end", "subject": arn, "where": "iam",
                   "detail": f"{u.email} ({p.partner}) contract ended {p.end}"}
        if u.console and not u.mfa:
            yield {"kind": "iam_console_user_without_mfa", "subject": arn, "where": "iam", "detail": u.email}
        elif u.active and not u.mfa:
            yield {"kind": "iam_user_without_mfa", "subject": arn, "where": "iam", "detail": f"{u.email} (access keys only)"}
        if ADMINS in u.groups:
            yield {"kind": "iam_admin", "subject": arn, "where": "iam",
                   "detail": f"group {ADMINS}: {plan.policy_arn(ADMIN_POLICY)}"}
        if u.inline_admin:
            yield {"kind": "iam_admin", "subject": arn, "where": "iam",
                   "detail": 'inline policy break-glass: "Action": "*", "Resource": "*"'}
        for n, k in enumerate(u.keys, 1):
            if k.status != "Active":
                continue
            if k.age_days > OLD_KEY_DAYS:
                yield {"kind": "iam_old_access_key", "subject": arn, "where": "iam",
                       "detail": f"access key {n}: {k.age_days} days old (intended; moto records creation as now)"}
            if not k.used and k.age_days >= UNUSED_KEY_DAYS:
                yield {"kind": "iam_unused_access_key", "subject": arn, "where": "iam",
                       "detail": f"access key {n}: never used, {k.age_days} days old"}
    weak = [f"{k}={v}" for k, v in sorted(plan.password_policy.items())
            if (k == "MinimumPasswordLength" and v < STRONG_PASSWORD_LENGTH) or (k == "RequireSymbols" and not v)]
    if weak:
        yield {"kind": "iam_weak_password_policy", "subject": f"arn:aws:iam::{acct}:root", "where": "iam",
               "detail": ", ".join(weak)}
    for role in plan.roles:
        principal = role.principal.get("AWS")
        if role.kind == "partner":
            partner = next(p for p in org.partners if p.aws_account_id and p.aws_account_id in principal)
            ended = f", contract ended {partner.contract_end}" if partner.contract_end and partner.contract_end < ref else ""
            yield {"kind": "iam_cross_account_trust", "subject": principal, "where": plan.role_arn(role.name),
                   "detail": f"partner {partner.key} ({partner.domain}){ended}"}
        elif role.kind == "unknown":
            yield {"kind": "iam_cross_account_trust_unknown", "subject": principal, "where": plan.role_arn(role.name),
                   "detail": "account not in the organisation nor a known partner"}
    for b in plan.buckets:
        if b.policy is not None and b.kind == "public_policy":
            actions = sorted({s["Action"] for s in b.policy["Statement"] if s.get("Principal") == "*" and "Condition" not in s})
            yield {"kind": "s3_public_policy", "subject": "anyone", "where": b.arn, "detail": ", ".join(actions)}
        if b.acl in ("public-read", "public-read-write"):
            yield {"kind": "s3_public_acl", "subject": "anyone", "where": b.arn, "detail": b.acl}
        if b.grant_read_to:
            vendor = next(p for p in org.partners if p.aws_account_id and canonical_id(p.aws_account_id) == b.grant_read_to)
            yield {"kind": "s3_cross_account_acl", "subject": b.grant_read_to, "where": b.arn,
                   "detail": f"READ to partner {vendor.key} (account {vendor.aws_account_id})"}
        if not b.public_access_block:
            yield {"kind": "s3_missing_public_access_block", "subject": b.name, "where": b.arn, "detail": b.region}
    off = [k for k, v in plan.account_public_access_block.items() if not v]
    if off:
        yield {"kind": "s3_account_public_access_block_partial", "subject": acct, "where": "s3control",
               "detail": "off: " + ", ".join(off)}


def _counts(plan: AwsPlan) -> dict[str, int]:
    c: Counter[str] = Counter()
    for u in plan.users:
        c["iam_users"] += 1
        c["iam_users_console"] += u.console
        c["iam_users_mfa"] += u.mfa
        c["iam_access_keys"] += len(u.keys)
        c["iam_access_keys_active"] += sum(k.status == "Active" for k in u.keys)
        c["iam_access_keys_used"] += sum(k.used for k in u.keys)
        c["iam_group_memberships"] += len(u.groups)
        c["iam_user_inline_policies"] += u.inline_admin
    c["iam_groups"] = len(GROUP_POLICIES)
    c["iam_roles"] = len(plan.roles)
    c["iam_role_inline_policies"] = sum(r.inline is not None for r in plan.roles)
    c["iam_customer_managed_policies"] = len(plan.customer_policies)
    c["iam_virtual_mfa_devices"] = c["iam_users_mfa"]
    for b in plan.buckets:
        c["s3_buckets"] += 1
        c[f"s3_buckets.{b.region}"] += 1
    return dict(sorted(c.items()))


def truth_from_plan(org: Org, plan: AwsPlan) -> AwsTruth:
    users = {
        u.name: {
            "arn": plan.user_arn(u.name), "email": u.email, "person": u.person, "status": u.status,
            "console": u.console, "mfa": u.mfa, "groups": sorted(u.groups), "inline_admin": u.inline_admin,
            "tags": {t["Key"]: t["Value"] for t in u.tags},
            "keys": [{"status": k.status, "age_days": k.age_days, "used": k.used,
                      "created": (REFERENCE_TIME - timedelta(days=k.age_days)).date().isoformat()} for k in u.keys],
        }
        for u in plan.users
    }
    roles = {
        r.name: {"arn": plan.role_arn(r.name), "kind": r.kind, "trust": r.trust,
                 "policies": sorted(plan.policy_arn(n) for n in r.policies), "inline": r.inline is not None}
        for r in plan.roles
    }
    buckets = {
        b.name: {"region": b.region, "kind": b.kind, "ownership": b.ownership, "public_access_block": b.public_access_block,
                 "policy": b.policy, "acl": b.acl, "grant_read_to": b.grant_read_to, "object_lock": b.object_lock,
                 "public": b.kind in ("public_policy", "public_acl")}
        for b in plan.buckets
    }
    return AwsTruth(
        account_id=plan.account_id, aws_managed_policies=plan.aws_managed_policies, counts=_counts(plan),
        problems=list(_problems(org, plan)), users=users, roles=roles, buckets=buckets,
        customer_policies={n: plan.policy_arn(n) for n in plan.customer_policies},
        password_policy=dict(plan.password_policy), account_public_access_block=dict(plan.account_public_access_block),
    )


def aws_truth(org: Org, *, account_id: str = MOTO_DEFAULT_ACCOUNT_ID, aws_managed_policies: bool = False) -> AwsTruth:
    """The AWS side of the organisation's truth, from the Org alone (no AWS call)."""
    return truth_from_plan(org, aws_plan(org, account_id=account_id, aws_managed_policies=aws_managed_policies))

"""AWS IAM and S3 for the synthetic organisation, seeded into moto through plain boto3 calls.

The same :func:`seed_aws` runs inside ``moto.mock_aws()`` (:func:`aws_sandbox`, for unit tests)
and against a ``moto.server.ThreadedMotoServer`` on 127.0.0.1 (:func:`start_moto_server`, for
end-to-end tests of the daemon), so nothing here knows which one it talks to. What is seeded is
a pure function of the :class:`~sandbox.org.Org` (:func:`aws_plan`), and :func:`aws_truth`
derives the counts and the planted problems from that plan without calling AWS; ``seed_aws``
returns the very same :class:`AwsTruth`.

What the organisation looks like in AWS (one member account, moto's, read back with STS):

* an IAM user for every person with ``aws=True`` (user name = the e-mail local part, tags
  ``Email``, ``Department``, ``Status``); person 9 (:data:`FORGOTTEN_LEAVERS`) is a leaver whose
  directory account was suspended but whose IAM user was forgotten, so that a *small* tenant has
  an ``iam_leaver_active`` too;
* console passwords for most, virtual MFA devices (enabled with real TOTP codes) for those with
  ``mfa=True``, access keys for some, three groups (Admins, Developers, ReadOnly), one user who is
  admin through an inline ``"Action": "*", "Resource": "*"`` policy, four roles (a vendor
  cross-account trust, a trust to an unknown account, an EC2 service role, an
  OrganizationAccountAccessRole), a weak password policy;
* S3 buckets in ap-northeast-1 and us-east-1: public by policy, ``Principal: "*"`` narrowed by
  conditions (not public), public-read ACL, an ACL grant to the vendor's account, private ones
  with and without a public access block, and the Object Lock evidence vault; an account-level
  public access block that blocks *new* public ACLs and policies but ignores none of the old ones.

What moto cannot express, and how it is handled (never faked):

* **access-key ages** — IAM sets ``CreateDate`` to the time of the call and has no API to change
  it. The intended age of every key is in the truth (``users[...]["keys"][k]["age_days"]``,
  relative to :data:`~sandbox.org.REFERENCE_TIME`) and ``iam_old_access_key`` is derived from it.
  Whether a key has been *used* is real: keys planted as used sign one ``sts:GetCallerIdentity``
  call, which moto records as ``AccessKeyLastUsed`` (service ``sts``); unused keys show ``N/A``.
* console ``PasswordLastUsed`` — no API sets it (moto reports ``no_information``); not planted.
* the credential report has no ``<root_account>`` row in moto (real IAM has one); its
  ``GeneratedTime`` is a constant. Nothing here relies on either.
* AWS-managed policies exist only when moto loads them (``load_aws_managed_policies``). When they
  are absent, ``AdministratorAccess`` and ``ReadOnlyAccess`` are created as customer-managed
  stand-ins under the path :data:`STANDIN_PATH` (ARN ``…:policy/aws-managed-standin/…``) and the
  truth says so (``aws_managed_policies=False``, two more customer-managed policies).
* S3's account-level public access block is stored but not enforced by moto, nor is
  ``BucketOwnerEnforced`` (ACLs are accepted); the seeding order is the one real S3 accepts
  (ACLs and policies first, the account-level block last), so nothing depends on that gap.

Other moto 5.2.1 gaps met here (nothing is built on them): ``GetBucketPolicyStatus`` is not
implemented (it answers ``PolicyStatus: {}`` for every bucket, never ``NoSuchBucketPolicy``);
``GetObjectRetention`` is not implemented (HeadObject's ``ObjectLockMode`` /
``ObjectLockRetainUntilDate`` carry the same facts); ``ListBuckets`` has no ``BucketRegion`` (use
``GetBucketLocation``); virtual-MFA codes are not checked (real TOTP codes are sent anyway); the
5,000-users-per-account IAM quota is reported but not enforced. Against a server, the S3 Control
endpoint rules prefix the host with the account id (``123456789012.127.0.0.1``), which resolves
nowhere: :func:`local_client` registers :func:`strip_account_host_prefix` for that.

The vendor's canonical user id (:func:`canonical_id`) is synthetic: a real one cannot be derived
from an account id.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import random
import struct
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import boto3
from botocore.config import Config

from sandbox.org import AWS_ACCOUNT_ID, REFERENCE_TIME, Org, Person
from sandbox.org import _rng as org_rng

# -- constants -------------------------------------------------------------------------------

MOTO_DEFAULT_ACCOUNT_ID = "123456789012"   # moto's account unless MOTO_ACCOUNT_ID says otherwise
MANAGEMENT_ACCOUNT_ID = AWS_ACCOUNT_ID      # the org's AWS Organizations management account
UNKNOWN_ACCOUNT_ID = "999988887777"         # trusted by a legacy role; belongs to nobody we know
ORGANIZATION_ID = "o-a1b2c3d4e5"
HOME_REGION = "ap-northeast-1"
REGIONS = ("ap-northeast-1", "us-east-1")
FAKE_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}

OLD_KEY_DAYS = 90            # an active key older than this wants rotating
UNUSED_KEY_DAYS = 45         # an active key never used and at least this old is unused (CIS)
STRONG_PASSWORD_LENGTH = 14

FORGOTTEN_LEAVERS = (9,)     # leavers whose IAM user is never cleaned up (planted)
INLINE_ADMIN_PERSON = 10     # gets an inline "*:*" policy (planted), if the org is that big
API_ONLY_PEOPLE = (5,)       # IAM users without a console password
CONSOLE_PEOPLE = (0, 1, 9, 10, 11)

STANDIN_PATH = "/aws-managed-standin/"
ADMIN_POLICY = "AdministratorAccess"
READONLY_POLICY = "ReadOnlyAccess"
DEVELOPER_POLICY = "DeveloperAccess"
ADMINS, DEVELOPERS, READONLY = "Admins", "Developers", "ReadOnly"

_ALLOW_ALL = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
_READ_ONLY = {
    "Version": "2012-10-17",
    "Statement": [{
        "Effect": "Allow",
        "Action": ["ec2:Describe*", "iam:Get*", "iam:List*", "s3:Get*", "s3:List*",
                   "cloudtrail:Describe*", "cloudtrail:Get*", "cloudtrail:LookupEvents", "logs:Describe*"],
        "Resource": "*",
    }],
}
_DEVELOPER = {
    "Version": "2012-10-17",
    "Statement": [
        {"Sid": "Build", "Effect": "Allow", "Resource": "*",
         "Action": ["ec2:*", "ecs:*", "ecr:*", "logs:*", "cloudwatch:*", "lambda:*", "s3:*"]},
        {"Sid": "NoIam", "Effect": "Deny", "Action": "iam:*", "Resource": "*"},
    ],
}


def canonical_id(account_id: str) -> str:
    """A synthetic S3 canonical user id for an account (64 hex digits, like the real ones)."""
    return hashlib.sha256(f"sandbox-canonical-user:{account_id}".encode()).hexdigest()


def _rng(seed: int, *parts: Any) -> random.Random:
    return org_rng(seed, "aws", *parts)  # the organisation's own deterministic generator


# -- the plan: everything seeded, as plain data computed from the Org --------------------------


@dataclass(frozen=True)
class KeyPlan:
    status: str          # Active | Inactive
    age_days: int        # intended age at REFERENCE_TIME (moto records "now")
    used: bool           # signed one call during seeding (AccessKeyLastUsed set)


@dataclass(frozen=True)
class UserPlan:
    person: int
    name: str
    email: str
    department: str
    status: str          # active | leaver | contractor
    console: bool
    mfa: bool
    keys: tuple[KeyPlan, ...]
    groups: tuple[str, ...]
    inline_admin: bool

    @property
    def tags(self) -> list[dict[str, str]]:
        return [{"Key": "Email", "Value": self.email}, {"Key": "Department", "Value": self.department},
                {"Key": "Status", "Value": self.status}]

    @property
    def active(self) -> bool:
        """Can still sign in or call the API."""
        return self.console or any(k.status == "Active" for k in self.keys)


@dataclass(frozen=True)
class RolePlan:
    name: str
    kind: str            # partner | unknown | service | organization
    principal: dict[str, str]
    policies: tuple[str, ...]     # managed policy names (resolved to ARNs when seeding)
    inline: dict[str, Any] | None = None
    external_id: str | None = None

    @property
    def trust(self) -> dict[str, Any]:
        statement: dict[str, Any] = {"Effect": "Allow", "Principal": self.principal, "Action": "sts:AssumeRole"}
        if self.external_id:
            statement["Condition"] = {"StringEquals": {"sts:ExternalId": self.external_id}}
        return {"Version": "2012-10-17", "Statement": [statement]}


@dataclass(frozen=True)
class BucketPlan:
    name: str
    region: str
    kind: str                      # public_policy | conditional_policy | public_acl | partner_acl | vault | private
    ownership: str | None          # BucketOwnerEnforced | BucketOwnerPreferred | ObjectWriter | None (none set)
    public_access_block: bool      # all four settings on; False = no configuration at all
    policy: dict[str, Any] | None = None
    acl: str | None = None         # canned ACL
    grant_read_to: str | None = None  # canonical id given READ by ACL
    object_lock: bool = False

    @property
    def arn(self) -> str:
        return f"arn:aws:s3:::{self.name}"


@dataclass(frozen=True)
class AwsPlan:
    account_id: str
    aws_managed_policies: bool
    users: tuple[UserPlan, ...]
    roles: tuple[RolePlan, ...]
    buckets: tuple[BucketPlan, ...]
    customer_policies: tuple[str, ...]
    password_policy: dict[str, Any]
    account_public_access_block: dict[str, bool]

    def policy_arn(self, name: str) -> str:
        if name in (ADMIN_POLICY, READONLY_POLICY):
            if self.aws_managed_policies:
                return f"arn:aws:iam::aws:policy/{name}"
            return f"arn:aws:iam::{self.account_id}:policy{STANDIN_PATH}{name}"
        return f"arn:aws:iam::{self.account_id}:policy/{name}"

    def user_arn(self, name: str) -> str:
        return f"arn:aws:iam::{self.account_id}:user/{name}"

    def role_arn(self, name: str) -> str:
        return f"arn:aws:iam::{self.account_id}:role/{name}"


GROUP_POLICIES = {ADMINS: ADMIN_POLICY, DEVELOPERS: DEVELOPER_POLICY, READONLY: READONLY_POLICY}


def _user_plan(org: Org, p: Person) -> UserPlan:
    i = p.index
    r = _rng(org.seed, "user", i)
    cleaned = p.status == "leaver" and p.suspended and i not in FORGOTTEN_LEAVERS and r.random() < 0.6
    if cleaned:
        console = False                     # login profile deleted by the leaver process
    elif i in API_ONLY_PEOPLE:
        console = False
    elif i in CONSOLE_PEOPLE:
        console = True
    else:
        console = r.random() < 0.85
    fixed = {
        0: (KeyPlan("Active", 400, True),),                              # admin with an old key
        4: (KeyPlan("Inactive", 200, True), KeyPlan("Active", 20, True)),  # rotated
        5: (KeyPlan("Active", 45, True),),                                # API-only user
        9: (KeyPlan("Active", 260, False),),                              # the forgotten leaver
        10: (KeyPlan("Active", 150, False),),                             # old and never used
        16: (KeyPlan("Active", 10, False),),                              # new, not used yet
    }
    if i in fixed:
        keys = fixed[i]
    elif r.random() < 0.35 or not console:
        first = KeyPlan("Active", r.randint(1, 700), r.random() < 0.75)
        keys = (first,)
        if r.random() < 0.1:
            keys = (KeyPlan("Inactive", first.age_days + r.randint(30, 400), True), first)
    else:
        keys = ()
    if cleaned:
        keys = tuple(KeyPlan("Inactive", k.age_days, k.used) for k in keys)
    groups = []
    if p.admin:
        groups.append(ADMINS)
    if p.department.key == "kaihatsu":
        groups.append(DEVELOPERS)
    if not groups:
        groups.append(READONLY)
    return UserPlan(
        person=i, name=p.email.split("@", 1)[0], email=p.email, department=p.department.name_en,
        status=p.status, console=console, mfa=p.mfa, keys=keys, groups=tuple(groups),
        inline_admin=i == INLINE_ADMIN_PERSON,
    )


def _bucket_plans(org: Org) -> tuple[BucketPlan, ...]:
    slug = org.domain.replace(".", "-")
    vendor = next(p for p in org.partners if p.aws_account_id)
    n = max(8, org.n // 200)

    def public_read(name: str) -> dict[str, Any]:
        return {"Version": "2012-10-17", "Statement": [{
            "Sid": "PublicRead", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{name}/*"}]}

    def restricted(name: str) -> dict[str, Any]:
        return {"Version": "2012-10-17", "Statement": [
            {"Sid": "OfficeRead", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
             "Resource": f"arn:aws:s3:::{name}/*", "Condition": {"IpAddress": {"aws:SourceIp": ["203.0.113.0/24"]}}},
            {"Sid": "OrgWrite", "Effect": "Allow", "Principal": "*", "Action": "s3:PutObject",
             "Resource": f"arn:aws:s3:::{name}/*", "Condition": {"StringEquals": {"aws:PrincipalOrgID": ORGANIZATION_ID}}},
        ]}

    enforced = "BucketOwnerEnforced"
    names = [f"{slug}-{s}" for s in ("public-web", "partner-exchange", "legacy-downloads", "vendor-handoff",
                                     "evidence-vault", "old-logs", "app-data", "backups")]
    out = [
        BucketPlan(names[0], "ap-northeast-1", "public_policy", enforced, False, policy=public_read(names[0])),
        BucketPlan(names[1], "ap-northeast-1", "conditional_policy", enforced, True, policy=restricted(names[1])),
        BucketPlan(names[2], "us-east-1", "public_acl", "ObjectWriter", False, acl="public-read"),
        BucketPlan(names[3], "ap-northeast-1", "partner_acl", "BucketOwnerPreferred", True,
                   grant_read_to=canonical_id(vendor.aws_account_id)),
        BucketPlan(names[4], "ap-northeast-1", "vault", enforced, True, object_lock=True),
        BucketPlan(names[5], "us-east-1", "private", None, False),
        BucketPlan(names[6], "ap-northeast-1", "private", enforced, True),
        BucketPlan(names[7], "us-east-1", "private", enforced, True),
    ]
    for j in range(len(out), n):
        r = _rng(org.seed, "bucket", j)
        region = "ap-northeast-1" if r.random() < 0.7 else "us-east-1"
        pab = r.random() < 0.9
        ownership = enforced if r.random() < 0.9 else None
        out.append(BucketPlan(f"{slug}-data-{j:04d}", region, "private", ownership, pab))
    return tuple(out)


def _role_plans(org: Org) -> tuple[RolePlan, ...]:
    vendor = next(p for p in org.partners if p.aws_account_id)
    return (
        RolePlan("VendorDeployRole", "partner", {"AWS": f"arn:aws:iam::{vendor.aws_account_id}:root"},
                 (DEVELOPER_POLICY,), external_id=f"{vendor.key}-deploy"),
        RolePlan("LegacyMonitoringRole", "unknown", {"AWS": f"arn:aws:iam::{UNKNOWN_ACCOUNT_ID}:root"},
                 (READONLY_POLICY,)),
        RolePlan("app-server-role", "service", {"Service": "ec2.amazonaws.com"}, (),
                 inline={"Version": "2012-10-17", "Statement": [{
                     "Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"],
                     "Resource": [f"arn:aws:s3:::{org.domain.replace('.', '-')}-app-data",
                                  f"arn:aws:s3:::{org.domain.replace('.', '-')}-app-data/*"]}]}),
        RolePlan("OrganizationAccountAccessRole", "organization", {"AWS": f"arn:aws:iam::{MANAGEMENT_ACCOUNT_ID}:root"},
                 (ADMIN_POLICY,)),
    )


def aws_plan(org: Org, *, account_id: str = MOTO_DEFAULT_ACCOUNT_ID, aws_managed_policies: bool = False) -> AwsPlan:
    """Everything :func:`seed_aws` creates, computed from the organisation alone."""
    users = tuple(
        _user_plan(org, p) for p in org.people() if p.aws
    )
    customer = (DEVELOPER_POLICY,) if aws_managed_policies else (DEVELOPER_POLICY, ADMIN_POLICY, READONLY_POLICY)
    return AwsPlan(
        account_id=account_id, aws_managed_policies=aws_managed_policies, users=users,
        roles=_role_plans(org), buckets=_bucket_plans(org), customer_policies=customer,
        password_policy={
            "MinimumPasswordLength": 8, "RequireSymbols": False, "RequireNumbers": True,
            "RequireUppercaseCharacters": True, "RequireLowercaseCharacters": True,
            "AllowUsersToChangePassword": True, "PasswordReusePrevention": 5,
        },
        account_public_access_block={
            "BlockPublicAcls": True, "IgnorePublicAcls": False, "BlockPublicPolicy": True, "RestrictPublicBuckets": False,
        },
    )


# -- the truth -------------------------------------------------------------------------------


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


# -- seeding ---------------------------------------------------------------------------------


def totp(seed_base32: bytes | str, counter: int) -> str:
    """RFC 6238 TOTP (SHA-1, 6 digits) for time step ``counter`` — what an authenticator shows."""
    text = seed_base32.decode() if isinstance(seed_base32, bytes) else seed_base32
    text = text.strip().upper()
    key = base64.b32decode(text + "=" * (-len(text) % 8))
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    return f"{(int.from_bytes(mac[offset:offset + 4], 'big') & 0x7FFFFFFF) % 1_000_000:06d}"


def _password(org: Org, u: UserPlan) -> str:
    digest = hashlib.blake2b(f"{org.seed}:pw:{u.person}".encode(), digest_size=8).hexdigest()
    return f"Sandbox-{digest}-9x"  # test-only; satisfies the planted policy


def _offline_guard(endpoint_url: str | None) -> None:
    """Refuse to run anywhere but moto: in-process mock or a server on 127.0.0.1."""
    if endpoint_url is not None:
        if not endpoint_url.startswith(("http://127.0.0.1:", "https://127.0.0.1:")):
            raise ValueError(f"the AWS sandbox only talks to 127.0.0.1, not {endpoint_url!r}")
        return
    try:
        from moto.core.models import botocore_stubber
    except ImportError as exc:  # pragma: no cover - moto is a test dependency
        raise RuntimeError("seed_aws without endpoint_url needs moto installed and mock_aws() active") from exc
    if not botocore_stubber.enabled:
        raise RuntimeError("seed_aws without endpoint_url must run inside moto.mock_aws() (see aws_sandbox)")


class _Clients:
    def __init__(self, session: boto3.Session, endpoint_url: str | None):
        self.session, self.endpoint_url = session, endpoint_url
        self.config = Config(retries={"mode": "standard", "max_attempts": 2}, s3={"addressing_style": "path"})
        self._cache: dict[tuple[str, str], Any] = {}

    def __call__(self, service: str, region: str = HOME_REGION) -> Any:
        key = (service, region)
        if key not in self._cache:
            self._cache[key] = local_client(self.session, service, region, self.endpoint_url, self.config)
        return self._cache[key]

    def as_key(self, service: str, key_id: str, secret: str) -> Any:
        return self.session.client(service, region_name=HOME_REGION, endpoint_url=self.endpoint_url, config=self.config,
                                   aws_access_key_id=key_id, aws_secret_access_key=secret)


def strip_account_host_prefix(request: Any, **_: Any) -> None:
    """botocore ``before-sign`` hook: ``http://123456789012.127.0.0.1:PORT`` → ``http://127.0.0.1:PORT``.

    The S3 Control endpoint rules put the account id in front of the host even for a custom
    ``endpoint_url``; a name under an IP address resolves nowhere, so a local server needs this.
    """
    parts = urlsplit(request.url)
    host = parts.hostname or ""
    prefix, _, rest = host.partition(".")
    if prefix.isdigit() and len(prefix) == 12 and rest == "127.0.0.1":
        request.url = urlunsplit(parts._replace(netloc=parts.netloc.split(".", 1)[1]))


def local_client(session: boto3.Session, service: str, region: str = HOME_REGION, endpoint_url: str | None = None,
                 config: Config | None = None) -> Any:
    """A client for the sandbox: path-style S3 and, against a server, the S3 Control host fix."""
    client = session.client(service, region_name=region, endpoint_url=endpoint_url,
                            config=config or Config(s3={"addressing_style": "path"}))
    if endpoint_url is not None and service == "s3control":
        client.meta.events.register("before-sign.s3-control", strip_account_host_prefix)
    return client


def _has_aws_managed_policies(iam: Any) -> bool:
    try:
        iam.get_policy(PolicyArn=f"arn:aws:iam::aws:policy/{ADMIN_POLICY}")
        return True
    except iam.exceptions.NoSuchEntityException:
        return False


def seed_aws(org: Org, *, session: boto3.Session | None = None, endpoint_url: str | None = None) -> AwsTruth:
    """Create the organisation's IAM and S3 state with boto3; return its :class:`AwsTruth`.

    Inside ``mock_aws()`` leave ``endpoint_url`` None; against a moto server pass
    ``http://127.0.0.1:PORT``. Expects an empty account (a fresh mock or a reset server).
    """
    _offline_guard(endpoint_url)
    if session is None:
        session = boto3.Session(aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                                aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"], region_name=HOME_REGION)
    clients = _Clients(session, endpoint_url)
    account_id = clients("sts").get_caller_identity()["Account"]
    iam = clients("iam", "us-east-1")
    plan = aws_plan(org, account_id=account_id, aws_managed_policies=_has_aws_managed_policies(iam))
    _seed_iam(org, plan, clients)
    _seed_s3(plan, clients)
    return truth_from_plan(org, plan)


def _seed_iam(org: Org, plan: AwsPlan, clients: _Clients) -> None:
    iam = clients("iam", "us-east-1")
    iam.update_account_password_policy(**plan.password_policy)
    documents = {DEVELOPER_POLICY: _DEVELOPER, ADMIN_POLICY: _ALLOW_ALL, READONLY_POLICY: _READ_ONLY}
    for name in plan.customer_policies:
        standin = name != DEVELOPER_POLICY
        iam.create_policy(
            PolicyName=name, Path=STANDIN_PATH if standin else "/", PolicyDocument=json.dumps(documents[name]),
            Description=("Stand-in for the AWS managed policy of the same name (moto without managed policies)"
                         if standin else "Engineering: build and run workloads, no IAM"),
        )
    for group, policy in GROUP_POLICIES.items():
        iam.create_group(GroupName=group)
        iam.attach_group_policy(GroupName=group, PolicyArn=plan.policy_arn(policy))
    for role in plan.roles:
        iam.create_role(RoleName=role.name, AssumeRolePolicyDocument=json.dumps(role.trust),
                        Description=f"sandbox {role.kind} role")
        for policy in role.policies:
            iam.attach_role_policy(RoleName=role.name, PolicyArn=plan.policy_arn(policy))
        if role.inline is not None:
            iam.put_role_policy(RoleName=role.name, PolicyName="app-data-read", PolicyDocument=json.dumps(role.inline))
    for u in plan.users:
        iam.create_user(UserName=u.name, Tags=u.tags)
        if u.console:
            iam.create_login_profile(UserName=u.name, Password=_password(org, u), PasswordResetRequired=False)
        if u.mfa:
            device = iam.create_virtual_mfa_device(VirtualMFADeviceName=u.name)["VirtualMFADevice"]
            step = int(time.time()) // 30
            iam.enable_mfa_device(UserName=u.name, SerialNumber=device["SerialNumber"],
                                  AuthenticationCode1=totp(device["Base32StringSeed"], step),
                                  AuthenticationCode2=totp(device["Base32StringSeed"], step + 1))
        for group in u.groups:
            iam.add_user_to_group(GroupName=group, UserName=u.name)
        if u.inline_admin:
            iam.put_user_policy(UserName=u.name, PolicyName="break-glass", PolicyDocument=json.dumps(_ALLOW_ALL))
        for k in u.keys:
            key = iam.create_access_key(UserName=u.name)["AccessKey"]
            if k.used:  # a real call signed with the key: IAM records AccessKeyLastUsed
                clients.as_key("sts", key["AccessKeyId"], key["SecretAccessKey"]).get_caller_identity()
            if k.status != "Active":
                iam.update_access_key(UserName=u.name, AccessKeyId=key["AccessKeyId"], Status=k.status)


def _seed_s3(plan: AwsPlan, clients: _Clients) -> None:
    owner_id: str | None = None
    for b in plan.buckets:
        s3 = clients("s3", b.region)
        kwargs: dict[str, Any] = {"Bucket": b.name}
        if b.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": b.region}
        if b.object_lock:
            kwargs["ObjectLockEnabledForBucket"] = True
        if b.ownership:
            kwargs["ObjectOwnership"] = b.ownership
        s3.create_bucket(**kwargs)
        if b.object_lock:
            s3.put_object_lock_configuration(Bucket=b.name, ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Years": 7}}})
        if b.ownership is None:
            # real S3 gives new buckets BucketOwnerEnforced; a legacy bucket has no controls at all
            with contextlib.suppress(s3.exceptions.ClientError):
                s3.delete_bucket_ownership_controls(Bucket=b.name)
        if b.acl:
            s3.put_bucket_acl(Bucket=b.name, ACL=b.acl)
        if b.grant_read_to:
            if owner_id is None:
                owner_id = s3.get_bucket_acl(Bucket=b.name)["Owner"]["ID"]
            s3.put_bucket_acl(Bucket=b.name, GrantFullControl=f'id="{owner_id}"', GrantRead=f'id="{b.grant_read_to}"')
        if b.policy is not None:
            s3.put_bucket_policy(Bucket=b.name, Policy=json.dumps(b.policy))
        if b.public_access_block:
            s3.put_public_access_block(Bucket=b.name, PublicAccessBlockConfiguration={
                "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
        else:
            # real S3 turns the block on for new buckets; these had it removed
            s3.delete_public_access_block(Bucket=b.name)
    clients("s3control", HOME_REGION).put_public_access_block(
        AccountId=plan.account_id, PublicAccessBlockConfiguration=plan.account_public_access_block)


# -- running moto ----------------------------------------------------------------------------

_AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
            "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_IAM", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_STS",
            "AWS_ENDPOINT_URL_S3_CONTROL", "MOTO_ACCOUNT_ID", "MOTO_IAM_LOAD_MANAGED_POLICIES")


@contextlib.contextmanager
def _fake_aws_env(**extra: str) -> Iterator[None]:
    """Test-only AWS environment for the duration (saved and restored, like monkeypatch)."""
    saved = {k: os.environ.get(k) for k in set(_AWS_ENV) | set(extra)}
    try:
        for k in _AWS_ENV:
            os.environ.pop(k, None)
        os.environ.update(FAKE_CREDENTIALS)
        os.environ.update({"AWS_DEFAULT_REGION": HOME_REGION, "AWS_CONFIG_FILE": os.devnull,
                           "AWS_SHARED_CREDENTIALS_FILE": os.devnull, **extra})
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class AwsSandbox:
    truth: AwsTruth
    session: boto3.Session
    endpoint_url: str | None = None

    def client(self, service: str, region: str = HOME_REGION) -> Any:
        return local_client(self.session, service, region, self.endpoint_url)


@contextlib.contextmanager
def aws_sandbox(org: Org, *, load_aws_managed_policies: bool = False) -> Iterator[AwsSandbox]:
    """In-process ``mock_aws()`` seeded with the organisation; fake credentials for the duration.

    Do not run it while a :func:`start_moto_server` server is in use in the same process: both
    share moto's backends, and leaving the mock wipes them.
    """
    from moto import mock_aws

    config = {
        "core": {"mock_credentials": False, "passthrough": {"urls": [], "services": []},
                 "reset_boto3_session": True, "service_whitelist": None},
        "iam": {"load_aws_managed_policies": load_aws_managed_policies},
    }
    with _fake_aws_env(), mock_aws(config=config):
        session = boto3.Session(region_name=HOME_REGION)
        truth = seed_aws(org, session=session)
        yield AwsSandbox(truth, session)


def start_moto_server(org: Org, *, load_aws_managed_policies: bool = False) -> tuple[Any, str]:
    """Start ``ThreadedMotoServer`` on 127.0.0.1 (free port), reset it, seed it; ``(server, url)``.

    The caller stops it with ``server.stop()``. Clients need ``endpoint_url=url``, any region,
    test credentials, and path-style S3 (automatic for an IP address).
    """
    from moto.core.models import botocore_stubber
    from moto.server import ThreadedMotoServer

    if botocore_stubber.enabled:
        raise RuntimeError("mock_aws() is active in this process: it shares moto's state with the server; leave it first")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    try:
        import requests

        session = boto3.Session(aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                                aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"], region_name=HOME_REGION)
        # moto's /moto-api/config cannot switch IAM managed policies; the environment variable can,
        # read when the reset IAM backend is built by the first IAM call (inside seed_aws)
        flag = {"MOTO_IAM_LOAD_MANAGED_POLICIES": "true"} if load_aws_managed_policies else {}
        with _override_env(flag):
            requests.post(f"{url}/moto-api/reset", timeout=30).raise_for_status()
            seed_aws(org, session=session, endpoint_url=url)
    except BaseException:
        server.stop()
        raise
    return server, url


@contextlib.contextmanager
def _override_env(values: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

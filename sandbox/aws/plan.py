"""The plan: what the organisation looks like in AWS, as plain data computed from the :class:`~sandbox.org.Org`.

Nothing here calls AWS. :func:`aws_plan` is everything :func:`~sandbox.aws.seed.seed_aws` creates;
:mod:`sandbox.aws.truth` derives the counts and planted problems from the same plan.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

from sandbox.org import AWS_ACCOUNT_ID, Org, Person
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


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

Layout: :mod:`sandbox.aws.plan` (the plan, plain data, and the constants), :mod:`sandbox.aws.truth`
(:class:`AwsTruth` from a plan), :mod:`sandbox.aws.seed` (boto3 seeding, :func:`aws_sandbox`,
:func:`start_moto_server`). Everything public is re-exported here.
"""

from sandbox.aws.plan import (
    ADMIN_POLICY,
    ADMINS,
    API_ONLY_PEOPLE,
    CONSOLE_PEOPLE,
    DEVELOPER_POLICY,
    DEVELOPERS,
    FAKE_CREDENTIALS,
    FORGOTTEN_LEAVERS,
    GROUP_POLICIES,
    HOME_REGION,
    INLINE_ADMIN_PERSON,
    MANAGEMENT_ACCOUNT_ID,
    MOTO_DEFAULT_ACCOUNT_ID,
    OLD_KEY_DAYS,
    ORGANIZATION_ID,
    READONLY,
    READONLY_POLICY,
    REGIONS,
    STANDIN_PATH,
    STRONG_PASSWORD_LENGTH,
    UNKNOWN_ACCOUNT_ID,
    UNUSED_KEY_DAYS,
    AwsPlan,
    BucketPlan,
    KeyPlan,
    RolePlan,
    UserPlan,
    aws_plan,
    canonical_id,
)
from sandbox.aws.seed import (
    AwsSandbox,
    aws_sandbox,
    local_client,
    seed_aws,
    start_moto_server,
    strip_account_host_prefix,
    totp,
)
from sandbox.aws.truth import AwsTruth, aws_truth, truth_from_plan

__all__ = [
    "ADMINS", "ADMIN_POLICY", "API_ONLY_PEOPLE", "CONSOLE_PEOPLE", "DEVELOPERS", "DEVELOPER_POLICY",
    "FAKE_CREDENTIALS", "FORGOTTEN_LEAVERS", "GROUP_POLICIES", "HOME_REGION", "INLINE_ADMIN_PERSON",
    "MANAGEMENT_ACCOUNT_ID", "MOTO_DEFAULT_ACCOUNT_ID", "OLD_KEY_DAYS", "ORGANIZATION_ID", "READONLY",
    "READONLY_POLICY", "REGIONS", "STANDIN_PATH", "STRONG_PASSWORD_LENGTH", "UNKNOWN_ACCOUNT_ID", "UNUSED_KEY_DAYS",
    "AwsPlan", "AwsSandbox", "AwsTruth", "BucketPlan", "KeyPlan", "RolePlan", "UserPlan",
    "aws_plan", "aws_sandbox", "aws_truth", "canonical_id", "local_client", "seed_aws", "start_moto_server",
    "strip_account_host_prefix", "totp", "truth_from_plan",
]

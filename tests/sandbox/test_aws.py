"""The AWS sandbox: moto seeded from the organisation, read back with plain boto3.

The read-back below is an independent little auditor: it derives counts and problems from what
IAM and S3 answer (documented calls and error codes only) and compares them with
:func:`sandbox.aws.aws_truth`, which is computed from the Org without AWS. The one input it takes
from the truth is the *intended* age of each access key, which moto cannot store (it records the
creation time as "now"). Nothing relies on moto's known gaps: no MaxItems/MaxBuckets, no root row
expected in the credential report, no enforcement of BucketOwnerEnforced or of the account-level
public access block, and GetBucketPolicyStatus is only checked where moto answers it.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

pytest.importorskip("moto")

from sandbox.aws import (
    MANAGEMENT_ACCOUNT_ID,
    OLD_KEY_DAYS,
    STRONG_PASSWORD_LENGTH,
    UNUSED_KEY_DAYS,
    aws_sandbox,
    aws_truth,
    seed_aws,
    start_moto_server,
    strip_account_host_prefix,
    totp,
)
from sandbox.org import REFERENCE_TIME, Org

PUBLIC_GROUPS = ("http://acs.amazonaws.com/groups/global/AllUsers",
                 "http://acs.amazonaws.com/groups/global/AuthenticatedUsers")
ClientFactory = Callable[..., Any]


def _code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def _optional(call: Callable[..., dict], bucket: str, missing_code: str) -> dict | None:
    """A per-bucket setting, or None when S3 answers the documented 'not configured' error."""
    try:
        return call(Bucket=bucket)
    except ClientError as exc:
        if _code(exc) == missing_code:
            return None
        raise


def _credential_report(iam: Any) -> dict[str, dict[str, str]]:
    for _ in range(50):
        if iam.generate_credential_report()["State"] == "COMPLETE":
            break
        time.sleep(0.1)
    else:
        raise AssertionError("credential report never completed")
    report = iam.get_credential_report()
    assert report["ReportFormat"] == "text/csv"
    rows = list(csv.DictReader(io.StringIO(report["Content"].decode("utf-8"))))
    # real IAM puts the root user first as <root_account>; moto has no such row (a known gap)
    return {r["user"]: r for r in rows if r["user"] != "<root_account>"}


def _allows_everything(document: dict) -> bool:
    statements = document["Statement"]
    for s in statements if isinstance(statements, list) else [statements]:
        actions = s.get("Action", [])
        resources = s.get("Resource", [])
        actions = [actions] if isinstance(actions, str) else actions
        resources = [resources] if isinstance(resources, str) else resources
        if s.get("Effect") == "Allow" and "*" in actions and "*" in resources and "Condition" not in s:
            return True
    return False


def read_back(client: ClientFactory, org: Org, truth) -> dict[str, Any]:
    """Counts and problems as an auditor would derive them from IAM and S3."""
    iam = client("iam", "us-east-1")
    account = client("sts").get_caller_identity()["Account"]
    details: dict[str, list] = {"UserDetailList": [], "GroupDetailList": [], "RoleDetailList": [], "Policies": []}
    for page in iam.get_paginator("get_account_authorization_details").paginate(
            Filter=["User", "Group", "Role", "LocalManagedPolicy"]):
        for k, items in details.items():
            items.extend(page.get(k, []))
    users = {u["UserName"]: u for u in details["UserDetailList"]}
    local_docs = {p["Arn"]: next(v["Document"] for v in p["PolicyVersionList"] if v["IsDefaultVersion"])
                  for p in details["Policies"]}

    def document(arn: str) -> dict:
        if arn in local_docs:
            return local_docs[arn]
        policy = iam.get_policy(PolicyArn=arn)["Policy"]  # an AWS-managed policy, fetched when attached
        return iam.get_policy_version(PolicyArn=arn, VersionId=policy["DefaultVersionId"])["PolicyVersion"]["Document"]

    admin_groups = {g["GroupName"]: a["PolicyArn"] for g in details["GroupDetailList"]
                    for a in g["AttachedManagedPolicies"] if _allows_everything(document(a["PolicyArn"]))}
    report = _credential_report(iam)
    assert set(report) == set(users)
    assigned = {d["User"]["UserName"] for d in iam.list_virtual_mfa_devices(AssignmentStatus="Assigned")["VirtualMFADevices"]}

    c: Counter[str] = Counter()
    problems: list[tuple[str, str, str]] = []
    facts: dict[str, dict] = {}
    ref = REFERENCE_TIME.date()
    for name, u in users.items():
        tags = {t["Key"]: t["Value"] for t in u.get("Tags", [])}
        row = report[name]
        mfa_devices = iam.list_mfa_devices(UserName=name)["MFADevices"]
        console = row["password_enabled"] == "true"
        mfa = row["mfa_active"] == "true"
        assert mfa == bool(mfa_devices) == (name in assigned)
        if console:
            assert iam.get_login_profile(UserName=name)["LoginProfile"]["UserName"] == name
        else:
            with pytest.raises(ClientError) as exc:
                iam.get_login_profile(UserName=name)
            assert _code(exc.value) == "NoSuchEntity"
        keys = iam.list_access_keys(UserName=name)["AccessKeyMetadata"]
        used = ["LastUsedDate" in iam.get_access_key_last_used(AccessKeyId=k["AccessKeyId"])["AccessKeyLastUsed"]
                for k in keys]
        facts[name] = {"console": console, "mfa": mfa, "groups": sorted(u["GroupList"]), "tags": tags,
                       "keys": [(k["Status"], was_used) for k, was_used in zip(keys, used)]}
        c["iam_users"] += 1
        c["iam_users_console"] += console
        c["iam_users_mfa"] += mfa
        c["iam_access_keys"] += len(keys)
        c["iam_access_keys_active"] += sum(k["Status"] == "Active" for k in keys)
        c["iam_access_keys_used"] += sum(used)
        c["iam_group_memberships"] += len(u["GroupList"])
        c["iam_user_inline_policies"] += len(u["UserPolicyList"])

        arn = u["Arn"]
        active = console or any(k["Status"] == "Active" for k in keys)
        person = org.person_by_email(tags["Email"])
        if tags["Status"] == "leaver" and active:
            problems.append(("iam_leaver_active", arn, "iam"))
        if tags["Status"] == "contractor" and person.end and person.end < ref and active:
            problems.append(("iam_contractor_after_contract_end", arn, "iam"))
        if console and not mfa:
            problems.append(("iam_console_user_without_mfa", arn, "iam"))
        elif active and not mfa:
            problems.append(("iam_user_without_mfa", arn, "iam"))
        for group in u["GroupList"]:
            if group in admin_groups:
                problems.append(("iam_admin", arn, "iam"))
        for inline in u["UserPolicyList"]:
            if _allows_everything(inline["PolicyDocument"]):
                problems.append(("iam_admin", arn, "iam"))
        # key ages cannot be set in moto: the intended ones come from the truth, in creation order
        intended = truth.users[name]["keys"]
        assert len(intended) == len(keys)
        for k, was_used, plan in zip(keys, used, intended):
            if k["Status"] != "Active":
                continue
            if plan["age_days"] > OLD_KEY_DAYS:
                problems.append(("iam_old_access_key", arn, "iam"))
            if not was_used and plan["age_days"] >= UNUSED_KEY_DAYS:
                problems.append(("iam_unused_access_key", arn, "iam"))

    pw = iam.get_account_password_policy()["PasswordPolicy"]
    if pw["MinimumPasswordLength"] < STRONG_PASSWORD_LENGTH or not pw["RequireSymbols"]:
        problems.append(("iam_weak_password_policy", f"arn:aws:iam::{account}:root", "iam"))
    partners = {p.aws_account_id: p for p in org.partners if p.aws_account_id}
    for role in details["RoleDetailList"]:
        for s in role["AssumeRolePolicyDocument"]["Statement"]:
            principal = s.get("Principal", {}).get("AWS")
            if not principal:
                continue
            trusted = principal.split(":")[4]
            if trusted in (account, MANAGEMENT_ACCOUNT_ID):
                continue
            kind = "iam_cross_account_trust" if trusted in partners else "iam_cross_account_trust_unknown"
            problems.append((kind, principal, role["Arn"]))
    c["iam_groups"] = len(details["GroupDetailList"])
    c["iam_roles"] = len(details["RoleDetailList"])
    c["iam_role_inline_policies"] = sum(len(r["RolePolicyList"]) for r in details["RoleDetailList"])
    c["iam_customer_managed_policies"] = len(details["Policies"])
    c["iam_virtual_mfa_devices"] = len(iam.list_virtual_mfa_devices()["VirtualMFADevices"])

    # S3: list_buckets without MaxBuckets (moto truncates silently with it); region per bucket
    buckets: dict[str, dict] = {}
    for b in client("s3", "us-east-1").list_buckets()["Buckets"]:
        region = client("s3", "us-east-1").get_bucket_location(Bucket=b["Name"])["LocationConstraint"] or "us-east-1"
        s3 = client("s3", region)
        name = b["Name"]
        policy = _optional(s3.get_bucket_policy, name, "NoSuchBucketPolicy")
        pab = _optional(s3.get_public_access_block, name, "NoSuchPublicAccessBlockConfiguration")
        ownership = _optional(s3.get_bucket_ownership_controls, name, "OwnershipControlsNotFoundError")
        acl = s3.get_bucket_acl(Bucket=name)
        status = s3.get_bucket_policy_status(Bucket=name)["PolicyStatus"] if policy else {}
        document = json.loads(policy["Policy"]) if policy else None
        public_policy = bool(document) and any(
            s["Effect"] == "Allow" and s.get("Principal") in ("*", {"AWS": "*"}) and "Condition" not in s
            for s in document["Statement"])
        if "IsPublic" in status:  # moto 5.2.1 answers {} (not implemented); real S3 and newer moto answer
            assert status["IsPublic"] == public_policy, name
        public_acl = any(g["Grantee"].get("URI") in PUBLIC_GROUPS for g in acl["Grants"])
        others = [g["Grantee"]["ID"] for g in acl["Grants"]
                  if g["Grantee"]["Type"] == "CanonicalUser" and g["Grantee"]["ID"] != acl["Owner"]["ID"]]
        buckets[name] = {
            "region": region, "policy": document, "public": public_policy or public_acl,
            "public_access_block": pab is not None and all(pab["PublicAccessBlockConfiguration"].values()),
            "ownership": ownership["OwnershipControls"]["Rules"][0]["ObjectOwnership"] if ownership else None,
            "grant_read_to": others[0] if others else None,
        }
        c["s3_buckets"] += 1
        c[f"s3_buckets.{region}"] += 1
        arn = f"arn:aws:s3:::{name}"
        if public_policy:
            problems.append(("s3_public_policy", "anyone", arn))
        if public_acl:
            problems.append(("s3_public_acl", "anyone", arn))
        for grantee in others:
            problems.append(("s3_cross_account_acl", grantee, arn))
        if pab is None:
            problems.append(("s3_missing_public_access_block", name, arn))
    account_pab = client("s3control").get_public_access_block(AccountId=account)["PublicAccessBlockConfiguration"]
    if not all(account_pab.values()):
        problems.append(("s3_account_public_access_block_partial", account, "s3control"))
    return {"account": account, "counts": dict(sorted(c.items())), "problems": sorted(problems),
            "users": facts, "buckets": buckets, "account_pab": account_pab, "password_policy": pw}


def _triples(truth) -> list[tuple[str, str, str]]:
    return sorted((p["kind"], p["subject"], p["where"]) for p in truth.problems)


def check_against_truth(seen: dict, truth) -> None:
    assert seen["account"] == truth.account_id
    assert seen["counts"] == truth.counts
    assert seen["problems"] == _triples(truth)
    for name, u in truth.users.items():
        got = seen["users"][name]
        assert (got["console"], got["mfa"], got["groups"], got["tags"]) == (u["console"], u["mfa"], u["groups"], u["tags"]), name
        assert got["keys"] == [(k["status"], k["used"]) for k in u["keys"]], name
    for name, b in truth.buckets.items():
        got = seen["buckets"][name]
        assert (got["region"], got["policy"], got["public"], got["public_access_block"], got["ownership"], got["grant_read_to"]) == (
            b["region"], b["policy"], b["public"], b["public_access_block"], b["ownership"], b["grant_read_to"]), name
    assert seen["account_pab"] == truth.account_public_access_block
    for k, v in truth.password_policy.items():
        assert seen["password_policy"][k] == v


# -- in-process ------------------------------------------------------------------------------


class TestInProcess:
    """One seeded in-process sandbox for the class (torn down before the server test runs)."""

    @pytest.fixture(scope="class")
    def org(self):
        return Org(users="small")

    @pytest.fixture(scope="class")
    def sandbox(self, org):
        with aws_sandbox(org) as sb:
            yield sb

    def test_truth_is_deterministic_and_what_seed_returns(self, org, sandbox):
        assert sandbox.truth == aws_truth(org) == aws_truth(Org(users="small"))
        assert sandbox.truth.account_id == "123456789012"  # moto's default account
        assert aws_truth(Org(seed=2, users="small")).users != sandbox.truth.users

    def test_every_planted_kind_at_small(self, sandbox):
        kinds = set(sandbox.truth.problem_counts)
        assert kinds == {
            "iam_admin", "iam_console_user_without_mfa", "iam_user_without_mfa", "iam_leaver_active",
            "iam_contractor_after_contract_end", "iam_old_access_key", "iam_unused_access_key",
            "iam_weak_password_policy", "iam_cross_account_trust", "iam_cross_account_trust_unknown",
            "s3_public_policy", "s3_public_acl", "s3_cross_account_acl", "s3_missing_public_access_block",
            "s3_account_public_access_block_partial",
        }
        trust = [p for p in sandbox.truth.problems if p["kind"] == "iam_cross_account_trust"]
        assert trust[0]["subject"] == "arn:aws:iam::444455556666:root" and "vendor" in trust[0]["detail"]
        admins = {p["subject"].rsplit("/", 1)[1]: p["detail"] for p in sandbox.truth.problems if p["kind"] == "iam_admin"}
        assert any("inline policy" in d for d in admins.values())

    def test_read_back_matches_truth(self, org, sandbox):
        check_against_truth(read_back(sandbox.client, org, sandbox.truth), sandbox.truth)

    def test_documented_shapes(self, sandbox):
        iam, s3 = sandbox.client("iam", "us-east-1"), sandbox.client("s3")
        truth = sandbox.truth
        name = next(n for n, u in truth.users.items() if u["mfa"])
        device = iam.list_mfa_devices(UserName=name)["MFADevices"][0]
        assert device["SerialNumber"] == f"arn:aws:iam::{truth.account_id}:mfa/{name}"
        assert {"UserName", "SerialNumber", "EnableDate"} <= set(device)
        row = next(iter(_credential_report(iam).values()))
        assert list(row)[:8] == ["user", "arn", "user_creation_time", "password_enabled", "password_last_used",
                                 "password_last_changed", "password_next_rotation", "mfa_active"]
        summary = iam.get_account_summary()["SummaryMap"]
        assert summary["Users"] == truth.counts["iam_users"] and summary["Groups"] == 3
        vault = next(n for n, b in truth.buckets.items() if b["object_lock"])
        lock = s3.get_object_lock_configuration(Bucket=vault)["ObjectLockConfiguration"]
        assert lock["ObjectLockEnabled"] == "Enabled" and lock["Rule"]["DefaultRetention"]["Mode"] == "COMPLIANCE"
        assert s3.get_bucket_versioning(Bucket=vault)["Status"] == "Enabled"
        private = next(n for n, b in truth.buckets.items() if b["kind"] == "private" and b["ownership"] is None)
        for call, code in ((s3.get_bucket_policy, "NoSuchBucketPolicy"),
                           (s3.get_bucket_ownership_controls, "OwnershipControlsNotFoundError")):
            with pytest.raises(ClientError) as exc:
                call(Bucket=private)
            assert _code(exc.value) == code
        public = next(n for n, b in truth.buckets.items() if b["kind"] == "public_policy")
        with pytest.raises(ClientError) as exc:
            sandbox.client("s3", "ap-northeast-1").get_public_access_block(Bucket=public)
        assert _code(exc.value) == "NoSuchPublicAccessBlockConfiguration"

    def test_object_lock_vault(self, sandbox):
        truth = sandbox.truth
        vault = next(n for n, b in truth.buckets.items() if b["object_lock"])
        s3 = sandbox.client("s3", truth.buckets[vault]["region"])
        body = b"bag-manifest sha256 ..."
        digest = base64.b64encode(hashlib.sha256(body).digest()).decode()
        until = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
        put = s3.put_object(Bucket=vault, Key="bags/2026-11-01/manifest.txt", Body=body, ChecksumAlgorithm="SHA256",
                            ChecksumSHA256=digest, ObjectLockMode="COMPLIANCE", ObjectLockRetainUntilDate=until)
        assert put["ChecksumSHA256"] == digest
        version = put["VersionId"]
        # GetObjectRetention is not implemented in moto 5.2.1 (it answers the object itself);
        # HeadObject carries the same retention, as x-amz-object-lock-* headers
        head = s3.head_object(Bucket=vault, Key="bags/2026-11-01/manifest.txt", VersionId=version, ChecksumMode="ENABLED")
        assert head["ObjectLockMode"] == "COMPLIANCE"
        assert head["ObjectLockRetainUntilDate"] == until
        assert head["ChecksumSHA256"] == digest
        with pytest.raises(ClientError) as exc:
            s3.delete_object(Bucket=vault, Key="bags/2026-11-01/manifest.txt", VersionId=version)
        assert _code(exc.value) == "AccessDenied"
        with pytest.raises(ClientError):
            s3.delete_object(Bucket=vault, Key="bags/2026-11-01/manifest.txt", VersionId=version,
                             BypassGovernanceRetention=True)  # COMPLIANCE: no bypass
        assert s3.get_object(Bucket=vault, Key="bags/2026-11-01/manifest.txt", VersionId=version)["Body"].read() == body

    def test_environment_is_fake_inside_and_restored_after(self, sandbox):
        assert os.environ["AWS_ACCESS_KEY_ID"] == "testing"
        assert "AWS_ENDPOINT_URL" not in os.environ and "AWS_PROFILE" not in os.environ


def test_environment_restored(monkeypatch):
    monkeypatch.setenv("AWS_PROFILE", "someone-elses")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    with aws_sandbox(Org(users=10)) as sb:
        assert "AWS_PROFILE" not in os.environ
        assert sb.truth.counts["iam_users"] == len(sb.truth.users)
    assert os.environ["AWS_PROFILE"] == "someone-elses"
    assert "AWS_ACCESS_KEY_ID" not in os.environ


def test_refuses_real_endpoints():
    session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
    for url in ("https://iam.amazonaws.com", "http://127.0.0.1:5000@iam.amazonaws.com", "http://127.0.0.1.nip.io:5000"):
        with pytest.raises(ValueError, match="only talks to 127.0.0.1"):
            seed_aws(Org(users=10), session=session, endpoint_url=url)
    with pytest.raises(RuntimeError):  # no endpoint and no mock_aws(): would reach AWS
        seed_aws(Org(users=10), session=session)


def test_totp_matches_rfc6238():
    # RFC 6238 appendix B, SHA-1 secret "12345678901234567890", T = 59 s -> 94287082 (8 digits)
    secret = base64.b32encode(b"12345678901234567890")
    assert totp(secret, 59 // 30) == "287082"


# -- ThreadedMotoServer (one test: slower) ------------------------------------------------------


def test_moto_server_end_to_end():
    org = Org(users="small")
    server, url = start_moto_server(org, load_aws_managed_policies=True)
    try:
        assert url.startswith("http://127.0.0.1:")
        truth = aws_truth(org, aws_managed_policies=True)
        session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="ap-northeast-1")
        config = Config(s3={"addressing_style": "path"}, retries={"mode": "standard", "max_attempts": 2})

        def client(service: str, region: str = "ap-northeast-1") -> Any:
            c = session.client(service, region_name=region, endpoint_url=url, config=config)
            if service == "s3control":  # it would call http://123456789012.127.0.0.1:PORT
                c.meta.events.register("before-sign.s3-control", strip_account_host_prefix)
            return c

        # real AWS-managed policies are attached, so only DeveloperAccess is customer-managed
        assert truth.customer_policies == {"DeveloperAccess": "arn:aws:iam::123456789012:policy/DeveloperAccess"}
        assert truth.roles["OrganizationAccountAccessRole"]["policies"] == ["arn:aws:iam::aws:policy/AdministratorAccess"]
        check_against_truth(read_back(client, org, truth), truth)
    finally:
        server.stop()

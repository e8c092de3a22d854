"""aws_iam against moto: records against the sandbox's AWS truth, the pagination loop proven with
botocore's Stubber (moto ignores MaxItems), throttling, refusals, the credential report's gaps,
assume-role accounts, and an end-to-end run against the sandbox's moto server.

Nothing here can reach AWS: in-process tests run inside ``moto.mock_aws()`` (``aws_sandbox``, which
also sets test-only credentials and empties ``~/.aws`` for the duration), the Stubber tests answer
every call themselves, and the end-to-end test talks to moto on 127.0.0.1 with credentials the
sandbox generates at start.

Access-key ages: moto records a key's creation as the moment it was created (IAM has no API to
backdate it), so the planted "old key" problems cannot be *observed*. The test checks what can be:
every key is recorded in creation order with its active flag, creation time (= when moto created
it) and last use (real: seeding signs a call with the "used" keys); then it derives the old / unused
problems from those records with the truth's *intended* creation date put in place of moto's, and
compares them with the truth.
"""

from __future__ import annotations

import gzip
import json
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from bags import record_bytes, record_lists, run_json
from conftest import write_config

pytest.importorskip("moto")

from aws_faults import inject  # noqa: E402
from botocore.stub import Stubber  # noqa: E402

from collector.config import load_config  # noqa: E402
from collector.runner import run_connector  # noqa: E402
from connectors._aws import AwsClients, document_level  # noqa: E402
from connectors.aws_iam import AwsIamConfig, AwsIamConnector  # noqa: E402
from connectors.base import Organization, RunContext  # noqa: E402
from evidence.model import Record  # noqa: E402
from sandbox.aws import OLD_KEY_DAYS, STRONG_PASSWORD_LENGTH, UNUSED_KEY_DAYS, aws_sandbox  # noqa: E402
from sandbox.org import REFERENCE_TIME, Org  # noqa: E402

IAM_KINDS = ("iam_",)


# -- helpers ----------------------------------------------------------------------------------------


def _toml_value(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(v)


def _toml(kind: str, cid: str, options: dict[str, Any]) -> str:
    return f'[[connector]]\nid = "{cid}"\ntype = "{kind}"\n' + "".join(f"{k} = {_toml_value(v)}\n" for k, v in options.items())


def _run(tmp_path: Path, options: dict[str, Any] | None = None, *, customize=None):
    """Collect through the runner in-process (inside mock_aws); no credential-report waits."""
    options = {"region": "ap-northeast-1", "internal_accounts": ["111122223333"], **(options or {})}
    cfg = load_config(write_config(tmp_path, connectors={"aws-iam.toml": _toml("aws_iam", "aws-iam", options)}))
    entry = cfg.connectors[0]
    sleeps: list[float] = []
    clients = AwsClients(entry.config, sleep=sleeps.append, customize=customize)
    out = run_connector(cfg, entry, clients=clients)
    return out, run_json(out), record_lists(out), sleeps


def iam_problems(records: dict[str, list[dict]], org: Org, truth) -> list[tuple[str, str, str]]:
    """The planted IAM problems as a reviewer would derive them from the records alone (plus the
    intended key ages moto cannot store)."""
    out: list[tuple[str, str, str]] = []
    ref = REFERENCE_TIME.date()
    principals = {p["id"]: p for p in records["principals"]}
    partners = {p.aws_account_id for p in org.partners if p.aws_account_id}
    for p in principals.values():
        if p["kind"] != "user" or ":user/" not in p["id"]:
            continue
        a = p["attributes"]
        status = a["tags"].get("Status")
        if status == "leaver" and p["enabled"]:
            out.append(("iam_leaver_active", p["id"], "iam"))
        person = org.person_by_email(p["email"])
        if status == "contractor" and person.end and person.end < ref and p["enabled"]:
            out.append(("iam_contractor_after_contract_end", p["id"], "iam"))
        if a["console_access"] and not p["mfa"]:
            out.append(("iam_console_user_without_mfa", p["id"], "iam"))
        elif p["enabled"] and not p["mfa"]:
            out.append(("iam_user_without_mfa", p["id"], "iam"))
        intended = truth.users[p["display_name"]]["keys"]
        assert len(intended) == len(a["access_keys"]), p["id"]
        for key, plan in zip(a["access_keys"], intended):
            if not key["active"]:
                continue
            age = (ref - datetime.fromisoformat(plan["created"]).date()).days  # moto's own "created" is today
            if age > OLD_KEY_DAYS:
                out.append(("iam_old_access_key", p["id"], "iam"))
            if key["last_used"] is None and age >= UNUSED_KEY_DAYS:
                out.append(("iam_unused_access_key", p["id"], "iam"))
    for g in records["grants"]:
        if g["principal_kind"] == "user" and ":user/" in g["principal_id"] and g["role"] == "admin":
            out.append(("iam_admin", g["principal_id"], "iam"))
        if g["attributes"].get("source") == "trust policy" and g["external"]:
            kind = "iam_cross_account_trust" if g["attributes"]["account_id"] in partners else "iam_cross_account_trust_unknown"
            out.append((kind, g["attributes"]["principal"], g["resource_id"]))
    (account,) = [r for r in records["resources"] if r["kind"] == "account"]
    pw = account["attributes"]["password_policy"]
    if pw["MinimumPasswordLength"] < STRONG_PASSWORD_LENGTH or not pw["RequireSymbols"]:
        out.append(("iam_weak_password_policy", f"arn:aws:iam::{account['name']}:root", "iam"))
    return sorted(out)


def check_iam_against_truth(records: dict[str, list[dict]], org: Org, truth) -> None:
    principals = {p["id"]: p for p in records["principals"]}
    users = {p["display_name"]: p for p in principals.values() if p["kind"] == "user" and ":user/" in p["id"]}
    c = truth.counts
    assert set(users) == set(truth.users)
    keys = [k for u in users.values() for k in u["attributes"]["access_keys"]]
    got = {
        "iam_users": len(users),
        "iam_users_console": sum(u["attributes"]["console_access"] for u in users.values()),
        "iam_users_mfa": sum(u["mfa"] for u in users.values()),
        "iam_access_keys": len(keys),
        "iam_access_keys_active": sum(k["active"] for k in keys),
        "iam_access_keys_used": sum(k["last_used"] is not None for k in keys),
        "iam_group_memberships": len(records["memberships"]),
        "iam_groups": sum(p["kind"] == "group" for p in principals.values()),
        "iam_roles": sum(p["kind"] == "role" for p in principals.values()),
        "iam_user_inline_policies": sum(g["attributes"].get("policy_type") == "inline" and g["via"] == "direct"
                                        and ":user/" in g["principal_id"] for g in records["grants"]),
        "iam_role_inline_policies": sum(g["attributes"].get("policy_type") == "inline" and g["principal_kind"] == "role"
                                        for g in records["grants"]),
        "iam_customer_managed_policies": sum(r["kind"] == "policy" and not r["attributes"]["aws_managed"]
                                             for r in records["resources"]),
    }
    assert got == {k: c[k] for k in got}
    for name, u in truth.users.items():
        rec = users[name]
        a = rec["attributes"]
        assert (a["console_access"], rec["mfa"], a["groups"], a["tags"]) == (u["console"], u["mfa"], u["groups"], u["tags"]), name
        assert [("Active" if k["active"] else "Inactive", k["last_used"] is not None) for k in a["access_keys"]] == [
            (k["status"], k["used"]) for k in u["keys"]], name
        assert rec["enabled"] == (u["console"] or any(k["status"] == "Active" for k in u["keys"])), name
        assert rec["admin"] == ("Admins" in u["groups"] or u["inline_admin"]), name
        assert rec["email"] == u["email"] and rec["external"] is False
        for k in a["access_keys"]:  # moto's creation time is "now": the intended age cannot be observed
            assert datetime.fromisoformat(k["created"].replace("Z", "+00:00")) > datetime.now(timezone.utc) - timedelta(days=1)
    for name, r in truth.roles.items():
        rec = principals[r["arn"]]
        assert sorted(p["arn"] for p in rec["attributes"]["policies"] if p["arn"]) == r["policies"]
    want = sorted((p["kind"], p["subject"], p["where"]) for p in truth.problems if p["kind"].startswith(IAM_KINDS))
    assert iam_problems(records, org, truth) == want
    # the root user: moto's credential report has no root row; recorded as a fact, MFA from the summary
    root = principals[f"arn:aws:iam::{truth.account_id}:root"]
    assert root["admin"] is True and root["attributes"]["credential_report_row"] is False
    assert root["attributes"]["mfa_source"] == "account summary (AccountMFAEnabled)" and root["mfa"] is False


# -- configuration -----------------------------------------------------------------------------------


def test_config_and_declarations(tmp_path):
    cfg = AwsIamConfig.model_validate({})
    assert (cfg.region, cfg.max_attempts, cfg.page_size, cfg.assume_roles, cfg.profile) == ("us-east-1", 10, 1000, (), None)
    for bad in ({"region": "tokyo"}, {"endpoint_url": "http://example.com"}, {"internal_accounts": ["12345"]},
                {"assume_roles": [{"role_arn": "arn:aws:iam::123:user/x"}]}, {"page_size": 1001},
                {"assume_roles": [{"role_arn": "arn:aws:iam::123456789012:role/a", "nope": 1}]}):
        with pytest.raises(ValueError):
            AwsIamConfig.model_validate(bad)
    ok = AwsIamConfig.model_validate({"assume_roles": [{"role_arn": "arn:aws:iam::123456789012:role/audit/shoseki",
                                                        "external_id": "x"}], "internal_accounts": ["111122223333"]})
    assert ok.assume_roles[0].account_id == "123456789012"
    perms = AwsIamConnector.permissions
    assert all(p.startswith(("iam:Get", "iam:List", "iam:Generate", "sts:AssumeRole")) for p in perms)
    # the example file, enabled as it is, loads
    example = (Path(__file__).resolve().parents[2] / "collector" / "templates" / "aws-iam.toml.example").read_text(encoding="utf-8")
    assert example == (Path(__file__).resolve().parents[2] / "config" / "connectors" / "aws-iam.toml.example").read_text(encoding="utf-8")
    loaded = load_config(write_config(tmp_path, connectors={"aws-iam.toml": example}))
    assert loaded.connectors[0].type == "aws_iam" and loaded.connectors[0].config.region == "ap-northeast-1"


def test_policy_levels():
    allow = lambda action, resource="*", **kw: {"Statement": [{"Effect": "Allow", "Action": action, "Resource": resource, **kw}]}  # noqa: E731
    assert document_level(allow("*")) == "admin"
    assert document_level(allow("*:*")) == "admin"
    assert document_level(allow("iam:*")) == "admin"
    assert document_level(allow("*", "arn:aws:s3:::b/*")) == "editor"
    assert document_level(allow("*", Condition={"Bool": {"aws:MultiFactorAuthPresent": "true"}})) == "editor"
    assert document_level(allow(["ec2:*", "s3:*"])) == "editor"
    assert document_level(allow(["s3:Get*", "ec2:Describe*", "cloudtrail:LookupEvents"])) == "viewer"
    assert document_level({"Statement": [{"Effect": "Allow", "NotAction": ["iam:*", "organizations:*"], "Resource": "*"}]}) == "editor"
    assert document_level({"Statement": [{"Effect": "Allow", "NotAction": "s3:DeleteBucket", "Resource": "*"}]}) == "admin"
    assert document_level({"Statement": {"Effect": "Deny", "Action": "*", "Resource": "*"}}) == "other"
    assert document_level(quote(json.dumps(allow("*")))) == "admin"  # IAM's URL-encoded form


# -- in-process moto ---------------------------------------------------------------------------------


class TestInProcess:
    """One seeded in-process moto for the class (torn down before the server test runs)."""

    @pytest.fixture(scope="class")
    def org(self):
        return Org(users="small")

    @pytest.fixture(scope="class")
    def sandbox(self, org):
        with aws_sandbox(org) as sb:
            yield sb

    def test_records_match_the_truth(self, org, sandbox, tmp_path):
        out, run, records, sleeps = _run(tmp_path)
        assert out.status == "complete", out.reasons
        check_iam_against_truth(records, org, sandbox.truth)
        assert run["identity"] == "arn:aws:sts::123456789012:user/moto"
        # the call plan: 1 STS + summary + password policy + report (generate until COMPLETE, get) + 2 detail passes
        assert run["calls"] == {"sts.GetCallerIdentity": 1, "iam.GetAccountSummary": 1, "iam.GetAccountPasswordPolicy": 1,
                                "iam.GenerateCredentialReport": run["calls"]["iam.GenerateCredentialReport"],
                                "iam.GetCredentialReport": 1, "iam.GetAccountAuthorizationDetails": 2}
        assert run["calls"]["iam.GenerateCredentialReport"] in (1, 2) and len(sleeps) == run["calls"]["iam.GenerateCredentialReport"] - 1
        assert run["notes"]["http_requests"] == sum(run["calls"].values())
        assert run["pages"] == run["calls"]  # every answer is a raw page
        report = run["notes"]["credential_report"]["123456789012"]
        assert report["available"] and report["root_row"] is False and report["rows"] == len(sandbox.truth.users)
        details = [s for s in run["sources"] if s["endpoint"] == "iam.GetAccountAuthorizationDetails"]
        assert [s["Filter"] for s in details] == [["Group", "LocalManagedPolicy"], ["User", "Role"]]
        assert all(s["MaxItems"] == 1000 for s in details)
        # grants: via group for members, direct for the group; the root user is admin; trusts on the roles
        grants = records["grants"]
        admins_group = "arn:aws:iam::123456789012:group/Admins"
        via = [g for g in grants if g["inherited_from"] == admins_group]
        assert via and all(g["via"] == "group" and g["role"] == "admin" and g["raw_role"] == "AdministratorAccess" for g in via)
        assert any(g["principal_id"] == admins_group and g["via"] == "direct" for g in grants)
        vendor = next(g for g in grants if g["principal_id"] == "aws-account:444455556666")
        assert vendor["resource_id"].endswith(":role/VendorDeployRole") and vendor["role"] == "editor"
        assert vendor["attributes"]["external_id_required"] is True and vendor["external"] is True
        mgmt = next(g for g in grants if g["principal_id"] == "aws-account:111122223333")
        assert mgmt["external"] is False and mgmt["role"] == "admin"  # listed in internal_accounts
        service = next(g for g in grants if g["principal_id"] == "aws-service:ec2.amazonaws.com")
        assert service["principal_kind"] == "service_account" and service["role"] == "viewer"
        # the same state gives the same records, byte for byte
        again, _, _, _ = _run(tmp_path / "again")
        assert record_bytes(again) == record_bytes(out)

    def test_pagination_is_followed_to_the_end(self, sandbox):
        """moto ignores MaxItems (everything arrives in one page), so the Marker loop is proven with Stubber."""
        cfg = AwsIamConfig.model_validate({"region": "ap-northeast-1", "page_size": 2})
        clients = AwsClients(cfg, sleep=lambda s: None)
        acct = "210987654321"
        sts, iam = Stubber(clients.client("base", "sts")), Stubber(clients.client("base", "iam"))
        when = datetime(2026, 10, 1, tzinfo=timezone.utc)
        sts.add_response("get_caller_identity", {"Account": acct, "Arn": f"arn:aws:iam::{acct}:user/auditor", "UserId": "AIDA" + "X" * 16})
        iam.add_response("get_account_summary", {"SummaryMap": {"Users": 3, "AccountMFAEnabled": 1}})
        iam.add_client_error("get_account_password_policy", "NoSuchEntity", http_status_code=404)
        iam.add_response("generate_credential_report", {"State": "STARTED"})
        iam.add_response("generate_credential_report", {"State": "INPROGRESS"})
        iam.add_response("generate_credential_report", {"State": "COMPLETE"})
        csv = ("user,arn,user_creation_time,password_enabled,password_last_used,password_last_changed,password_next_rotation,"
               "mfa_active,access_key_1_active,access_key_1_last_rotated,access_key_1_last_used_date,"
               "access_key_1_last_used_region,access_key_1_last_used_service,access_key_2_active,access_key_2_last_rotated,"
               "access_key_2_last_used_date,access_key_2_last_used_region,access_key_2_last_used_service,cert_1_active,"
               "cert_1_last_rotated,cert_2_active,cert_2_last_rotated\n"
               f"<root_account>,arn:aws:iam::{acct}:root,2020-01-01T00:00:00+00:00,not_supported,2026-09-01T00:00:00+00:00,"
               "not_supported,not_supported,true,false,N/A,N/A,N/A,N/A,false,N/A,N/A,N/A,N/A,false,N/A,false,N/A\n")
        for n in range(3):
            csv += (f"u{n},arn:aws:iam::{acct}:user/u{n},2025-01-01T00:00:00+00:00,true,2026-09-0{n + 1}T00:00:00+00:00,"
                    "2025-01-01T00:00:00+00:00,N/A,false,true,2025-02-01T00:00:00+00:00,N/A,N/A,N/A,"
                    "false,N/A,N/A,N/A,N/A,false,N/A,false,N/A\n")
        iam.add_response("get_credential_report", {"Content": csv.encode(), "ReportFormat": "text/csv", "GeneratedTime": when})
        admin = quote(json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))

        def group(name):
            return {"GroupName": name, "GroupId": f"AGPA{name:0>16}", "Arn": f"arn:aws:iam::{acct}:group/{name}", "Path": "/",
                    "CreateDate": when, "GroupPolicyList": [],
                    "AttachedManagedPolicies": [{"PolicyName": "Break", "PolicyArn": f"arn:aws:iam::{acct}:policy/Break"}]}

        def user(n, groups):
            return {"UserName": f"u{n}", "UserId": f"AIDA{n:016d}", "Arn": f"arn:aws:iam::{acct}:user/u{n}", "Path": "/",
                    "CreateDate": when, "GroupList": groups, "UserPolicyList": [], "AttachedManagedPolicies": [], "Tags": []}

        first = {"Filter": ["Group", "LocalManagedPolicy"], "MaxItems": 2}
        iam.add_response("get_account_authorization_details",
                         {"GroupDetailList": [group("A"), group("B")], "IsTruncated": True, "Marker": "p1-2"}, first)
        iam.add_response("get_account_authorization_details",
                         {"Policies": [{"PolicyName": "Break", "PolicyId": "ANPA" + "1" * 16, "Arn": f"arn:aws:iam::{acct}:policy/Break",
                                        "Path": "/", "DefaultVersionId": "v1", "AttachmentCount": 2, "IsAttachable": True,
                                        "CreateDate": when, "UpdateDate": when,
                                        "PolicyVersionList": [{"Document": admin, "VersionId": "v1", "IsDefaultVersion": True,
                                                               "CreateDate": when}]}],
                          "IsTruncated": False}, {**first, "Marker": "p1-2"})
        second = {"Filter": ["User", "Role"], "MaxItems": 2}
        iam.add_response("get_account_authorization_details",
                         {"UserDetailList": [user(0, ["A"]), user(1, [])], "IsTruncated": True, "Marker": "p2-2"}, second)
        iam.add_response("get_account_authorization_details",
                         {"UserDetailList": [user(2, ["B"])], "IsTruncated": True, "Marker": "p2-3"}, {**second, "Marker": "p2-2"})
        iam.add_response("get_account_authorization_details",
                         {"RoleDetailList": [{"RoleName": "r", "RoleId": "AROA" + "1" * 16, "Arn": f"arn:aws:iam::{acct}:role/r",
                                              "Path": "/", "CreateDate": when, "RolePolicyList": [], "AttachedManagedPolicies": [],
                                              "AssumeRolePolicyDocument": quote(json.dumps({"Statement": [
                                                  {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "sts:AssumeRole"}]}))}],
                          "IsTruncated": False}, {**second, "Marker": "p2-3"})
        ctx = RunContext(run_id="r", connector_id="c", started=datetime.now(timezone.utc),
                         organization=Organization("x", ("example.co.jp",)))
        with sts, iam:
            records = [r for r in AwsIamConnector(cfg, clients).snapshot(ctx) if isinstance(r, Record)]
            iam.assert_no_pending_responses()
        assert not ctx.errors and ctx.calls["iam.GetAccountAuthorizationDetails"] == 5
        assert ctx.pages["iam.GetAccountAuthorizationDetails"] == 5 and ctx.calls["iam.GenerateCredentialReport"] == 3
        users = {r.key: r.data for r in records if r.stream == "principals" and ":user/" in r.key}
        assert sorted(users) == [f"arn:aws:iam::{acct}:user/u{n}" for n in range(3)]
        assert [users[f"arn:aws:iam::{acct}:user/u{n}"]["admin"] for n in range(3)] == [True, False, True]
        assert sum(r.stream == "memberships" for r in records) == 2
        root = next(r.data for r in records if r.key == f"arn:aws:iam::{acct}:root" and r.stream == "principals")
        assert root["mfa"] is True and root["attributes"]["credential_report_row"] is True
        assert root["last_sign_in"] == "2026-09-01T00:00:00Z" and root["attributes"]["mfa_source"] == "credential report"
        public = next(r.data for r in records if r.stream == "grants" and r.data["principal_id"] == "anyone")
        assert public["link_scope"] == "anyone" and public["external"] is True  # a role anyone may assume
        assert ctx.notes["credential_report"][acct] == {"available": True, "generated": "2026-10-01T00:00:00Z", "rows": 4,
                                                        "root_row": True, "polls": 3}

    def test_throttling_is_retried_and_counted(self, sandbox, tmp_path):
        hook = inject("iam", "GetAccountAuthorizationDetails", "Throttling", 400, times=2)
        out, run, records, _ = _run(tmp_path, customize=hook)
        assert out.status == "complete", out.reasons
        assert hook.left["n"] == 0
        assert run["retries"] == {"iam.GetAccountAuthorizationDetails": 2}
        assert run["throttled"] == {"iam.GetAccountAuthorizationDetails": 2} and run["throttle_wait_s"] >= 0
        assert run["notes"]["http_requests"] == sum(run["calls"].values()) + 2
        check_iam_against_truth(records, Org(users="small"), sandbox.truth)

    def test_throttling_that_never_ends_fails_the_run(self, sandbox, tmp_path):
        hook = inject("iam", "GetAccountAuthorizationDetails", "Throttling", 400, times=100)
        out, run, records, _ = _run(tmp_path, {"max_attempts": 2}, customize=hook)
        assert out.status == "partial"  # the account resource and the root were recorded before
        assert any("gave up after 1 retries" in r and "Throttling" in r for r in out.reasons), out.reasons

    def test_credential_report_refused_makes_the_run_partial(self, sandbox, tmp_path):
        hook = inject("iam", "GetCredentialReport", "AccessDenied", 403, times=5,
                      message="User is not authorized to perform: iam:GetCredentialReport")
        out, run, records, _ = _run(tmp_path, customize=hook)
        assert out.status == "partial"
        (error,) = run["errors"]
        assert error["where"] == "account 123456789012 credential report"
        assert "iam:GetCredentialReport" in error["message"] and "unknown" in error["message"]
        users = [p for p in records["principals"] if ":user/" in p["id"]]
        assert len(users) == len(sandbox.truth.users) and all(u["mfa"] is None and u["enabled"] is None for u in users)
        assert sum(g["role"] == "admin" and ":user/" in g["principal_id"] for g in records["grants"]) > 0

    def test_a_user_missing_from_the_report_is_read_one_by_one(self, sandbox, tmp_path):
        truth = sandbox.truth
        name = next(n for n, u in truth.users.items() if u["mfa"] and u["keys"] and u["console"])

        def drop_row(parsed, **_):
            lines = parsed["Content"].decode().splitlines(keepends=True)
            parsed["Content"] = "".join(line for line in lines if not line.startswith(name + ",")).encode()

        def customize(client):
            if client.meta.service_model.service_name == "iam":
                client.meta.events.register("after-call.iam.GetCredentialReport", drop_row)

        out, run, records, _ = _run(tmp_path, customize=customize)
        assert out.status == "complete", out.reasons
        assert run["calls"]["iam.GetLoginProfile"] == run["calls"]["iam.ListMFADevices"] == 1
        assert run["calls"]["iam.GetAccessKeyLastUsed"] == len(truth.users[name]["keys"])
        user = next(p for p in records["principals"] if p["display_name"] == name)
        assert user["attributes"]["credentials_source"].startswith("per-user calls")
        check_iam_against_truth(records, Org(users="small"), truth)

    def test_check_explains_what_is_missing(self, sandbox, tmp_path):
        cfg = AwsIamConfig.model_validate({"region": "ap-northeast-1"})
        hook = inject("iam", "GetCredentialReport", "AccessDenied", 403, times=5)
        result = AwsIamConnector(cfg, AwsClients(cfg, customize=hook)).check()
        assert not result.ok
        bad = [i for i in result.items if not i.ok]
        assert [i.name for i in bad] == ["credential report (console, MFA, access keys) [123456789012]"]
        assert "SecurityAudit" in bad[0].detail and "iam:GetCredentialReport" in bad[0].detail
        missing = AwsIamConfig.model_validate({"region": "ap-northeast-1", "profile": "no-such-profile",
                                               "config_file": str(tmp_path / "none"), "credentials_file": str(tmp_path / "none")})
        result = AwsIamConnector(missing).check()
        assert [(i.name, i.ok) for i in result.items] == [("credentials", False)]
        assert "no-such-profile" in result.items[0].detail

    def test_a_named_profile_from_shoseki_own_credentials_file(self, sandbox, tmp_path, monkeypatch):
        import secrets

        monkeypatch.delenv("AWS_ACCESS_KEY_ID")  # only the file can authenticate
        monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
        creds = tmp_path / "aws-credentials"
        creds.write_text(f"[audit]\naws_access_key_id = AKIA{secrets.token_hex(8).upper()}\n"
                         f"aws_secret_access_key = {secrets.token_urlsafe(30)}\n")
        out, run, records, _ = _run(tmp_path / "run", {"profile": "audit", "credentials_file": str(creds),
                                                       "config_file": str(tmp_path / "none")})
        assert out.status == "complete", out.reasons
        assert run["connector"]["settings"]["profile"] == "audit"
        assert creds.read_text().split("aws_secret_access_key = ")[1].strip() not in json.dumps(run)

    def test_assume_role_accounts_one_refused(self, sandbox, tmp_path):
        good = "arn:aws:iam::123456789012:role/OrganizationAccountAccessRole"
        bad = "arn:aws:iam::123456789012:role/VendorDeployRole"
        hook = inject("sts", "AssumeRole", "AccessDenied", 403, times=5, match=quote(bad, safe=""),
                      message="not authorized to perform: sts:AssumeRole")
        out, run, records, _ = _run(tmp_path, {"assume_roles": [{"role_arn": good, "session_name": "audit"},
                                                                {"role_arn": bad}]}, customize=hook)
        assert out.status == "partial"
        (error,) = run["errors"]
        assert error["where"] == f"account {bad}" and "cannot assume the role" in error["message"]
        assert run["identity"] == "arn:aws:sts::123456789012:assumed-role/OrganizationAccountAccessRole/audit"
        assert sum(":user/" in p["id"] for p in records["principals"]) == len(sandbox.truth.users)


def test_aws_managed_policies_are_fetched_only_when_attached(tmp_path):
    org = Org(users="small")
    with aws_sandbox(org, load_aws_managed_policies=True) as sb:
        assert sb.truth.aws_managed_policies
        out, run, records, _ = _run(tmp_path)
    assert out.status == "complete", out.reasons
    attached = {"arn:aws:iam::aws:policy/AdministratorAccess", "arn:aws:iam::aws:policy/ReadOnlyAccess"}
    assert run["calls"]["iam.GetPolicy"] == run["calls"]["iam.GetPolicyVersion"] == len(attached)
    fetched = {r["id"] for r in records["resources"] if r["kind"] == "policy" and r["attributes"]["aws_managed"]}
    assert fetched == attached
    ro = next(r for r in records["resources"] if r["id"].endswith("/ReadOnlyAccess"))
    assert ro["attributes"]["document"] is None and "characters" in ro["attributes"]["document_omitted"]  # too big for a cell
    check_iam_against_truth(records, org, sb.truth)


# -- the sandbox's moto server, end to end (after the in-process tests: they share moto's state) ----------


def test_end_to_end_against_the_sandbox_server(tmp_path):
    from sandbox.env import SandboxEnv

    with SandboxEnv(tmp_path / "sandbox", google=False, microsoft=False) as env:
        main = env.write_config(tmp_path / "config", tmp_path / "vault")
        cfg = load_config(main)
        entry = next(e for e in cfg.connectors if e.type == "aws_iam")
        assert entry.id == "aws-iam" and entry.config.endpoint_url == env.endpoints["aws"]["endpoint_url"]
        check = AwsIamConnector(entry.config).check()
        assert check.ok, check.items
        out = run_connector(cfg, entry)  # the connector's own clients: adaptive retries, real polling
        assert out.status == "complete", out.reasons
        records, run = record_lists(out), run_json(out)
        from sandbox.aws import aws_truth

        truth = aws_truth(env.org)
        check_iam_against_truth(records, env.org, truth)
        assert run["notes"]["http_requests"] == sum(run["calls"].values()) + sum(run["retries"].values())
        again = run_connector(cfg, entry)
        assert again.status == "complete" and record_bytes(again) == record_bytes(out)
        # the generated secret key never reaches the vault
        secret = next(line.split("=", 1)[1].strip() for line in
                      (env.workdir / "credentials" / "aws-credentials").read_text().splitlines() if "secret" in line)
        for path in (tmp_path / "vault").rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert secret.encode() not in data and secret.encode() not in (gzip.decompress(data) if path.suffix == ".gz" else b"")
    assert Counter(p["kind"] for p in truth.problems)["iam_admin"] >= 2

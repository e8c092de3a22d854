"""aws_s3 against moto: records against the sandbox's AWS truth, the ListBuckets loop proven with
botocore's Stubber (moto truncates ``MaxBuckets`` silently), SlowDown retried, one refused bucket
making the run partial by name, and an end-to-end run against the sandbox's moto server.

Nothing here can reach AWS (see test_aws_iam.py). What moto cannot show: ``GetBucketPolicyStatus``
answers ``{}`` for every bucket (not implemented), so ``policy_status_is_public`` is ``null`` here and
is checked only with Stubber; ``ListBuckets`` has no ``BucketRegion`` (the connector falls back to
``GetBucketLocation``, one call more per bucket, which real S3 spares); ACLs are accepted on
``BucketOwnerEnforced`` buckets (real S3 refuses them: the records say what the API said).
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from bags import record_bytes, record_lists, run_json
from conftest import write_config

pytest.importorskip("moto")

from aws_faults import inject  # noqa: E402
from botocore.stub import Stubber  # noqa: E402

from collector.config import load_config  # noqa: E402
from collector.runner import run_connector  # noqa: E402
from connectors._aws import AwsClients, condition_scope  # noqa: E402
from connectors.aws_s3 import AwsS3Config, AwsS3Connector  # noqa: E402
from connectors.base import Organization, RunContext  # noqa: E402
from evidence.model import Record  # noqa: E402
from sandbox.aws import aws_sandbox, aws_truth  # noqa: E402
from sandbox.org import Org  # noqa: E402


def _toml(options: dict[str, Any]) -> str:
    return '[[connector]]\nid = "aws-s3"\ntype = "aws_s3"\n' + "".join(f"{k} = {json.dumps(v)}\n" for k, v in options.items())


def _run(tmp_path: Path, options: dict[str, Any] | None = None, *, customize=None):
    options = {"region": "ap-northeast-1", "internal_accounts": ["111122223333"], **(options or {})}
    cfg = load_config(write_config(tmp_path, connectors={"aws-s3.toml": _toml(options)}))
    entry = cfg.connectors[0]
    out = run_connector(cfg, entry, clients=AwsClients(entry.config, customize=customize))
    return out, run_json(out), record_lists(out)


def s3_problems(records: dict[str, list[dict]]) -> list[tuple[str, str, str]]:
    """The planted S3 problems as a reviewer would derive them from the records."""
    out = []
    for g in records["grants"]:
        a = g["attributes"]
        if g["link_scope"] == "anyone" and a["source"] == "bucket policy":
            out.append(("s3_public_policy", "anyone", g["resource_id"]))
        if g["link_scope"] == "anyone" and a["source"] == "bucket ACL":
            out.append(("s3_public_acl", "anyone", g["resource_id"]))
        if g["principal_id"].startswith("aws-canonical:") and g["external"]:
            out.append(("s3_cross_account_acl", a["canonical_id"], g["resource_id"]))
    for r in records["resources"]:
        if r["kind"] == "bucket" and r["attributes"]["public_access_block"] is None:
            out.append(("s3_missing_public_access_block", r["name"], r["id"]))
        if r["kind"] == "account" and not all(r["attributes"]["public_access_block"].values()):
            out.append(("s3_account_public_access_block_partial", r["name"], "s3control"))
    return sorted(out)


def check_s3_against_truth(records: dict[str, list[dict]], truth) -> None:
    buckets = {r["name"]: r for r in records["resources"] if r["kind"] == "bucket"}
    grants = defaultdict(list)
    for g in records["grants"]:
        grants[g["resource_id"]].append(g)
    assert set(buckets) == set(truth.buckets) and len(buckets) == truth.counts["s3_buckets"]
    for region in {b["region"] for b in truth.buckets.values()}:
        assert sum(b["attributes"]["region"] == region for b in buckets.values()) == truth.counts[f"s3_buckets.{region}"]
    for name, b in truth.buckets.items():
        rec = buckets[name]
        a = rec["attributes"]
        block = a["public_access_block"]
        others = [g["attributes"]["canonical_id"] for g in grants[rec["id"]] if g["principal_id"].startswith("aws-canonical:")]
        public = any(g["link_scope"] == "anyone" for g in grants[rec["id"]])
        assert (a["region"], a["policy"], public, block is not None and all(block.values()), a["object_ownership"],
                others[0] if others else None) == (b["region"], b["policy"], b["public"], b["public_access_block"],
                                                   b["ownership"], b["grant_read_to"]), name
        assert rec["shared"] == (public or bool(others)), name
        assert a["policy_present"] == (b["policy"] is not None) and a["unreadable"] == []
        assert a["acls_enabled"] == (b["ownership"] != "BucketOwnerEnforced")
        # the owner's FULL_CONTROL is a grant to the account itself
        assert any(g["principal_id"] == f"aws-account:{truth.account_id}" and g["role"] == "owner" for g in grants[rec["id"]])
    (account,) = [r for r in records["resources"] if r["kind"] == "account"]
    assert account["attributes"]["public_access_block"] == truth.account_public_access_block
    want = sorted((p["kind"], p["subject"], p["where"]) for p in truth.problems if p["kind"].startswith("s3_"))
    assert s3_problems(records) == want


# -- configuration and policy parsing ----------------------------------------------------------------


def test_config_and_declarations(tmp_path):
    cfg = AwsS3Config.model_validate({})
    assert (cfg.workers, cfg.page_size, cfg.max_attempts) == (8, 1000, 10)
    for bad in ({"workers": 0}, {"page_size": 0}, {"region": "Tokyo"}, {"unknown": 1}):
        with pytest.raises(ValueError):
            AwsS3Config.model_validate(bad)
    assert set(AwsS3Connector.streams) == {"principals", "resources", "grants"}
    assert all(p.startswith(("s3:Get", "s3:List", "sts:AssumeRole")) for p in AwsS3Connector.permissions)
    root = Path(__file__).resolve().parents[2]
    example = (root / "collector" / "templates" / "aws-s3.toml.example").read_text(encoding="utf-8")
    assert example == (root / "config" / "connectors" / "aws-s3.toml.example").read_text(encoding="utf-8")
    loaded = load_config(write_config(tmp_path, connectors={"aws-s3.toml": example}))
    assert loaded.connectors[0].type == "aws_s3"


def test_conditions_that_keep_a_star_principal_from_being_anyone():
    assert condition_scope(None) == ("anyone", [])
    assert condition_scope({"Bool": {"aws:SecureTransport": "true"}}) == ("anyone", [])
    assert condition_scope({"StringEquals": {"aws:PrincipalOrgID": "o-1"}}) == ("organization", ["aws:PrincipalOrgID"])
    assert condition_scope({"IpAddress": {"aws:SourceIp": ["203.0.113.0/24"]}}) == ("specific", ["aws:SourceIp"])
    assert condition_scope({"IpAddress": {"aws:SourceIp": "0.0.0.0/0"}}) == ("anyone", [])
    assert condition_scope({"StringNotEquals": {"aws:PrincipalAccount": "111122223333"}}) == ("anyone", [])
    assert condition_scope({"StringEqualsIfExists": {"aws:SourceVpce": "vpce-1"}}) == ("anyone", [])


# -- in-process moto -----------------------------------------------------------------------------------


class TestInProcess:
    @pytest.fixture(scope="class")
    def sandbox(self):
        with aws_sandbox(Org(users="small")) as sb:
            yield sb

    def test_records_match_the_truth(self, sandbox, tmp_path):
        out, run, records = _run(tmp_path)
        assert out.status == "complete", out.reasons
        check_s3_against_truth(records, sandbox.truth)
        n = sandbox.truth.counts["s3_buckets"]
        with_policy = sum(b["policy"] is not None for b in sandbox.truth.buckets.values())
        assert run["calls"] == {
            "sts.GetCallerIdentity": 1, "s3control.GetPublicAccessBlock": 1, "s3.ListBuckets": 1,
            "s3.GetBucketLocation": n,  # moto's ListBuckets has no BucketRegion
            "s3.GetBucketPolicy": n, "s3.GetBucketPolicyStatus": with_policy, "s3.GetBucketAcl": n,
            "s3.GetPublicAccessBlock": n, "s3.GetBucketOwnershipControls": n,
        }
        assert run["notes"]["http_requests"] == sum(run["calls"].values()) and run["pages"] == run["calls"]
        assert run["notes"]["s3"] == {"buckets": n, "regions_from_listing": 0, "regions_from_get_bucket_location": n}
        listing = next(s for s in run["sources"] if s["endpoint"] == "s3.ListBuckets")
        assert listing["MaxBuckets"] == 1000
        # the per-bucket reads went to a client in the bucket's region
        pages = [json.loads(line) for line in gzip.decompress(
            (out.bag.path / "data" / "raw" / "s3.GetBucketAcl.jsonl.gz").read_bytes()).splitlines()]
        assert {p["params"]["Bucket"]: p["params"]["region"] for p in pages} == {
            n: b["region"] for n, b in sandbox.truth.buckets.items()}
        public = next(g for g in records["grants"] if g["grant_id"] == "policy:PublicRead")
        assert (public["principal_id"], public["link_scope"], public["raw_role"], public["role"]) == (
            "anyone", "anyone", "s3:GetObject", "viewer")
        conditional = [g for g in records["grants"] if g["grant_id"] in ("policy:OfficeRead", "policy:OrgWrite")]
        assert sorted(g["link_scope"] for g in conditional) == ["organization", "specific"]
        principals = {p["id"] for p in records["principals"]}
        assert {"anyone", f"aws-account:{sandbox.truth.account_id}"} <= principals
        again, _, _ = _run(tmp_path / "again", {"workers": 1})
        assert record_bytes(again) == record_bytes(out)  # order and bytes do not depend on the threads

    def test_bucket_listing_is_followed_to_the_end(self, sandbox):
        """moto drops buckets past MaxBuckets without a ContinuationToken, so the loop is proven with Stubber."""
        cfg = AwsS3Config.model_validate({"region": "ap-northeast-1", "page_size": 2, "workers": 1})
        clients = AwsClients(cfg)
        acct, home = "210987654321", "ap-northeast-1"
        sts, s3c, s3 = (Stubber(clients.client("base", s)) for s in ("sts", "s3control", "s3"))
        sts.add_response("get_caller_identity", {"Account": acct, "Arn": f"arn:aws:iam::{acct}:user/auditor",
                                                 "UserId": "AIDA" + "X" * 16})
        s3c.add_client_error("get_public_access_block", "NoSuchPublicAccessBlockConfiguration", http_status_code=404,
                             expected_params={"AccountId": acct})
        owner = {"ID": "a" * 64, "DisplayName": "owner"}
        when = datetime(2026, 1, 1, tzinfo=timezone.utc)

        def bucket(name):
            return {"Name": name, "CreationDate": when, "BucketRegion": home}

        def acl(*extra):
            return {"Owner": owner, "Grants": [{"Grantee": {**owner, "Type": "CanonicalUser"}, "Permission": "FULL_CONTROL"},
                                               *extra]}

        s3.add_response("list_buckets", {"Buckets": [bucket("b-one"), bucket("b-two")], "Owner": owner,
                                         "ContinuationToken": "t-2"}, {"MaxBuckets": 2})
        public = json.dumps({"Statement": [{"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": ["s3:GetObject"],
                                            "Resource": "arn:aws:s3:::b-one/*"},
                                           {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::444455556666:root"},
                                            "Action": "s3:*", "Resource": "arn:aws:s3:::b-one"}]})
        s3.add_response("get_bucket_policy", {"Policy": public}, {"Bucket": "b-one"})
        s3.add_response("get_bucket_policy_status", {"PolicyStatus": {"IsPublic": True}}, {"Bucket": "b-one"})
        s3.add_response("get_bucket_acl", acl(), {"Bucket": "b-one"})
        s3.add_client_error("get_public_access_block", "NoSuchPublicAccessBlockConfiguration", http_status_code=404)
        s3.add_client_error("get_bucket_ownership_controls", "OwnershipControlsNotFoundError", http_status_code=404)
        s3.add_client_error("get_bucket_policy", "NoSuchBucketPolicy", http_status_code=404, expected_params={"Bucket": "b-two"})
        s3.add_response("get_bucket_acl", acl({"Grantee": {"Type": "Group", "URI": "http://acs.amazonaws.com/groups/global/AuthenticatedUsers"},
                                               "Permission": "READ"}), {"Bucket": "b-two"})
        s3.add_response("get_public_access_block", {"PublicAccessBlockConfiguration": {
            "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}})
        s3.add_response("get_bucket_ownership_controls", {"OwnershipControls": {"Rules": [{"ObjectOwnership": "ObjectWriter"}]}})
        s3.add_response("list_buckets", {"Buckets": [bucket("b-three")], "Owner": owner},
                        {"MaxBuckets": 2, "ContinuationToken": "t-2"})
        s3.add_client_error("get_bucket_policy", "NoSuchBucketPolicy", http_status_code=404, expected_params={"Bucket": "b-three"})
        s3.add_response("get_bucket_acl", acl(), {"Bucket": "b-three"})
        s3.add_client_error("get_public_access_block", "NoSuchPublicAccessBlockConfiguration", http_status_code=404)
        s3.add_response("get_bucket_ownership_controls", {"OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]}})
        ctx = RunContext(run_id="r", connector_id="c", started=datetime.now(timezone.utc),
                         organization=Organization("x", ("example.co.jp",)))
        with sts, s3c, s3:
            records = [r for r in AwsS3Connector(cfg, clients).snapshot(ctx) if isinstance(r, Record)]
            s3.assert_no_pending_responses()
        assert not ctx.errors and ctx.calls["s3.ListBuckets"] == 2 and "s3.GetBucketLocation" not in ctx.calls
        buckets = {r.data["name"]: r.data for r in records if r.stream == "resources" and r.data["kind"] == "bucket"}
        assert list(buckets) == ["b-one", "b-two", "b-three"]
        assert buckets["b-one"]["attributes"]["policy_status_is_public"] is True
        assert buckets["b-two"]["attributes"]["policy_status_is_public"] is None and buckets["b-two"]["shared"] is True
        assert buckets["b-three"]["shared"] is False and buckets["b-three"]["attributes"]["acls_enabled"] is False
        grants = [r.data for r in records if r.stream == "grants"]
        vendor = next(g for g in grants if g["principal_id"] == "aws-account:444455556666")
        assert vendor["role"] == "admin" and vendor["external"] is True and vendor["raw_role"] == "s3:*"
        any_account = next(g for g in grants if g["principal_id"] == "aws-authenticated-users")
        assert any_account["link_scope"] == "anyone" and any_account["resource_id"] == "arn:aws:s3:::b-two"
        (account,) = [r.data for r in records if r.stream == "resources" and r.data["kind"] == "account"]
        assert account["attributes"]["public_access_block"] is None and account["attributes"]["public_access_block_configured"] is False
        assert ctx.notes["s3"] == {"buckets": 3, "regions_from_listing": 3, "regions_from_get_bucket_location": 0}

    def test_slowdown_is_retried(self, sandbox, tmp_path):
        name = next(iter(sandbox.truth.buckets))
        hook = inject("s3", "GetBucketAcl", "SlowDown", 503, times=2, match=name)
        out, run, records = _run(tmp_path, customize=hook)
        assert out.status == "complete", out.reasons
        assert hook.left["n"] == 0
        assert run["retries"] == {"s3.GetBucketAcl": 2} and run["throttled"] == {"s3.GetBucketAcl": 2}
        assert run["notes"]["http_requests"] == sum(run["calls"].values()) + 2
        check_s3_against_truth(records, sandbox.truth)

    def test_a_refused_bucket_makes_the_run_partial_naming_it(self, sandbox, tmp_path):
        name = next(n for n, b in sandbox.truth.buckets.items() if b["kind"] == "public_policy")
        hook = inject("s3", "GetBucketPolicy", "AccessDenied", 403, times=10, match=name,
                      message="Access Denied")
        out, run, records = _run(tmp_path, customize=hook)
        assert out.status == "partial"
        (error,) = run["errors"]
        assert error["where"] == f"bucket {name}" and "s3:GetBucketPolicy" in error["message"]
        assert any(f"bucket {name}" in r for r in out.reasons)
        rec = next(r for r in records["resources"] if r["name"] == name)
        assert rec["attributes"]["unreadable"] == ["get_bucket_policy"] and rec["attributes"]["policy_present"] is None
        assert rec["attributes"]["public_access_block"] is None  # the rest of the bucket was read
        others = [r for r in records["resources"] if r["kind"] == "bucket" and r["name"] != name]
        assert len(others) == len(sandbox.truth.buckets) - 1 and all(r["attributes"]["unreadable"] == [] for r in others)

    def test_throttling_that_never_ends_on_one_bucket_is_reported_for_it(self, sandbox, tmp_path):
        name = next(n for n, b in sandbox.truth.buckets.items() if b["kind"] == "private")
        hook = inject("s3", "GetBucketOwnershipControls", "SlowDown", 503, times=100, match=name)
        out, run, records = _run(tmp_path, {"max_attempts": 2}, customize=hook)
        assert out.status == "partial"
        (error,) = run["errors"]
        assert error["where"] == f"bucket {name}" and "gave up after 1 retries" in error["message"]
        assert run["retries"]["s3.GetBucketOwnershipControls"] == 1

    def test_account_block_refused(self, sandbox, tmp_path):
        hook = inject("s3control", "GetPublicAccessBlock", "AccessDenied", 403, times=10)
        out, run, records = _run(tmp_path, customize=hook)
        assert out.status == "partial"
        assert run["errors"][0]["where"] == "account 123456789012 public access block"
        (account,) = [r for r in records["resources"] if r["kind"] == "account"]
        assert account["attributes"]["public_access_block_configured"] is None
        assert len([r for r in records["resources"] if r["kind"] == "bucket"]) == len(sandbox.truth.buckets)


# -- the sandbox's moto server, end to end --------------------------------------------------------------


def test_end_to_end_against_the_sandbox_server(tmp_path):
    from sandbox.env import SandboxEnv

    with SandboxEnv(tmp_path / "sandbox", google=False, microsoft=False) as env:
        cfg = load_config(env.write_config(tmp_path / "config", tmp_path / "vault"))
        entry = next(e for e in cfg.connectors if e.type == "aws_s3")
        check = AwsS3Connector(entry.config).check()
        assert check.ok, check.items
        out = run_connector(cfg, entry)
        assert out.status == "complete", out.reasons
        run = run_json(out)
        check_s3_against_truth(record_lists(out), aws_truth(env.org))
        assert run["notes"]["http_requests"] == sum(run["calls"].values()) + sum(run["retries"].values())
        again = run_connector(cfg, entry)
        assert again.status == "complete" and record_bytes(again) == record_bytes(out)

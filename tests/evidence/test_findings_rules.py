"""The rules one by one, over hand-made records (the sandbox acceptance test covers them together)."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone

import pytest
from conftest import files_connector, write_config

from collector.config import load_config
from collector.context import ApprovedException, Context, Contractor, Location, Person, RegisterEntry
from collector.runner import run_connector
from evidence.findings import JudgeError, JudgedBundle, Settings, select_bundles
from evidence.findings import rules as R
from evidence.findings.assess import _finish
from evidence.findings.model import Finding
from evidence.vault import Vault

AS_OF = datetime(2026, 11, 26, 3, 0, tzinfo=timezone.utc)
DRIVE = JudgedBundle("drive-1", "google_drive", 93600, bag="2026/2026-11/b", digest="d" * 64, status="complete")
IAM = JudgedBundle("iam-1", "aws_iam", 93600, bag="2026/2026-11/i", digest="e" * 64, status="complete")
DIR = JudgedBundle("dir-1", "google_directory", 93600, bag="2026/2026-11/g", digest="f" * 64, status="complete")

BPO = Contractor(name="BPO", domains=("bpo.example.net",), purpose="payroll", contract_end=date(2027, 3, 31),
                 responsible="boss@example.co.jp")
VENDOR = Contractor(name="Vendor", domains=("vendor.example.org",), purpose="dev", contract_end=date(2026, 9, 30),
                    responsible="boss@example.co.jp", aws_accounts=("444455556666",), aws_canonical_ids=("cd" * 32,))


def world(**context) -> R.World:
    ctx = Context(**{"contractors": (BPO, VENDOR), **context})
    return R.World(as_of=AS_OF, settings=Settings(), context=ctx, domains=("example.co.jp",))


def grant(principal, *, role="viewer", **extra):
    email = principal.split(":", 1)[1] if principal.startswith("user:") else None
    return {"resource_id": "file-1", "principal_id": principal, "principal_kind": extra.pop("kind", "user"),
            "principal_email": email, "role": role, "raw_role": role, "via": "direct", "link_scope": None,
            "expiry": None, "inherited_from": None, **extra}


def rules_of(g, w=None, source=DRIVE):
    return [(f.rule, f.severity) for f in R.grant_rules(R.Source(None, source), "k", g, w or world())]


def test_one_sharing_finding_per_grant_in_order_of_precedence():
    assert rules_of(grant("anyone", link_scope="anyone", kind="anyone")) == [("public_share", "high")]
    assert rules_of(grant("anyone", link_scope="anyone", kind="anyone", role="editor")) == [("public_share", "critical")]
    assert rules_of(grant("user:x@freemail.example.com")) == [("unapproved_domain", "high")]
    assert rules_of(grant("user:x@vendor.example.org")) == [("contractor_after_end", "high")]
    assert rules_of(grant("user:x@bpo.example.net")) == [("share_without_expiry", "medium")]
    assert rules_of(grant("user:x@sub.bpo.example.net", expiry="2027-01-01T00:00:00Z")) == []
    assert rules_of(grant("user:x@bpo.example.net", kind="guest", role="editor", expiry="2027-01-01T00:00:00Z")) == [
        ("guest_can_edit", "medium")]
    assert rules_of(grant("user:me@example.co.jp", role="editor")) == []
    assert rules_of(grant("domain:example.co.jp", kind="domain", via="link", link_scope="organization")) == []


def test_shares_are_judged_where_made_and_only_while_live():
    assert rules_of(grant("anyone", link_scope="anyone", kind="anyone", inherited_from="folder-1")) == []
    assert rules_of(grant("user:x@freemail.example.com", expiry="2026-11-25T00:00:00Z")) == []
    assert rules_of(grant("user:x@freemail.example.com", expiry="2026-11-27T00:00:00Z")) == [("unapproved_domain", "high")]
    # an anyone principal limited by a condition (S3: source IP, organisation id) is not public
    assert rules_of(grant("anyone", link_scope="specific", kind="anyone")) == []


def test_aws_principals_are_judged_by_account():
    own = grant("aws-account:111122223333", kind="domain", external=False)
    assert rules_of(own, source=IAM) == []
    assert rules_of(grant("aws-account:444455556666", kind="domain", external=True), source=IAM) == [("contractor_after_end", "high")]
    assert rules_of(grant("aws-account:999988887777", kind="domain", external=True), source=IAM) == [("unapproved_domain", "high")]
    assert rules_of(grant("aws-canonical:" + "ab" * 32, kind="domain", external=True)) == [("unapproved_domain", "high")]
    # a canonical id the contractor listed is that contractor: judged by its contract, like its account
    assert rules_of(grant("aws-canonical:" + "cd" * 32, kind="domain", external=True)) == [("contractor_after_end", "high")]
    current = world(contractors=(VENDOR.model_copy(update={"contract_end": date(2027, 3, 31)}),))
    assert rules_of(grant("aws-canonical:" + "cd" * 32, kind="domain", external=True), current) == [
        ("share_without_expiry", "medium")]
    assert rules_of(grant("aws-service:ec2.amazonaws.com", kind="service_account", external=None), source=IAM) == []


def account(**extra):
    p = {"id": "user:a@example.co.jp", "kind": "user", "email": "a@example.co.jp", "enabled": True, "external": False,
         "admin": False, "mfa": True, "roles": [], "last_sign_in": "2026-11-20T00:00:00Z",
         "created": "2024-01-01T00:00:00Z", "attributes": {}}
    p.update(extra)
    return p


def account_rules(p, w=None, source=DIR):
    return sorted(f.rule for f in R.account_rules(R.Source(None, source), "k", p, w or world()))


def test_accounts():
    assert account_rules(account()) == []
    assert account_rules(account(mfa=False)) == ["account_without_mfa"]
    assert account_rules(account(mfa=False, admin=True)) == ["admin_without_mfa"]
    assert account_rules(account(mfa=False, admin=True, enabled=False)) == []   # a disabled account is not judged
    assert account_rules(account(mfa=None)) == []                              # unknown is not a finding
    assert account_rules(account(last_sign_in="2026-08-01T00:00:00Z")) == ["inactive_account"]
    assert account_rules(account(last_sign_in=None)) == ["inactive_account"]
    # never signed in but created within the window: a new account, not an inactive one
    assert account_rules(account(last_sign_in=None, created="2026-11-01T00:00:00Z")) == []
    # external group members Google lists as principals are not accounts
    assert account_rules(account(mfa=False, enabled=None, attributes={"source": "group membership"})) == []


def test_accounts_against_the_roster():
    roster = (
        Person(emails=("a@example.co.jp",), name="A", status="leaver", end=date(2026, 10, 1)),
        Person(emails=("c@example.co.jp",), name="C", status="contractor", end=date(2026, 11, 1)),
    )
    w = world(roster=roster)
    assert account_rules(account(), w) == ["leaver_enabled"]
    assert account_rules(account(enabled=False), w) == []
    assert account_rules(account(id="user:c@example.co.jp", email="c@example.co.jp"), w) == ["contractor_after_end"]
    assert account_rules(account(id="user:z@example.co.jp", email="z@example.co.jp"), w) == ["not_on_roster"]
    assert account_rules(account(id="user:z@example.co.jp", email="z@example.co.jp")) == []  # no roster: not judged


def test_iam_users_are_active_with_a_password_or_a_key_and_judged_by_their_latest_use():
    iam = {"id": "arn:aws:iam::111122223333:user/k", "kind": "user", "email": "k@example.co.jp", "enabled": None,
           "external": False, "admin": False, "mfa": False, "created": "2025-01-01T00:00:00Z",
           "attributes": {"console_access": False, "password_last_used": None,
                          "access_keys": [{"active": True, "last_used": "2026-01-01T00:00:00Z"},
                                          {"active": False, "last_used": "2026-11-25T00:00:00Z"}]}}
    assert account_rules(iam, source=IAM) == ["account_without_mfa", "inactive_account"]
    iam["attributes"]["access_keys"][0]["active"] = False
    assert account_rules(iam, source=IAM) == []   # no password, no active key: cannot be used
    root = {"id": "arn:aws:iam::111122223333:root", "kind": "user", "enabled": None, "external": False, "admin": True,
            "mfa": False, "attributes": {}}
    assert account_rules(root, source=IAM) == ["admin_without_mfa"]


def test_guests():
    g = account(id="user:x@bpo.example.net", email="x@bpo.example.net", kind="guest", external=True,
                attributes={"sponsors": []}, last_sign_in=None, created="2025-01-01T00:00:00Z")
    src = JudgedBundle("entra-1", "entra_id", 93600, bag="b", digest="0" * 64, status="complete")
    assert account_rules(g, source=src) == ["guest_inactive", "guest_without_sponsor"]
    g.update(id="user:x@vendor.example.org", email="x@vendor.example.org", attributes={"sponsors": None},
             last_sign_in="2026-11-20T00:00:00Z")
    assert account_rules(g, source=src) == ["contractor_after_end"]
    g.update(id="user:x@freemail.example.com", email="x@freemail.example.com")
    assert account_rules(g, source=src) == ["unapproved_domain"]


def test_top_administrators_counted_per_source():
    w = world()
    src = R.Source(None, DIR)
    assert [f.rule for f in R.admin_count_rules(src, ("tenant", "t"), [("user:a", "a")], w)] == ["privileged_too_few"]
    five = [(f"user:{n}", n) for n in "abcde"]
    (f,) = R.admin_count_rules(src, ("tenant", "t"), five, w)
    assert f.rule == "privileged_too_many" and f.detail["count"] == 5 and len(f.evidence) == 6
    assert list(R.admin_count_rules(src, ("tenant", "t"), five[:3], w)) == []


def test_collection_completeness():
    missing = JudgedBundle("x", "aws_s3", 3600)
    assert [f.rule for f in R.collection_rules(missing)] == ["collection_missing"]
    failed = JudgedBundle("x", "aws_s3", 3600, bag="b", digest="0" * 64, status="failed", age_s=10)
    assert [f.rule for f in R.collection_rules(failed)] == ["collection_failed"]
    stale = JudgedBundle("x", "aws_s3", 3600, bag="b", digest="0" * 64, status="partial", age_s=7200, stale=True)
    assert [f.rule for f in R.collection_rules(stale)] == ["collection_partial", "collection_stale"]
    assert list(R.collection_rules(JudgedBundle("x", "aws_s3", 3600, bag="b", digest="0" * 64, status="complete"))) == []


def test_register_allows_groups_nested_groups_people_and_live_contractors():
    entry = RegisterEntry(name="HR", locations=(Location(connector="drive-1", resource_prefix="0AD1"),),
                          allowed=("group:hr@example.co.jp", "person:boss@example.co.jp", "contractor:bpo.example.net",
                                   "contractor:vendor.example.org"),
                          responsible="boss@example.co.jp")
    w = world(register=(entry,))
    w.group_members = R.group_index([("group:hr@example.co.jp", "group:payroll@example.co.jp"),
                                     ("group:payroll@example.co.jp", "user:p@example.co.jp")], ["group:hr@example.co.jp"])
    assert R.allowed(entry, "user:p@example.co.jp", None, w)             # via a nested group
    assert R.allowed(entry, "group:hr@example.co.jp", None, w)
    assert R.allowed(entry, "user:boss@example.co.jp", None, w)
    assert R.allowed(entry, "user:x@bpo.example.net", None, w)
    assert not R.allowed(entry, "user:x@vendor.example.org", None, w)    # the contract ended
    assert not R.allowed(entry, "anyone", None, w)
    assert not R.allowed(entry, "user:q@example.co.jp", None, w)
    local = RegisterEntry(name="payslips", locations=(Location(connector="files-1", resource_prefix="/srv/hr"),),
                          allowed=("principal:uid:1001", "principal:gid:2000"), responsible="boss@example.co.jp")
    assert R.allowed(local, "uid:1001", None, w) and R.allowed(local, "gid:2000", None, w)
    assert not R.allowed(local, "uid:1002", None, w) and not R.allowed(local, "anyone-local", None, w)
    assert R.location_matches(entry.locations[0], {"id": "df1", "attributes": {"drive_id": "0AD1"}})
    assert not R.location_matches(entry.locations[0], {"id": "df2", "attributes": {"drive_id": "0AD2"}})


def test_same_problem_from_several_records_is_one_finding_with_every_piece_of_evidence():
    a = next(R.grant_rules(R.Source(None, DRIVE), "k1", grant("anyone", link_scope="anyone", kind="anyone"), world()))
    b = next(R.grant_rules(R.Source(None, DRIVE), "k2", grant("anyone", link_scope="anyone", kind="anyone", role="editor"), world()))

    class Catalogue:
        def controls_for(self, rule):
            return ("iso27001:A.5.15",)

    exc = ApprovedException(rule="public_*", resource="file-*", reason="site", approved_by="boss@example.co.jp",
                            approved_on=date(2026, 1, 1), valid_until=date(2026, 12, 31))
    (f,) = _finish([a, b], Context(exceptions=(exc,)), Catalogue(), AS_OF)
    assert f.severity == "critical" and [e.key for e in f.evidence] == ["k1", "k2"]
    assert f.controls == ("iso27001:A.5.15",) and (f.status, f.exception) == ("excepted", 1)
    (g,) = _finish([a], Context(exceptions=(exc,)), Catalogue(), AS_OF + timedelta(days=40))
    assert (g.status, g.exception_until) == ("exception_expired", date(2026, 12, 31))
    assert isinstance(g, Finding) and g.id == a.id


def test_a_changed_bag_is_never_judged(tmp_path, small_tree):
    cfg = load_config(write_config(tmp_path, connectors={"files.toml": files_connector(small_tree)}))
    outcome = run_connector(cfg, cfg.connector("files-main"))
    vault = Vault(cfg.main.vault.path)
    now = datetime.now(timezone.utc) + timedelta(seconds=1)
    (b,) = select_bundles(vault, cfg.connectors, now)
    assert b.bag == outcome.bag.relpath and b.freshness == "ok"
    (before,) = select_bundles(vault, cfg.connectors, now - timedelta(days=1))
    assert before.bag is None and before.freshness == "missing"
    (stale,) = select_bundles(vault, cfg.connectors, now + timedelta(days=3))
    assert stale.freshness == "stale"
    run = outcome.bag.path / "data" / "run.json"  # a later collection time would hide staleness
    run.chmod(0o640)
    original = run.read_bytes()
    later = (now + timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    run.write_text(json.dumps({**json.loads(original), "finished_utc": later}), encoding="utf-8")
    with pytest.raises(JudgeError, match="data/run.json changed since it was sealed"):
        select_bundles(vault, cfg.connectors, now + timedelta(days=3))
    run.write_bytes(original)
    records = outcome.bag.path / "data" / "records" / "grants.jsonl.gz"
    records.chmod(0o640)
    records.write_bytes(records.read_bytes() + b"\x00")
    with pytest.raises(JudgeError, match="changed since it was sealed"):
        select_bundles(vault, cfg.connectors, now)

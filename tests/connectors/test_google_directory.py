"""google_directory against the Google stand-in: records against the organisation's truth, the
call plan (batching) from the stand-in's counters, and every fault the sandbox can inject."""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import pytest
from bags import record_bytes, record_lists, run_json
from conftest import write_config

from collector.config import load_config
from collector.runner import run_connector
from connectors._google import GoogleClients, group_pid, load_key_info, user_pid
from connectors.base import AuthenticationError, Organization, RunContext
from connectors.google_directory import TOKEN_SCOPES, GoogleDirectoryConfig, GoogleDirectoryConnector
from evidence.model import Record
from sandbox import google as google_sandbox
from sandbox.env import SandboxEnv
from sandbox.google.auth import DEFAULT_GRANTED_SCOPES
from sandbox.server import FaultRule
from sandbox.truth import counts, problems

SECURITY = TOKEN_SCOPES[0]


# -- helpers --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with SandboxEnv(tmp_path_factory.mktemp("gdir") / "sandbox", microsoft=False, aws=False) as e:
        yield e


@pytest.fixture
def standin(env):
    s = env.google_standin
    s.set_faults([])
    s.stats.reset()
    yield s
    s.set_faults([])


class OwnStandIn:
    """A Google stand-in with options SandboxEnv does not take (token lifetime, granted scopes)."""

    def __init__(self, org, tmp_path: Path, **options):
        self.server, self.standin = google_sandbox.start(org, **options)
        key = tmp_path / "own-google-key.json"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(self.standin.service_account_info(), f)
        admin = next(p for p in org.people() if p.admin and not p.suspended)
        self.google = {"service_account_key_file": str(key), "admin_subject": admin.email, "root_url": self.server.url + "/"}

    def close(self) -> None:
        self.server.close()


def _options(google: dict, **extra) -> dict:
    return {**{k: google[k] for k in ("service_account_key_file", "admin_subject", "root_url")}, **extra}


def _toml(options: dict) -> str:
    body = "".join(f"{k} = {json.dumps(v)}\n" for k, v in options.items())
    return '[[connector]]\nid = "google-directory"\ntype = "google_directory"\n' + body


def _run(tmp_path: Path, google: dict, *, fast: bool = True, **extra):
    """Collect through the runner; returns (outcome, run.json, {stream: [record data]})."""
    cfg = load_config(write_config(tmp_path, connectors={"google-directory.toml": _toml(_options(google, **extra))}))
    entry = cfg.connectors[0]
    clients = None
    if fast:  # quick backoff, a budget that never waits: the tests are about behaviour, not pacing
        clients = GoogleClients(entry.config, project_per_minute=60_000, user_per_minute=60_000, backoff_base_s=0.01)
    out = run_connector(cfg, entry, clients=clients)
    return out, run_json(out), record_lists(out)


def _member_pages(org) -> int:
    return sum(max(1, math.ceil(sum(1 for _ in org.group_members(g)) / 200)) for g in org.groups())


def _check_against_truth(org, records: dict[str, list[dict]]) -> None:
    c = counts(org)
    principals = {p["id"]: p for p in records["principals"]}
    users = [p for p in records["principals"] if p["kind"] == "user" and "google_id" in p["attributes"]]
    assert len(users) == c["people"]
    assert sum(p["kind"] == "group" for p in records["principals"]) == c["groups"]
    assert len(records["memberships"]) == c["group_memberships"]
    assert sum(p["attributes"]["is_super_admin"] for p in users) == c["admins"]
    people = list(org.people())
    admin_grants = [g for g in records["grants"] if g["role"] == "admin"]
    assert len(admin_grants) == sum(p.admin + p.delegated_admin for p in people)
    assert {g["principal_id"] for g in admin_grants} == {user_pid(p.email) for p in people if p.admin or p.delegated_admin}
    for p in people:
        rec = principals[user_pid(p.email)]
        assert rec["enabled"] is (not p.suspended)
        assert rec["mfa"] is p.mfa and rec["admin"] is (p.admin or p.delegated_admin)
        assert rec["external"] is False and rec["created"].endswith("Z")
        assert (rec["last_sign_in"] is None) is (p.last_login is None)
    memberships = {(m["group_id"], m["member_id"]): m for m in records["memberships"]}
    kinds = Counter()
    for problem in problems(org):
        kinds[problem["kind"]] += 1
        if problem["kind"] == "admin_without_mfa":
            rec = principals[user_pid(problem["subject"])]
            assert rec["admin"] is True and rec["mfa"] is False and rec["attributes"]["is_super_admin"] is True
        elif problem["kind"] in ("group_external_member", "group_unapproved_member"):
            m = memberships[(group_pid(problem["where"]), user_pid(problem["subject"]))]
            assert m["attributes"]["external"] is True and m["member_kind"] == "user"
            ext = principals[user_pid(problem["subject"])]
            assert ext["external"] is True and ext["attributes"] == {"source": "group membership"}
    assert kinds["admin_without_mfa"] and kinds["group_external_member"] and kinds["group_unapproved_member"]


# -- a normal run ---------------------------------------------------------------------------------


def test_config_and_declarations():
    cfg = GoogleDirectoryConfig.model_validate({"service_account_key_file": "/k.json", "admin_subject": "Admin@Example.co.jp"})
    assert (cfg.requests_per_minute, cfg.oauth_tokens, cfg.batch_size, cfg.admin_subject) == (2400, False, 100, "admin@example.co.jp")
    for bad in ({"batch_size": 0}, {"batch_size": 1001}, {"admin_subject": "nobody"},
                {"root_url": "http://127.0.0.1.example.net/"}, {"token_uri": "http://oauth2.googleapis.com/token"}):
        with pytest.raises(ValueError):
            GoogleDirectoryConfig.model_validate({"service_account_key_file": "/k.json", "admin_subject": "a@b.c", **bad})
    perms = GoogleDirectoryConnector.permissions
    assert all(p.startswith("https://www.googleapis.com/auth/admin.directory.") for p in perms)
    assert [p for p in perms if "readonly" not in p] == [p for p in perms if SECURITY in p]  # the one non-read-only scope
    assert "NOT read-only" in next(p for p in perms if SECURITY in p)


def test_a_key_file_must_be_a_service_account_key_with_a_safe_token_uri(env, tmp_path):
    info = json.loads(Path(env.endpoints["google"]["service_account_key_file"]).read_text(encoding="utf-8"))
    assert load_key_info(Path(env.endpoints["google"]["service_account_key_file"]))["token_uri"] == info["token_uri"]
    cases = {
        "list.json": ([info], "is not a service-account key (a JSON object"),
        "user.json": ({**info, "type": "authorized_user"}, "needs type=service_account"),
        "no-email.json": ({k: v for k, v in info.items() if k != "client_email"}, "missing ['client_email']"),
        "plain.json": ({**info, "token_uri": "http://oauth2.googleapis.com/token"},
                       "token_uri 'http://oauth2.googleapis.com/token' must be an https:// URL"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_text(json.dumps(content), encoding="utf-8")
        with pytest.raises(AuthenticationError) as exc:
            load_key_info(path)
        assert str(exc.value).startswith(str(path)) and message in str(exc.value), exc.value


def test_small_tenant_through_the_sandbox_template_matches_the_truth(env, standin, tmp_path):
    main = env.write_config(tmp_path / "config", tmp_path / "vault")
    cfg = load_config(main)
    entry = next(e for e in cfg.connectors if e.type == "google_directory")
    assert entry.id == "google-directory" and entry.schedule == "0 2 * * *"
    connector = GoogleDirectoryConnector(entry.config)
    check = connector.check()
    assert check.ok, check.items
    out = run_connector(cfg, entry)  # the connector's own clients, at the documented quota
    assert out.status == "complete", out.reasons
    run, records = run_json(out), record_lists(out)
    _check_against_truth(env.org, records)
    assert run["identity"] == f"{env.google_standin.service_account_email} as {env.endpoints['google']['admin_subject']}"
    assert {s["endpoint"] for s in run["sources"]} == {
        "directory.roles.list", "directory.roleAssignments.list", "directory.users.list", "directory.groups.list",
        "directory.members.list",
    }
    users_source = next(s for s in run["sources"] if s["endpoint"] == "directory.users.list")
    assert users_source["maxResults"] == 500 and users_source["projection"] == "basic"
    assert run["calls"]["directory.members.list"] == env.org.n_projects + 8 and run["calls"]["batch"] == 1
    assert run["raw_pages"]["directory.users.list"] == 1
    # one tenant resource; the planted "never signed in" person; roles named on users
    (tenant,) = records["resources"]
    assert tenant["kind"] == "account" and tenant["id"] == f"google-workspace:{env.google_standin.customer_id}"
    principals = {p["id"]: p for p in records["principals"]}
    assert principals[user_pid(env.org.person(8).email)]["last_sign_in"] is None
    assert principals[user_pid(env.org.person(2).email)]["roles"] == ["_HELP_DESK_ADMIN_ROLE"]
    assert principals[user_pid(env.org.person(9).email)]["enabled"] is False  # a suspended leaver
    assert any(p["kind"] == "role" and p["attributes"]["is_super_admin_role"] for p in records["principals"])
    # the same state gives the same records, byte for byte
    again = run_connector(cfg, entry)
    assert again.status == "complete" and record_bytes(again) == record_bytes(out)


def test_members_are_batched(env, standin, tmp_path):
    out, run, records = _run(tmp_path, env.endpoints["google"], batch_size=4)
    assert out.status == "complete", out.reasons
    groups = sum(1 for _ in env.org.groups())
    stats = standin.stats.snapshot()["calls"]
    assert stats["directory.members.list"] == _member_pages(env.org) == groups  # small: every group fits a page
    assert stats["batch"] == math.ceil(groups / 4) == run["calls"]["batch"]
    assert stats["directory.users.list"] == stats["directory.groups.list"] == 1
    assert len(records["memberships"]) == counts(env.org)["group_memberships"]


def test_medium_tenant_follows_member_pages_in_later_batches(tmp_path):
    with SandboxEnv(tmp_path / "sandbox", size="medium", microsoft=False, aws=False) as env:
        out, run, records = _run(tmp_path, env.endpoints["google"])
        assert out.status == "complete", out.reasons
        _check_against_truth(env.org, records)
        stats = env.google_standin.stats.snapshot()["calls"]
        groups = sum(1 for _ in env.org.groups())
        assert stats["directory.members.list"] == _member_pages(env.org) > groups  # all-staff: 500 members, 3 pages
        assert stats["batch"] == 3  # every group's first page, then all-staff's second and third pages
        assert run["calls"]["directory.members.list"] == stats["directory.members.list"]


# -- faults ---------------------------------------------------------------------------------------


def test_throttled_member_calls_inside_a_batch_are_retried(env, standin, tmp_path):
    standin.set_faults([FaultRule(endpoint="directory.members.list", throttle_next=3)])
    out, run, records = _run(tmp_path, env.endpoints["google"])
    assert out.status == "complete", out.reasons
    assert run["throttled"]["directory.members.list"] == 3 and run["retries"]["directory.members.list"] == 3
    assert run["throttle_wait_s"] >= 1.0  # the sandbox's Retry-After was honoured
    assert standin.stats.snapshot()["throttled"]["directory.members.list"] == 3
    assert len(records["memberships"]) == counts(env.org)["group_memberships"]


def test_server_errors_on_users_list_are_retried(env, standin, tmp_path):
    standin.set_faults([FaultRule(endpoint="directory.users.list", fail_next=2)])
    out, run, records = _run(tmp_path, env.endpoints["google"])
    assert out.status == "complete", out.reasons
    assert run["retries"]["directory.users.list"] == 2 and run["calls"]["directory.users.list"] == 1
    _check_against_truth(env.org, records)


def test_dropped_connections_are_retried(env, standin, tmp_path):
    standin.set_faults([FaultRule(endpoint="*", drop_rate=0.3)])
    out, run, records = _run(tmp_path, env.endpoints["google"])
    assert out.status == "complete", out.reasons
    assert sum(standin.stats.snapshot()["dropped"].values()) >= 1
    _check_against_truth(env.org, records)


def test_tokens_that_expire_mid_run_are_renewed(env, tmp_path):
    own = OwnStandIn(env.org, tmp_path, token_ttl_s=0.25)
    try:
        lists = ("directory.roles.list", "directory.roleAssignments.list", "directory.users.list", "directory.groups.list")
        own.standin.set_faults([FaultRule(endpoint=e, latency_ms=120) for e in lists])
        out, run, records = _run(tmp_path, own.google)
        assert out.status == "complete", out.reasons
        assert own.standin.stats.snapshot()["calls"]["oauth2.token"] >= 2  # the first token died on the way
        _check_against_truth(env.org, records)
    finally:
        own.close()


def test_a_token_dropped_before_the_member_batch_is_renewed(env, standin):
    """The server forgets the token while the client still thinks it valid: the batch's 401s are
    re-sent with a fresh token (not reported as failed groups)."""
    connector = GoogleDirectoryConnector(GoogleDirectoryConfig.model_validate(_options(env.endpoints["google"])))
    ctx = RunContext(run_id="r", connector_id="c", started=datetime.now(timezone.utc),
                     organization=Organization("t", (env.org.domain,)))
    memberships = expired = 0
    for item in connector.snapshot(ctx):
        if isinstance(item, Record) and item.stream == "principals" and item.data["kind"] == "group" and not expired:
            expired = standin.expire_tokens()  # groups.list is done; the member batch comes next
        memberships += isinstance(item, Record) and item.stream == "memberships"
    assert expired and not ctx.errors
    assert memberships == counts(env.org)["group_memberships"]
    assert standin.stats.snapshot()["calls"]["oauth2.token"] == 2


def test_a_group_whose_members_fail_for_good_makes_the_run_partial(env, standin, tmp_path):
    standin.set_faults([FaultRule(endpoint="directory.members.list", fail_next=2)])  # first try and the one retry
    out, run, records = _run(tmp_path, env.endpoints["google"], max_retries=1, batch_size=1, workers=1)  # one at a time
    assert out.status == "partial"
    first = next(env.org.groups())  # all-staff: listed first, so it takes both failures
    assert [e["where"] for e in run["errors"]] == [f"group {first.email} members"]
    assert "503" in run["errors"][0]["message"]
    assert first.email in " ".join(out.reasons)
    others = counts(env.org)["group_memberships"] - sum(1 for _ in env.org.group_members(first))
    assert len(records["memberships"]) == others
    assert not any(m["group_id"] == group_pid(first.email) for m in records["memberships"])


def test_roles_refused_loses_only_the_roles(env, standin, tmp_path):
    standin.set_faults([FaultRule(endpoint="directory.roles.list", fail_next=1, error_status=403)])
    out, run, records = _run(tmp_path, env.endpoints["google"])
    assert out.status == "partial" and [e["where"] for e in run["errors"]] == ["admin roles"]
    users = [p for p in records["principals"] if p["kind"] == "user" and "google_id" in p["attributes"]]
    assert len(users) == counts(env.org)["people"] and not any(p["roles"] for p in users)
    assert not records["grants"] and len(records["memberships"]) == counts(env.org)["group_memberships"]


# -- OAuth tokens (opt-in, non-read-only scope) and check() ---------------------------------------


def test_oauth_tokens_when_the_delegation_grants_the_scope(env, tmp_path):
    own = OwnStandIn(env.org, tmp_path, granted_scopes=[*DEFAULT_GRANTED_SCOPES, SECURITY])
    try:
        options = _options(own.google, oauth_tokens=True)
        check = GoogleDirectoryConnector(GoogleDirectoryConfig.model_validate(options)).check()
        assert check.ok and any("OAuth" in i.name for i in check.items), check.items
        out, run, records = _run(tmp_path, own.google, oauth_tokens=True, batch_size=50)
        assert out.status == "complete", out.reasons
        expected = {(p.email, app[0]) for p in env.org.people() for app in own.standin.user_tokens(p.index)}
        tokens = [g for g in records["grants"] if g["raw_role"] == "oauth_token"]
        assert {(g["principal_email"], g["resource_id"].split(":", 1)[1]) for g in tokens} == expected
        apps = [r for r in records["resources"] if r["kind"] == "oauth_app"]
        assert len(apps) == len({client for _, client in expected})
        planted = [g for g in tokens if g["principal_email"] == env.org.person(2).email and g["attributes"]["anonymous"]]
        assert planted and planted[0]["attributes"]["scopes"] == ["https://www.googleapis.com/auth/drive"]
        assert run["calls"]["directory.tokens.list"] == env.org.n
        assert any(s["endpoint"] == "directory.tokens.list" for s in run["sources"])
        assert own.standin.grants[-1]["scopes"] == [SECURITY]  # asked only for tokens.list, not with the reads
        # refused for everyone (e.g. the admin's role lacks the privilege): one error, not one per user
        own.standin.set_faults([FaultRule(endpoint="directory.tokens.list", fail_next=10_000, error_status=403)])
        out, run, _ = _run(tmp_path, own.google, oauth_tokens=True)
        assert out.status == "partial" and [e["where"] for e in run["errors"]] == ["oauth tokens"]
    finally:
        own.close()


def test_check_and_run_explain_a_missing_token_scope(env, standin, tmp_path):
    options = _options(env.endpoints["google"], oauth_tokens=True)
    check = GoogleDirectoryConnector(GoogleDirectoryConfig.model_validate(options)).check()
    assert not check.ok
    failed = [i for i in check.items if not i.ok]
    assert [i.name for i in failed] == ["OAuth tokens (resources, grants)"]
    assert SECURITY in failed[0].detail and "domain-wide delegation" in failed[0].detail
    assert "oauth_tokens = false" in failed[0].detail
    out, run, records = _run(tmp_path, env.endpoints["google"], oauth_tokens=True)
    assert out.status == "partial"  # everything else was read; the tokens were not
    assert [e["where"] for e in run["errors"]] == ["oauth tokens"] and SECURITY in run["errors"][0]["message"]
    assert len(records["memberships"]) == counts(env.org)["group_memberships"]


def test_check_explains_a_subject_that_cannot_read_the_directory(env, standin, tmp_path):
    not_admin = next(p for p in env.org.people() if not p.admin and not p.suspended)
    check = GoogleDirectoryConnector(GoogleDirectoryConfig.model_validate(
        _options(env.endpoints["google"], admin_subject=not_admin.email))).check()
    assert not check.ok and "administrator" in check.items[1].detail
    check = GoogleDirectoryConnector(GoogleDirectoryConfig.model_validate(
        _options(env.endpoints["google"], admin_subject="nobody.99999@example.co.jp"))).check()
    assert not check.ok and "admin_subject" in check.items[1].detail
    missing = GoogleDirectoryConnector(GoogleDirectoryConfig.model_validate(
        _options(env.endpoints["google"], service_account_key_file=str(tmp_path / "none.json")))).check()
    assert not missing.ok and "none.json" in missing.items[0].detail
    # a run as the non-admin fails before any record, and says why
    out, run, _ = _run(tmp_path, env.endpoints["google"], admin_subject=not_admin.email)
    assert out.status == "failed" and "Not Authorized" in " ".join(out.reasons)

"""entra_id against the Microsoft stand-in: records against the organisation's truth, both
credential kinds, the optional parts without licence or permission, faults, and incremental ==
full (with its resource-unit cost)."""

from __future__ import annotations

import json
import math
import os
import shutil
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from bags import all_records, run_json
from conftest import write_config

from collector.config import load_config
from collector.runner import run_connector
from connectors.base import Organization, RunContext
from connectors.entra_id import EntraIdConfig, EntraIdConnector
from connectors.entra_id.collect import Changes, Pacer, Snapshot
from connectors.entra_id.mapping import gtime, sponsorship_from_graph, user_email
from evidence.model import canonical_json
from evidence.reader import BaseBundle
from sandbox import microsoft as ms_sandbox
from sandbox.env import CONNECTOR_TEMPLATES, SandboxEnv
from sandbox.microsoft import DEFAULT_APP_ROLES
from sandbox.org import Org
from sandbox.server import FaultRule
from sandbox.truth import counts, problems

FAST = {"signin_calls_per_minute": 1000, "report_calls_per_10s": 1000}  # the tests are about behaviour, not pacing
GA, UA = "Global Administrator", "User Administrator"


# -- helpers --------------------------------------------------------------------------------------


def options(ms: dict, **extra) -> dict:
    out = {"tenant_id": ms["tenant_id"], "client_id": ms["client_id"],
           "authority": ms["authority"].removesuffix("/" + ms["tenant_id"]), "graph_url": ms["graph_url"],
           "ca_bundle": ms["ca_bundle"]}
    if extra.pop("certificate", False):
        out.update(certificate_file=ms["certificate_file"], private_key_file=ms["private_key_file"])
    else:
        out["client_secret_file"] = ms["client_secret_file"]
    return {**out, **FAST, **extra}


def toml(opts: dict, cid: str = "entra-id") -> str:
    return f'[[connector]]\nid = "{cid}"\ntype = "entra_id"\n' + "".join(f"{k} = {json.dumps(v)}\n" for k, v in opts.items())


def run(base: Path, opts: dict, *, cid: str = "entra-id", **runner):
    cfg = load_config(write_config(base, connectors={f"{cid}.toml": toml(opts, cid)}))
    entry = cfg.connector(cid)
    clients = entry.cls.make_clients(entry.config)
    clients.backoff_base_s = 0.01
    out = run_connector(cfg, entry, clients=clients, **runner)
    return out, run_json(out), all_records(out)


def normalised(recs: dict[str, dict[str, dict]]) -> dict[str, list[str]]:
    return {s: sorted(canonical_json({"k": k, "r": v}) for k, v in rs.items()) for s, rs in recs.items()}


def check(opts: dict):
    return EntraIdConnector(EntraIdConfig.model_validate(opts)).check()


class OwnStandIn:
    """A Microsoft stand-in with options SandboxEnv does not pass (licence, app roles, token life)."""

    def __init__(self, org, tmp_path: Path, **opts):
        self.server, self.standin = ms_sandbox.start(org, workdir=tmp_path / "ms", **opts)
        app = self.standin.app_info()
        secret = tmp_path / "ms" / "secret"
        fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(app.client_secret)
        self.ms = {"tenant_id": app.tenant_id, "client_id": app.client_id, "authority": app.authority,
                   "graph_url": app.graph_url, "ca_bundle": str(self.standin.ca_file), "client_secret_file": str(secret)}

    def close(self) -> None:
        self.server.close()


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with SandboxEnv(tmp_path_factory.mktemp("entra") / "sandbox", google=False, aws=False) as e:
        yield e


@pytest.fixture
def standin(env):
    s = env.microsoft_standin
    s.set_faults([])
    s.stats.reset()
    yield s
    s.set_faults([])


def users_by_email(recs) -> dict[str, dict]:
    return {p["email"]: p for p in recs["principals"].values() if p["kind"] in ("user", "guest")}


def check_truth(org, recs) -> None:
    """The records of a complete run against the organisation's truth."""
    c = counts(org)
    kinds = Counter(p["kind"] for p in recs["principals"].values())
    assert kinds["user"] == c["people"] and kinds["guest"] == c["guests"] and kinds["group"] == c["groups"]
    assert len(recs["memberships"]) == c["group_memberships"]
    people = list(org.people())
    by_email = users_by_email(recs)
    for p in people:
        rec = by_email[p.email]
        assert rec["id"] == f"user:{p.email}" and rec["external"] is False and rec["created"].endswith("Z")
        assert rec["enabled"] is (not p.suspended)
        assert rec["mfa"] is (None if p.suspended else p.mfa)  # disabled: not in the report → unknown
        assert rec["admin"] is (p.admin or p.delegated_admin)
        assert rec["attributes"]["last_interactive_sign_in"] == gtime(p.last_login and p.last_login.isoformat())
        assert (rec["last_sign_in"] is None) is (p.last_login is None)
        if p.last_login:
            assert rec["last_sign_in"] == gtime((p.last_login + timedelta(minutes=7)).isoformat())  # non-interactive later
    grants = list(recs["grants"].values())
    active = [g for g in grants if g["attributes"]["assignment"] == "active"]
    assert sum(g["raw_role"] == GA for g in active) == c["admins"]
    assert {g["principal_id"] for g in active if g["raw_role"] == UA} == {f"user:{p.email}" for p in people if p.delegated_admin}
    eligible = [g for g in grants if g["attributes"]["assignment"] == "eligible"]
    assert [(g["principal_id"], g["raw_role"]) for g in eligible] == [(f"user:{org.person(6).email}", GA)]
    assert eligible[0]["expiry"] and eligible[0]["grant_id"] not in {g["grant_id"] for g in active}
    tenant = [r for r in recs["resources"].values() if r["kind"] == "account"]
    assert len(tenant) == 1 and all(g["resource_id"] == tenant[0]["id"] and g["role"] == "admin" for g in grants)
    found = Counter()
    for prob in problems(org):
        kind, subject = prob["kind"], prob["subject"]
        rec = by_email.get(subject)
        if kind == "admin_without_mfa":
            assert rec["admin"] is True and rec["mfa"] is False and GA in rec["roles"], prob
        elif kind == "leaver_enabled":
            assert rec["enabled"] is True, prob
        elif kind in ("guest_without_sponsor", "guest_inactive", "guest_unapproved_domain"):
            g = org.guest_by_email(subject)
            assert rec["kind"] == "guest" and rec["external"] is True and rec["domain"] == subject.split("@")[1], prob
            assert "#EXT#" in rec["attributes"]["upn"] and rec["id"] == f"user:{subject}"
            assert rec["attributes"]["last_interactive_sign_in"] == gtime(g.last_login and g.last_login.isoformat())
            if kind == "guest_without_sponsor":
                assert rec["attributes"]["sponsors"] == [] and rec["attributes"]["sponsor_object_ids"] == [], prob
            if kind == "guest_inactive":
                assert rec["last_sign_in"] is None or rec["last_sign_in"] < "2026-08-03", prob
        elif kind in ("group_external_member", "group_unapproved_member"):
            group = f"group:{prob['where']}"
            (mem,) = [x for x in recs["memberships"].values() if x["group_id"] == group and x["member_id"] == f"user:{subject}"]
            assert mem["member_kind"] == "guest" and mem["attributes"]["external"] is True
        else:
            continue
        found[kind] += 1
    assert {"admin_without_mfa", "leaver_enabled", "guest_without_sponsor", "guest_inactive",
            "guest_unapproved_domain", "group_external_member", "group_unapproved_member"} <= set(found)
    check_sponsors(org, recs)


def check_sponsors(org, recs) -> None:
    """Every guest's sponsors as the organisation says (its inviter, or none: guest 3); members
    carry no sponsors at all."""
    by_email = users_by_email(recs)
    for g in org.guests():
        rec = by_email[g.email]
        want = [] if g.invited_by is None else [f"user:{org.person(g.invited_by).email}"]
        assert rec["attributes"]["sponsors"] == want, g
        assert len(rec["attributes"]["sponsor_object_ids"]) == len(want)
        if want:  # a sponsor is named as the connector names that user
            assert want[0] in recs["principals"]
    assert by_email[org.guest(3).email]["attributes"]["sponsors"] == []
    assert not [p for p in by_email.values() if p["kind"] == "user" and "sponsors" in p["attributes"]]


# -- declarations ---------------------------------------------------------------------------------


def test_declarations_and_defaults():
    cfg = EntraIdConfig.model_validate({"tenant_id": "t", "client_id": "c", "client_secret_file": "/s"})
    assert (cfg.ru_per_10s, cfg.signin_activity, cfg.mfa_report, cfg.pim, cfg.incremental) == (3500, True, True, True, True)
    assert (cfg.full_every_days, cfg.refresh_reports_hours, cfg.sponsors) == (7, 24, True)
    assert EntraIdConnector.make_clients(cfg).budget.project_per_minute == 6 * 3500
    perms = EntraIdConnector.permissions
    assert [p.split()[0] for p in perms] == ["User.Read.All", "GroupMember.Read.All", "RoleManagement.Read.Directory",
                                             "AuditLog.Read.All"]
    assert "P1 or P2" in perms[-1] and "sponsors" in perms[0]  # no permission beyond User.Read.All
    assert user_email({"userPrincipalName": "a.b_x.example#EXT#@t.onmicrosoft.com"}) == "a.b@x.example"
    assert user_email({"mail": "A@X.example", "userPrincipalName": "z"}) == "a@x.example"


def test_sponsors_are_named_as_the_connector_names_users_and_groups():
    org = Organization("t", ("example.co.jp",))
    s = sponsorship_from_graph([
        {"@odata.type": "#microsoft.graph.user", "id": "u1", "mail": "Boss@Example.co.jp", "userPrincipalName": "boss@example.co.jp"},
        {"@odata.type": "#microsoft.graph.group", "id": "g1", "mail": "Sponsors@example.co.jp", "mailEnabled": True},
        {"@odata.type": "#microsoft.graph.group", "id": "g2", "mail": None, "mailEnabled": False},
    ], org)
    assert s.principals == ("group:entra:g2", "group:sponsors@example.co.jp", "user:boss@example.co.jp")
    assert s.object_ids == ("g1", "g2", "u1")
    assert sponsorship_from_graph([], org) == ((), ())


def test_the_example_config_loads_and_both_copies_agree(tmp_path):
    root = Path(__file__).resolve().parents[2]
    text = (root / "collector" / "templates" / "entra-id.toml.example").read_text(encoding="utf-8")
    assert (root / "config" / "connectors" / "entra-id.toml.example").read_text(encoding="utf-8") == text
    cfg = load_config(write_config(tmp_path, connectors={"entra-id.toml": text}))
    entry = cfg.connector("entra-id")
    assert entry.type == "entra_id" and entry.config.client_secret_file == Path("/etc/shoseki/entra-client-secret")
    for perm in ("User.Read.All", "GroupMember.Read.All", "RoleManagement.Read.Directory", "AuditLog.Read.All", "P1 or P2"):
        assert perm in text


def test_pacer_keeps_to_n_calls_per_window():
    now = [0.0]
    pacer = Pacer(5, 10.0, sleep=lambda s: now.__setitem__(0, now[0] + s), clock=lambda: now[0])
    ctx = RunContext(run_id="r", connector_id="c", started=__import__("datetime").datetime.now().astimezone(),
                     organization=Organization("t", ()))
    stamps = []
    for _ in range(12):
        pacer.wait(ctx, "x")
        stamps.append(now[0])
    assert stamps[:5] == [0.0] * 5 and 10.0 <= stamps[5] < 10.1 and 20.0 <= stamps[10] < 20.2
    assert all(stamps[i + 5] - stamps[i] >= 10.0 for i in range(len(stamps) - 5))


# -- a normal run ---------------------------------------------------------------------------------


def test_small_tenant_through_the_sandbox_template_matches_the_truth(env, standin, tmp_path):
    template = CONNECTOR_TEMPLATES["entra_id"](env)  # the file `shoseki sandbox` writes for this connector
    cfg = load_config(write_config(tmp_path, connectors={"entra-id.toml": template}))
    entry = next(e for e in cfg.connectors if e.type == "entra_id")
    assert entry.id == "entra-id" and entry.schedule == "15 2 * * *"
    result = EntraIdConnector(entry.config).check()
    assert result.ok, result.items
    standin.stats.reset()
    out = run_connector(cfg, entry)  # the connector's own clients, at the documented budgets and pacing
    assert out.status == "complete", out.reasons
    info = run_json(out)
    recs = all_records(out)
    check_truth(env.org, recs)
    app = standin.app_info()
    assert info["identity"] == f"app {app.client_id} in tenant {app.tenant_id}"
    assert info["mode"] == "full" and info["errors"] == []
    for part in ("signin_activity", "mfa_report", "pim"):
        assert info["notes"][part]["available"] is True
    # the call plan: one page of each at this size, $select everywhere, members through groups/delta,
    # the guests with their sponsors in one listing (no per-guest call)
    assert info["calls"] == {"groups.delta": 1, "reports.userRegistrationDetails": 1, "roles.assignments": 1,
                             "roles.definitions": 1, "roles.eligibilitySchedules": 1, "users.delta": 1,
                             "users.signInActivity": 1, "users.guestSponsors": 1}
    assert info["notes"]["sponsors"] == {"available": True, "reason": None, "refreshed": True,
                                         "as_of": info["notes"]["sponsors"]["as_of"], "read_alone": 0}
    assert {"endpoint": "users.guestSponsors", "path": "/users", "$filter": "userType eq 'Guest'", "$select": "id",
            "$expand": "sponsors", "$top": 100} in info["sources"]
    stats = standin.stats.snapshot()
    assert stats["calls"]["groups.delta"] == 1 and "groups.members" not in stats["calls"]
    assert sum(info["units"].values()) == sum(v for k, v in stats["units"].items() if not k.startswith("login."))
    assert info["cursor"]["committed"] and info["cursor"]["after"]["users_delta"].startswith(app.graph_url)
    suspended = [p for p in env.org.people() if p.suspended]
    assert suspended and all(users_by_email(recs)[p.email]["attributes"]["mfa_available"] for p in suspended)
    # nothing changed: the incremental run writes the same records
    again = run_connector(cfg, entry)
    info2 = run_json(again)
    assert again.status == "complete" and info2["mode"] == "incremental"
    assert normalised(all_records(again)) == normalised(recs)
    assert "reports.userRegistrationDetails" not in info2["calls"]  # refreshed daily, not every run
    assert {"users.guestSponsors", "users.sponsors", "batch"}.isdisjoint(info2["calls"])  # sponsors carried over
    assert info2["notes"]["sponsors"]["refreshed"] is False and info2["notes"]["sponsors"]["available"] is True


@pytest.mark.parametrize("certificate", [False, True], ids=["client_secret_file", "certificate"])
def test_both_credentials_with_an_explicit_ca_whatever_the_environment_says(env, standin, tmp_path, monkeypatch, certificate):
    other = tmp_path / "other-ca.pem"
    other.write_text("-----BEGIN CERTIFICATE-----\nnot the sandbox's\n-----END CERTIFICATE-----\n")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(other))
    monkeypatch.setenv("CURL_CA_BUNDLE", str(other))
    opts = options(env.endpoints["microsoft"], certificate=certificate)
    assert check(opts).ok
    out, info, recs = run(tmp_path, opts)
    assert out.status == "complete", out.reasons
    assert sum(p["kind"] == "user" for p in recs["principals"].values()) == env.org.n
    secret = Path(env.endpoints["microsoft"]["client_secret_file"]).read_text()
    key = Path(env.endpoints["microsoft"]["private_key_file"]).read_text().splitlines()[1]
    for path in out.bag.path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert secret.encode() not in data and key.encode() not in data


def test_a_wrong_secret_fails_check_and_run_with_the_reason(env, tmp_path):
    bad = tmp_path / "bad-secret"
    bad.write_text("not-the-secret")
    opts = {**options(env.endpoints["microsoft"]), "client_secret_file": str(bad)}
    result = check(opts)
    assert not result.ok and "secret is wrong or expired" in result.items[0].detail
    out, info, _ = run(tmp_path, opts)
    assert out.status == "failed" and "AuthenticationError" in out.reasons[0]


# -- the optional parts ---------------------------------------------------------------------------


def test_no_licence_or_no_permission_leaves_the_fields_unknown_and_the_run_complete(env, tmp_path):
    own = OwnStandIn(env.org, tmp_path, premium=False)
    try:
        opts = options(own.ms)
        out, info, recs = run(tmp_path / "a", opts)
        assert out.status == "complete", out.reasons
        assert info["errors"] == [] and info["cursor"]["committed"]
        notes = info["notes"]
        for part in ("signin_activity", "mfa_report"):
            assert notes[part]["available"] is False and "P1 or P2" in notes[part]["reason"]
        assert notes["pim"]["available"] is False and "P2" in notes["pim"]["reason"]
        users = [p for p in recs["principals"].values() if p["kind"] in ("user", "guest")]
        assert len(users) == env.org.n + env.org.n_guests
        assert all(p["mfa"] is None and p["last_sign_in"] is None and p["attributes"]["signin_available"] is False
                   and p["attributes"]["mfa_available"] is False for p in users)
        assert not [g for g in recs["grants"].values() if g["attributes"]["assignment"] == "eligible"]
        assert sum(p["admin"] is True for p in users) == counts(env.org)["admins"] + 1  # roles need no licence
        result = check(opts)
        bad = {i.name: i.detail for i in result.items if not i.ok}
        assert set(bad) == {"sign-in activity (principals.last_sign_in)", "MFA registration report (principals.mfa)",
                            "PIM role eligibility (grants)"}
        assert all("licence" in d for d in bad.values()) and "signin_activity = false" in bad[next(iter(bad))]

        own.standin.premium = True
        own.standin.set_app_roles([r for r in DEFAULT_APP_ROLES if r != "AuditLog.Read.All"])
        out, info, recs = run(tmp_path / "b", opts)
        assert out.status == "complete", out.reasons
        for part in ("signin_activity", "mfa_report"):
            assert info["notes"][part]["available"] is False and "AuditLog.Read.All" in info["notes"][part]["reason"]
        assert info["notes"]["pim"]["available"] is True
        bad = {i.name: i.detail for i in check(opts).items if not i.ok}
        assert len(bad) == 2 and all("AuditLog.Read.All" in d and "admin consent" in d for d in bad.values())
    finally:
        own.close()


def test_optional_parts_can_be_turned_off(env, standin, tmp_path):
    out, info, recs = run(tmp_path, options(env.endpoints["microsoft"], signin_activity=False, mfa_report=False, pim=False))
    assert out.status == "complete"
    assert {"users.signInActivity", "reports.userRegistrationDetails", "roles.eligibilitySchedules"}.isdisjoint(info["calls"])
    assert info["notes"]["signin_activity"] == {"available": False, "reason": "signin_activity = false in config",
                                                "refreshed": True, "as_of": info["notes"]["signin_activity"]["as_of"]}
    assert all(p["mfa"] is None for p in recs["principals"].values())


# -- faults ---------------------------------------------------------------------------------------


def test_a_429_storm_on_users_and_groups_is_waited_out(env, standin, tmp_path):
    standin.set_faults([FaultRule("users.delta", throttle_next=2, retry_after_s=1),
                        FaultRule("groups.delta", throttle_next=1, retry_after_s=1)])
    out, info, recs = run(tmp_path, options(env.endpoints["microsoft"]))
    assert out.status == "complete", out.reasons
    assert info["throttled"] == {"users.delta": 2, "groups.delta": 1}
    assert info["throttle_wait_s"] >= 3.0  # Retry-After honoured
    check_truth(env.org, recs)


def test_server_errors_and_dropped_connections_are_retried(env, standin, tmp_path):
    standin.set_faults([FaultRule("reports.userRegistrationDetails", fail_next=1),  # 503 + Retry-After
                        FaultRule("groups.delta", fail_next=2, error_status=500),
                        FaultRule("*", drop_rate=0.4)])  # the stand-in's random is seeded
    out, info, recs = run(tmp_path, options(env.endpoints["microsoft"]))
    assert out.status == "complete", out.reasons
    stats = standin.stats.snapshot()
    assert sum(stats["dropped"].values()) >= 1
    assert stats["errors"]["reports.userRegistrationDetails"] == 1 and stats["errors"]["groups.delta"] == 2
    assert sum(info["retries"].values()) >= sum(stats["dropped"].values()) + sum(stats["errors"].values())
    check_truth(env.org, recs)


def test_tokens_that_expire_mid_run_are_renewed(env, standin, tmp_path):
    expired = []

    def progress(state):
        if state.records and not expired:
            expired.append(standin.expire_tokens())  # the server forgets every token the client holds

    out, info, recs = run(tmp_path / "a", options(env.endpoints["microsoft"]), progress=progress, progress_interval=0)
    assert out.status == "complete", out.reasons
    assert expired and info["retries"] == {"users.delta": 1}  # its 401, answered with one fresh token
    assert standin.stats.snapshot()["calls"]["login.token"] >= 2
    check_truth(env.org, recs)
    own = OwnStandIn(env.org, tmp_path, token_ttl_s=1)  # tokens that live one second
    try:
        own.standin.set_faults([FaultRule("*", latency_ms=150)])
        out, info, recs = run(tmp_path / "b", options(own.ms))
        assert out.status == "complete", out.reasons
        assert own.standin.stats.snapshot()["calls"]["login.token"] >= 2
        check_truth(env.org, recs)
    finally:
        own.close()


def test_persistent_failures_are_partial_and_named(env, standin, tmp_path):
    standin.set_faults([FaultRule("groups.delta", fail_next=10_000, error_status=500)])
    out, info, recs = run(tmp_path / "a", options(env.endpoints["microsoft"], max_retries=2))
    assert out.status == "partial"
    assert [e["where"] for e in info["errors"]] == ["groups and memberships"]
    assert "gave up after 2 retries: 500" in info["errors"][0]["message"]
    assert not info["cursor"]["committed"] and recs["memberships"] == {}
    assert sum(p["kind"] == "user" for p in recs["principals"].values()) == env.org.n

    standin.set_faults([FaultRule("reports.userRegistrationDetails", fail_next=10_000, error_status=500)])
    out, info, recs = run(tmp_path / "b", options(env.endpoints["microsoft"], max_retries=1))
    assert out.status == "partial" and [e["where"] for e in info["errors"]] == ["MFA registration report"]
    assert info["notes"]["mfa_report"]["available"] is False

    standin.set_faults([FaultRule("users.delta", fail_next=10_000, error_status=500)])
    out, info, recs = run(tmp_path / "c", options(env.endpoints["microsoft"], max_retries=1))
    assert out.status in ("partial", "failed") and "users" in out.reasons[0] and not info["cursor"]["committed"]


# -- incremental ----------------------------------------------------------------------------------


def test_incremental_equals_a_fresh_full_run_at_a_fraction_of_the_cost(tmp_path):
    with SandboxEnv(tmp_path / "sb", size="medium", google=False, aws=False) as env:
        org, ms = env.org, env.endpoints["microsoft"]
        first, info1, recs1 = run(tmp_path / "a", options(ms))
        assert first.status == "complete" and info1["mode"] == "full" and info1["cursor"]["committed"]
        check_truth(org, recs1)  # the medium tenant: every count and planted problem

        # what the delta feeds report: account state, address, admin role, group members
        org.set_person(12, suspended=True)
        org.set_person(13, admin=True)
        renamed = f"renamed.person14@{org.domain}"
        org.set_person(14, email=renamed)
        org.add_member("proj-0", org.guest(1).email)
        org.add_member("partners", org.person(30).email)
        org.remove_member("dept-soumu", org.person(6).email)
        second, info2, recs2 = run(tmp_path / "a", options(ms))
        assert second.status == "complete", second.reasons
        assert info2["mode"] == "incremental" and info2["notes"]["base"]["tagmanifest_sha256"] == first.bag.digest
        applied = info2["notes"]["changes_applied"]
        assert applied["users_changed"] == 3 and applied["members_added"] == 2 and applied["members_removed"] == 1
        fresh, info3, recs3 = run(tmp_path / "b", options(ms, incremental=False))
        assert info3["mode"] == "full" and "users.list" in info3["calls"] and "users.delta" not in info3["calls"]
        assert normalised(recs2) == normalised(recs3) != normalised(recs1)
        by_email = users_by_email(recs2)
        assert renamed in by_email and by_email[renamed]["admin"] is False
        assert by_email[org.person(12).email]["enabled"] is False and by_email[org.person(12).email]["mfa"] is None
        assert by_email[org.person(13).email]["admin"] is True
        assert any(mm["member_id"] == f"user:{renamed}" for mm in recs2["memberships"].values())
        # guest 2's sponsor is person 14, renamed: its sponsors were read again (alone, one $batch) and
        # name the new address, as the full run does; the other guests' came from the base bag
        assert org.guest(2).invited_by == 14
        assert by_email[org.guest(2).email]["attributes"]["sponsors"] == [f"user:{renamed}"]
        assert info2["calls"]["users.sponsors"] == 1 and info2["calls"]["batch"] == 1
        assert "users.guestSponsors" not in info2["calls"] and info2["notes"]["sponsors"]["read_alone"] == 1
        # cost: the full run pays for every page of users (delta: 1 + 2 + 2 RU), sign-ins (2), the MFA
        # report (6), groups with members (11), the roles (5) and the guests with their sponsors (2) =
        # 31 RU measured at this size (520 users, 20 guests, 13 groups, ~1,060 members), and grows with
        # the tenant; the incremental one pays two delta calls (users 2 RU: a delta link carries no
        # $select; groups 1), the same role re-read (definitions 1, assignments and eligibility 2 each
        # with $expand=principal) = 8 RU whatever the tenant's size, plus 1 RU per guest whose sponsors
        # are read again (here 1)
        full_ru, inc_ru = sum(info1["units"].values()), sum(info2["units"].values())
        assert full_ru >= 31 and inc_ru <= 9 and inc_ru < 0.3 * full_ru, (info1["units"], info2["units"])

        # the reports: refreshed on their cadence (here: every run) and applied
        org.set_person(7, mfa=False)
        third, info4, recs4 = run(tmp_path / "a", options(ms, refresh_reports_hours=0))
        assert info4["mode"] == "incremental" and info4["notes"]["mfa_report"]["refreshed"] is True
        assert info4["notes"]["sponsors"]["refreshed"] is True and info4["calls"]["users.guestSponsors"] == 1
        fresh2, _, recs5 = run(tmp_path / "c", options(ms, incremental=False))
        assert normalised(recs4) == normalised(recs5)
        assert users_by_email(recs4)[org.person(7).email]["mfa"] is False

        # a delta link the service will not continue: a full resync in the same run
        env.microsoft_standin.set_faults([FaultRule("users.delta", fail_next=1, error_status=410)])
        fourth, info5, recs6 = run(tmp_path / "a", options(ms))
        assert fourth.status == "complete" and info5["mode"] == "full"
        assert "full resync" in info5["notes"]["mode_reason"] and "410" in info5["notes"]["mode_reason"]
        assert normalised(recs6) == normalised(recs5)
        assert info5["cursor"]["committed"]


def test_a_changed_base_bag_means_a_full_run(env, standin, tmp_path):
    first, _, _ = run(tmp_path, options(env.endpoints["microsoft"]))
    path = first.bag.path / "data" / "records" / "principals.jsonl.gz"
    path.chmod(0o640)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    second, info, recs = run(tmp_path, options(env.endpoints["microsoft"]))
    assert info["mode"] == "full" and "changed since it was sealed" in info["notes"]["mode_reason"]
    assert second.status == "complete"
    check_truth(env.org, recs)


# -- guests' sponsors ------------------------------------------------------------------------------


def test_guest_sponsors_are_read_in_listings_of_100_guests(tmp_path):
    """104 guests: two pages of the guest listing with $expand (Graph's cap is 100 a page with
    $expand, whatever $top says) — the lower bound, and no per-guest call."""
    org = Org(1, 2600)
    own = OwnStandIn(org, tmp_path)
    try:
        assert org.n_guests == 104
        out, info, recs = run(tmp_path / "a", options(own.ms, signin_activity=False, mfa_report=False, pim=False,
                                                     incremental=False))
        assert out.status == "complete", out.reasons
        assert info["calls"]["users.guestSponsors"] == math.ceil(org.n_guests / 100) == 2
        assert {"users.sponsors", "batch"}.isdisjoint(info["calls"]) and info["notes"]["sponsors"]["read_alone"] == 0
        assert info["units"]["users.guestSponsors"] == 4  # 2 RU a page: users 2, $select -1, $expand +1
        check_sponsors(org, recs)
    finally:
        own.close()


def test_sponsors_refused_leave_them_unknown_and_the_run_complete(env, standin, tmp_path):
    opts = options(env.endpoints["microsoft"], signin_activity=False)  # users.list is then only the guest listing
    standin.set_faults([FaultRule("users.list", fail_next=1, error_status=403)])
    out, info, recs = run(tmp_path / "a", opts)
    assert out.status == "complete" and info["errors"] == [] and info["cursor"]["committed"], out.reasons
    note = info["notes"]["sponsors"]
    assert note["available"] is False and "User.Read.All" in note["reason"] and "403" in note["reason"]
    guests = [p for p in recs["principals"].values() if p["kind"] == "guest"]
    assert len(guests) == env.org.n_guests
    assert all(g["attributes"]["sponsors"] is None and g["attributes"]["sponsor_object_ids"] is None for g in guests)
    assert not [p for p in recs["principals"].values() if p["kind"] == "user" and "sponsors" in p["attributes"]]
    # the next (incremental) run does not pretend to know them either, and asks nothing until the refresh
    again, info2, recs2 = run(tmp_path / "a", opts)
    assert info2["mode"] == "incremental" and info2["notes"]["sponsors"]["available"] is False
    assert {"users.sponsors", "users.guestSponsors"}.isdisjoint(info2["calls"])
    assert normalised(recs2) == normalised(recs)

    standin.set_faults([FaultRule("users.list", fail_next=2, error_status=403)])  # the users probe, then this one
    bad = {i.name: i.detail for i in check(opts).items if not i.ok}
    assert list(bad) == ["users (principals)", "guests' sponsors (principals.attributes.sponsors)"]
    detail = bad["guests' sponsors (principals.attributes.sponsors)"]
    assert "User.Read.All" in detail and "admin consent" in detail and "sponsors = false" in detail

    standin.set_faults([])
    out, info, recs = run(tmp_path / "b", options(env.endpoints["microsoft"], sponsors=False))
    assert info["notes"]["sponsors"]["reason"] == "sponsors = false in config"
    assert "users.guestSponsors" not in info["calls"]
    assert all(p["attributes"]["sponsors"] is None for p in recs["principals"].values() if p["kind"] == "guest")


def incremental_snapshot(env, tmp_path: Path, changes: Changes) -> tuple[RunContext, list[dict], dict]:
    """A complete full run, then an incremental Snapshot on its bag whose delta reports ``changes``
    (the stand-in's users/delta reports people only; a real tenant's reports guests too)."""
    opts = options(env.endpoints["microsoft"])
    first, info, recs = run(tmp_path, opts)
    cfg = load_config(tmp_path / "config" / "shoseki.toml")
    config = cfg.connector("entra-id").config
    cursor = info["cursor"]["after"]
    ctx = RunContext(run_id="r2", connector_id="entra-id", started=datetime.now(timezone.utc),
                     organization=cfg.organization, cursor=cursor,
                     base=BaseBundle(first.bag.path, first.bag.digest, first.run_id))
    snap = Snapshot(config, EntraIdConnector.make_clients(config), ctx)

    def delta(users_link: str, groups_link: str) -> Changes:
        snap.read.users_link, snap.read.groups_link = users_link, groups_link
        return changes

    snap.read.changes = delta  # type: ignore[method-assign]
    out = [r.data for r in snap.run("incremental", "test", cursor)]
    return ctx, out, recs


def test_a_guest_changed_in_the_delta_or_whose_sponsor_went_has_its_sponsors_read_again(env, standin, tmp_path):
    org, ms = env.org, env.microsoft_standin
    changed, orphaned = org.guest(1), org.guest(2)
    sponsor = org.person(orphaned.invited_by)
    ch = Changes(users={ms.guest_id(changed): {"id": ms.guest_id(changed), "displayName": "Renamed guest",
                                               "userType": "Guest"}},
                 users_removed={ms.user_id(sponsor)})
    ctx, out, base = incremental_snapshot(env, tmp_path, ch)
    guests = {p["email"]: p for p in out if p.get("kind") == "guest"}
    # two guests read alone, in one $batch; every other guest's sponsors carried from the base bag
    assert ctx.calls["users.sponsors"] == 2 and ctx.calls["batch"] == 1 and "users.guestSponsors" not in ctx.calls
    assert ctx.notes["sponsors"]["read_alone"] == 2 and ctx.notes["sponsors"]["available"] is True
    assert guests[changed.email]["display_name"] == "Renamed guest"
    assert guests[changed.email]["attributes"]["sponsors"] == [f"user:{org.person(changed.invited_by).email}"]
    assert guests[orphaned.email]["attributes"]["sponsors"] == [f"user:{sponsor.email}"]  # what Graph says now
    base_guests = {p["email"]: p for p in base["principals"].values() if p["kind"] == "guest"}
    assert set(guests) == set(base_guests)
    for email, p in guests.items():
        if email not in (changed.email, orphaned.email):
            assert p == base_guests[email]


def test_sponsors_refused_inside_the_batch_leave_those_guests_unknown(env, standin, tmp_path):
    guest = env.org.guest(1)
    gid = env.microsoft_standin.guest_id(guest)
    ch = Changes(users={gid: {"id": gid, "displayName": "Renamed guest", "userType": "Guest"}})
    standin.set_faults([FaultRule("users.sponsors", fail_next=1, error_status=403)])
    ctx, out, _ = incremental_snapshot(env, tmp_path, ch)
    guests = {p["email"]: p for p in out if p.get("kind") == "guest"}
    assert guests[guest.email]["attributes"]["sponsors"] is None
    assert ctx.notes["sponsors"]["available"] is False and "User.Read.All" in ctx.notes["sponsors"]["reason"]
    assert ctx.errors == []  # a refusal, not an error: the run stays complete
    assert all(p["attributes"]["sponsors"] is not None for e, p in guests.items() if e != guest.email)


@pytest.fixture(autouse=True)
def _no_leftovers(tmp_path):
    yield
    shutil.rmtree(tmp_path, ignore_errors=True)

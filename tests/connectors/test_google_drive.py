"""google_drive against the Google stand-in: counts and planted problems against the truth,
incremental == full, faults, and the honest status when something could not be read."""

from __future__ import annotations

import shutil
from collections import Counter

import pytest
from bags import records_of, run_json
from conftest import write_config

from collector.config import load_config
from collector.runner import run_connector
from evidence.model import canonical_json
from sandbox.env import SandboxEnv
from sandbox.org import REFERENCE_TIME, Share
from sandbox.server import FaultRule
from sandbox.truth import counts, problems


def live(shares):
    return [s for s in shares if s.expiration is None or s.expiration > REFERENCE_TIME]


def connector_toml(env, cid="google-drive", extra=""):
    g = env.endpoints["google"]
    return (
        f'[[connector]]\nid = "{cid}"\ntype = "google_drive"\n'
        f'service_account_key_file = "{g["service_account_key_file"]}"\n'
        f'admin_subject = "{g["admin_subject"]}"\nroot_url = "{g["root_url"]}"\n{extra}'
    )


def run(env, base, *, cid="google-drive", extra="", fast=True):
    cfg = load_config(write_config(base, connectors={f"{cid}.toml": connector_toml(env, cid, extra)}))
    entry = cfg.connector(cid)
    clients = entry.cls.make_clients(entry.config)
    if fast:
        clients.backoff_base_s = 0.01
    outcome = run_connector(cfg, entry, clients=clients)
    return outcome, run_json(outcome)


def expected(org):
    """Resources and grants the truth says a complete Drive snapshot has."""
    resources = grants = 0
    for p in org.people():
        for f in org.user_files(p.index):
            resources += 1
            grants += 1 + len(live(f.shares))
    for d in org.drives():
        resources += 1
        grants += len(d.members)
        for f in org.drive_files(d.index):
            resources += 1
            grants += len(d.members) + len(live(f.shares))
    return resources, grants


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with SandboxEnv(tmp_path_factory.mktemp("sandbox"), microsoft=False, aws=False) as e:
        yield e


@pytest.fixture
def clean(env):
    env.google_standin.set_faults([])
    env.google_standin.stats.reset()
    yield env
    env.google_standin.set_faults([])


def test_full_snapshot_equals_the_truth(clean, tmp_path):
    env = clean
    outcome, info = run(env, tmp_path)
    assert outcome.status == "complete", outcome.reasons
    assert info["mode"] == "full"
    res, grants = records_of(outcome, "resources"), records_of(outcome, "grants")
    n_res, n_grants = expected(env.org)
    assert (len(res), len(grants)) == (n_res, n_grants)
    c = counts(env.org)
    kinds = Counter(r["kind"] for r in res.values())
    assert kinds["shared_drive"] == c["shared_drives"]
    assert kinds["file"] + kinds["folder"] == c["my_drive_files"] + c["shared_drive_files"]

    by_resource: dict[str, list[dict]] = {}
    for g in grants.values():
        by_resource.setdefault(g["resource_id"], []).append(g)
    found = Counter()
    for p in problems(env.org):
        kind, where, subject = p["kind"], p["where"], p["subject"]
        on = by_resource.get(where, [])
        if kind == "anyone_link":
            assert any(g["principal_id"] == "anyone" and g["link_scope"] == "anyone" and g["external"] for g in on), p
        elif kind in ("share_external", "share_unapproved_domain"):
            hit = [g for g in on if g["principal_id"] == f"user:{subject}"]
            assert hit and all(g["external"] for g in hit), p
        elif kind == "share_expired":  # Google removes a permission when it expires
            assert not [g for g in on if g["principal_id"] == f"user:{subject}"], p
        elif kind == "suspended_owner_share":
            assert res[where]["owners"] == [f"user:{subject}"]
            assert any(g["role"] != "owner" for g in on), p
        elif kind == "single_owner":
            assert [(g["principal_id"], g["raw_role"]) for g in on] == [(f"user:{subject}", "organizer")], p
        else:
            continue
        found[kind] += 1
    assert {"anyone_link", "share_external", "share_unapproved_domain", "share_expired",
            "suspended_owner_share", "single_owner"} <= set(found)
    # unexpired external links keep their expiry
    expiring = [g for g in grants.values() if g["expiry"]]
    assert expiring and all(g["expiry"] > "2026-11-01" for g in expiring)
    # the inherited shape: a shared-drive item without its own permissions has exactly the drive's members
    d0 = env.org.drive(0)
    plain = next(f for f in env.org.drive_files(0) if not f.shares)
    assert sorted(g["grant_id"] for g in by_resource[plain.id]) == sorted(m.id for m in d0.members)
    assert all(g["via"] == "inherited" and g["inherited_from"] == d0.id for g in by_resource[plain.id])


def test_call_plan_is_the_lower_bound(clean, tmp_path):
    env = clean
    outcome, info = run(env, tmp_path)
    org = env.org
    calls = env.google_standin.stats.snapshot()["calls"]
    own = sum(1 for d in org.drives() for f in org.drive_files(d.index) if live(f.shares))
    assert calls["drive.files.list"] == org.n + org.n_drives                  # one page each at 1,000
    assert calls["drive.changes.getStartPageToken"] == org.n + org.n_drives
    assert calls["drive.permissions.list"] == org.n_drives + own               # members + items with their own
    assert calls["drive.drives.list"] == 1 and calls["directory.users.list"] == 1
    assert info["calls"]["drive.files.list"] == calls["drive.files.list"]     # run.json agrees with the server


def _mutate(org):
    """Sharing changes of every kind the changes feed reports."""
    person = next(p for p in org.people() if org.file_count(p.index) > 3 and not p.suspended)
    files = list(org.user_files(person.index))
    org.share(files[1].id, Share(f"{files[1].id}p9", "anyone", "reader"))
    shared = next(f for p in org.people() for f in org.user_files(p.index) if live(f.shares))
    org.unshare(shared.id, live(shared.shares)[0].id)
    org.delete_file(files[2].id)
    plain = next(f for f in org.drive_files(0) if not f.shares)
    org.share(plain.id, Share(f"{plain.id}p9", "user", "writer", email=org.guest(0).email))
    own = next(f for f in org.drive_files(2) if f.shares)
    org.unshare(own.id, own.shares[0].id)


def _normalised(outcome):
    return {s: sorted(canonical_json({"k": k, "r": v}) for k, v in records_of(outcome, s).items()) for s in ("resources", "grants")}


def test_incremental_equals_a_fresh_full_run(tmp_path):
    with SandboxEnv(tmp_path / "sb", microsoft=False, aws=False) as env:
        first, info1 = run(env, tmp_path / "a")
        assert first.status == "complete" and info1["mode"] == "full" and info1["cursor"]["committed"]
        full_calls = sum(info1["calls"].values())
        _mutate(env.org)
        second, info2 = run(env, tmp_path / "a")
        assert second.status == "complete", second.reasons
        assert info2["mode"] == "incremental"
        assert info2["notes"]["base"]["tagmanifest_sha256"] == first.bag.digest
        assert info2["notes"]["changes_applied"]["my_drive"] >= 3
        assert info2["notes"]["changes_applied"]["shared_drive"] >= 2
        fresh, info3 = run(env, tmp_path / "b", cid="google-drive", extra="incremental = false\n")
        assert fresh.status == "complete" and info3["mode"] == "full"
        assert _normalised(second) == _normalised(fresh)
        assert _normalised(second) != _normalised(first)
        inc_calls = sum(v for k, v in info2["calls"].items() if k != "batch")
        assert inc_calls < 0.6 * full_calls, (info2["calls"], info1["calls"])
        # and a third run on top of the incremental one still agrees
        org = env.org
        f = next(f for f in org.user_files(5) if not f.shares)
        org.share(f.id, Share(f"{f.id}p8", "domain", "reader", domain=org.domain))
        third, info4 = run(env, tmp_path / "a")
        fresh2, _ = run(env, tmp_path / "c", extra="incremental = false\n")
        assert info4["mode"] == "incremental" and _normalised(third) == _normalised(fresh2)


def test_activity_mode_reads_only_the_feeds_the_audit_log_names(tmp_path):
    with SandboxEnv(tmp_path / "sb", microsoft=False, aws=False) as env:
        extra = 'change_detection = "activity"\nactivity_lag_minutes = 5\n'
        first, info1 = run(env, tmp_path / "a", extra=extra)
        assert info1["mode"] == "full" and info1["cursor"]["after"]["activity_from"]
        _mutate(env.org)
        env.google_standin.stats.reset()
        second, info2 = run(env, tmp_path / "a", extra=extra)
        assert second.status == "complete" and info2["mode"] == "incremental", second.reasons
        changes = env.org.overlay.changes
        owners = {env.org.person(c["owner"]).email for c in changes if c.get("owner") is not None}
        drives = {c["drive"] for c in changes if c.get("drive") is not None}
        named = info2["notes"]["activity"]
        assert (named["events"], named["users_named"], named["shared_drives_named"]) == (len(changes), len(owners), len(drives))
        assert env.google_standin.stats.snapshot()["calls"]["drive.changes.list"] == len(owners) + len(drives)
        fresh, _ = run(env, tmp_path / "b", extra="incremental = false\n")
        assert _normalised(second) == _normalised(fresh)
        full_units = sum(v for k, v in info1["units"].items())
        inc_units = sum(v for k, v in info2["units"].items())
        assert inc_units < 0.25 * full_units, (info2["units"], info1["units"])
        # a user the log did not name keeps the token it had
        untouched = next(u for u in info1["cursor"]["after"]["users"] if u not in owners)
        assert info2["cursor"]["after"]["users"][untouched] == info1["cursor"]["after"]["users"][untouched]


def test_a_changed_base_bag_means_a_full_run(tmp_path):
    with SandboxEnv(tmp_path / "sb", microsoft=False, aws=False) as env:
        first, _ = run(env, tmp_path / "a")
        path = first.bag.path / "data" / "records" / "grants.jsonl.gz"
        path.chmod(0o640)
        data = bytearray(path.read_bytes())
        data[-10] ^= 0xFF
        path.write_bytes(bytes(data))
        second, info = run(env, tmp_path / "a")
        assert info["mode"] == "full" and "changed since it was sealed" in info["notes"]["mode_reason"]
        assert second.status == "complete"


def test_throttling_errors_expired_tokens_and_drops_are_survived(tmp_path):
    with SandboxEnv(tmp_path / "sb", microsoft=False, aws=False, google_options={"token_ttl_s": 0.3}) as env:
        env.google_standin.set_faults([
            FaultRule("drive.files.list", throttle_next=3, retry_after_s=1),
            FaultRule("drive.permissions.list", fail_next=3),             # inner batch 5xx: re-batched
            FaultRule("drive.changes.getStartPageToken", drop_rate=0.3),     # httplib2 resends once; we do the rest
            FaultRule("*", latency_ms=5),                                   # long enough for tokens to expire
        ])
        outcome, info = run(env, tmp_path / "a")
        assert outcome.status == "complete", outcome.reasons
        assert info["throttled"].get("drive.files.list") == 3
        assert info["retries"]["drive.permissions.list"] >= 3
        assert env.google_standin.stats.snapshot()["dropped"].get("drive.changes.getStartPageToken", 0) >= 2
        res = records_of(outcome, "resources")
        assert len(res) == expected(env.org)[0]
        grants_on_token = sum(1 for g in env.google_standin.grants if g["sub"])
        assert grants_on_token > env.org.n  # tokens died and were renewed mid-run


def test_pages_that_never_come_make_the_run_partial_and_named(tmp_path):
    with SandboxEnv(tmp_path / "sb", microsoft=False, aws=False) as env:
        env.google_standin.set_faults([FaultRule("drive.files.list", fail_next=10_000)])  # 503, always
        outcome, info = run(env, tmp_path / "a", extra="max_retries = 2\n")
        assert outcome.status == "partial"
        org = env.org
        named = sorted(e["where"] for e in info["errors"])
        assert named == sorted([f"My Drive of {p.email}" for p in org.people()]
                               + [f"shared drive {d.name} ({d.id})" for d in org.drives()])
        assert all("gave up after 2 retries: 503" in e["message"] for e in info["errors"])
        assert not info["cursor"]["committed"]
        assert any("could not be read" in r for r in outcome.reasons)


def test_suspended_accounts_google_will_not_act_as_are_named(tmp_path):
    with SandboxEnv(tmp_path / "sb", microsoft=False, aws=False, google_options={"suspended_subjects": "refuse"}) as env:
        outcome, info = run(env, tmp_path / "a")
        suspended = sorted(p.email for p in env.org.people() if p.suspended)
        assert outcome.status == "partial"
        named = sorted(e["where"].removeprefix("My Drive of ") for e in info["errors"])
        assert named == suspended
        assert "would not let the service account act as" in info["errors"][0]["message"]


def test_check_explains_a_missing_delegation(tmp_path):
    with SandboxEnv(tmp_path / "sb", microsoft=False, aws=False,
                    google_options={"granted_scopes": ["admin.directory.user.readonly", "drive.metadata.readonly"]}) as env:
        cfg = load_config(write_config(tmp_path, connectors={"d.toml": connector_toml(env)}))
        entry = cfg.connectors[0]
        result = entry.cls(entry.config, entry.cls.make_clients(entry.config)).check()
        assert not result.ok
        bad = [i for i in result.items if not i.ok]
        assert [i.name for i in bad] == ["shared drives (as admin)"]
        assert "drive.readonly" in bad[0].detail and "domain-wide delegation" in bad[0].detail


def test_medium_tenant_counts(tmp_path):
    with SandboxEnv(tmp_path / "sb", size="medium", microsoft=False, aws=False) as env:
        outcome, info = run(env, tmp_path / "a")
        assert outcome.status == "complete"
        n_res, n_grants = expected(env.org)
        assert sum(1 for _ in records_of(outcome, "resources")) == n_res
        assert sum(1 for _ in records_of(outcome, "grants")) == n_grants


@pytest.fixture(autouse=True)
def _no_leftovers(tmp_path):
    yield
    shutil.rmtree(tmp_path, ignore_errors=True)

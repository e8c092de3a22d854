"""m365_files against the Microsoft stand-in: counts and planted problems against the truth, the
call plan and its resource units, both credential kinds, incremental == full (a folder's sharing
changing what its files inherit included), a 410 on a delta link, faults, and the honest status
when something could not be read."""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest
from bags import records_of, run_json
from conftest import write_config

from collector.config import load_config
from collector.runner import run_connector
from evidence.model import canonical_json
from sandbox import microsoft
from sandbox.env import SandboxEnv
from sandbox.org import Org, Share
from sandbox.server import FaultRule
from sandbox.truth import counts, problems

FAST = "ru_per_minute = 10000000\n"


def options_of(ms: dict, *, cert: bool = False) -> str:
    authority = ms["authority"].removesuffix("/" + ms["tenant_id"])
    cred = (f'certificate_file = "{ms["certificate_file"]}"\nprivate_key_file = "{ms["private_key_file"]}"\n' if cert
            else f'client_secret_file = "{ms["client_secret_file"]}"\n')
    return (f'tenant_id = "{ms["tenant_id"]}"\nclient_id = "{ms["client_id"]}"\n{cred}'
            f'authority = "{authority}"\ngraph_url = "{ms["graph_url"]}"\nca_bundle = "{ms["ca_bundle"]}"\n')


def connector_toml(ms: dict, cid: str = "m365-files", extra: str = FAST, cert: bool = False) -> str:
    return f'[[connector]]\nid = "{cid}"\ntype = "m365_files"\n{options_of(ms, cert=cert)}{extra}'


def run(ms: dict, base: Path, *, cid: str = "m365-files", extra: str = FAST, cert: bool = False):
    cfg = load_config(write_config(base, connectors={f"{cid}.toml": connector_toml(ms, cid, extra, cert)}))
    entry = cfg.connector(cid)
    clients = entry.cls.make_clients(entry.config)
    clients.backoff_base_s = 0.01
    outcome = run_connector(cfg, entry, clients=clients)
    return outcome, run_json(outcome)


def normalised(outcome):
    return {s: sorted(canonical_json({"k": k, "r": v}) for k, v in records_of(outcome, s).items()) for s in ("resources", "grants")}


def rid(standin, f) -> str:
    """The resource id the connector gives an organisation file."""
    kind, index = ("od", f.owner) if f.drive is None else ("sp", f.drive)
    return f"m365:{standin.drive_id(kind, index)}:{standin.item_id(f.id)}"


def drive_rid(standin, kind: str, index: int) -> str:
    return f"m365:{standin.drive_id(kind, index)}"


def expected(org: Org) -> tuple[int, int]:
    """Resources and grants of a complete snapshot: every drive (its root's permissions: the OneDrive
    owner, or the library's members) and every file and folder, each with what it inherits (the
    drive's, its folder's sharing) plus its own sharing. The stand-in lists expired links too."""
    resources, grants = org.n + org.n_drives, 0
    for p in org.people():
        grants += 1
        for f in org.user_files(p.index):
            parent = org.find_file(f.parent) if f.parent else None
            resources += 1
            grants += 1 + len(f.shares) + (len(parent.shares) if parent else 0)
    for d in org.drives():
        grants += len(d.members)
        for f in org.drive_files(d.index):
            parent = org.find_file(f.parent) if f.parent else None
            resources += 1
            grants += len(d.members) + len(f.shares) + (len(parent.shares) if parent else 0)
    return resources, grants


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with SandboxEnv(tmp_path_factory.mktemp("sandbox"), google=False, aws=False) as e:
        yield e


@pytest.fixture
def clean(env):
    env.microsoft_standin.set_faults([])
    env.microsoft_standin.stats.reset()
    yield env
    env.microsoft_standin.set_faults([])


def test_full_snapshot_equals_the_truth(clean, tmp_path):
    env, s = clean, clean.microsoft_standin
    org = env.org
    outcome, info = run(env.endpoints["microsoft"], tmp_path)
    assert outcome.status == "complete", outcome.reasons
    assert info["mode"] == "full" and info["cursor"]["committed"]
    res, grants = records_of(outcome, "resources"), records_of(outcome, "grants")
    assert (len(res), len(grants)) == expected(org)
    c = counts(org)
    kinds = Counter(r["kind"] for r in res.values())
    assert kinds["drive"] == org.n + org.n_drives
    assert kinds["file"] + kinds["folder"] == c["my_drive_files"] + c["shared_drive_files"]

    by_resource: dict[str, list[dict]] = {}
    for g in grants.values():
        by_resource.setdefault(g["resource_id"], []).append(g)
    found = Counter()
    for p in problems(org):
        kind, subject = p["kind"], p["subject"]
        f = org.find_file(p["where"])
        if f is None:
            continue
        on = [g for g in by_resource[rid(s, f)] if g["via"] != "inherited"]
        if kind == "anyone_link":
            hit = [g for g in on if g["principal_id"] == "anyone"]
            assert hit and all(g["link_scope"] == "anyone" and g["external"] and g["via"] == "link" for g in hit), p
            assert all(g["expiry"] is None for g in hit)  # links without expiry: identifiable
        elif kind in ("share_external", "share_unapproved_domain", "share_expired"):
            hit = [g for g in on if g["principal_id"] == f"user:{subject}"]
            assert hit and all(g["external"] for g in hit), p
            assert all(g["principal_kind"] == "guest" and g["link_scope"] == "specific" for g in hit), p
            if kind == "share_expired":  # the stand-in still lists expired links: their expiry says so
                assert all(g["expiry"] and g["expiry"] < "2026-11-01" for g in hit), p
        elif kind == "suspended_owner_share":
            assert res[rid(s, f)]["owners"] == [f"user:{subject}"]
        else:
            continue
        found[kind] += 1
    assert {"anyone_link", "share_external", "share_unapproved_domain", "share_expired", "suspended_owner_share"} <= set(found)
    expiring = [g for g in grants.values() if g["expiry"] and g["expiry"] > "2026-11-01"]
    assert expiring and all(g["external"] for g in expiring)
    assert any(g["principal_kind"] == "guest" and g["role"] == "editor" for g in grants.values())  # guests who can edit
    domain_links = [g for g in grants.values() if g["link_scope"] == "organization"]
    assert domain_links and {g["principal_id"] for g in domain_links} == {"domain:example.co.jp"}
    assert not any(g["external"] for g in domain_links)

    # a library root's grants are its members; every plain item has exactly them, inherited from the drive
    d0 = org.drive(0)
    lib = drive_rid(s, "sp", 0)
    assert len(by_resource[lib]) == len(d0.members) and all(g["via"] in ("direct", "link") for g in by_resource[lib])
    assert any(g["principal_id"] == f"user:{org.guest(0).email}" and g["external"] for g in by_resource[lib])
    plain = next(f for f in org.drive_files(0) if not f.shares and f.parent and not org.find_file(f.parent).shares)
    inherited = by_resource[rid(s, plain)]
    assert sorted(g["grant_id"] for g in inherited) == sorted(g["grant_id"] for g in by_resource[lib])
    assert all(g["via"] == "inherited" and g["inherited_from"] == lib for g in inherited)
    # a file in a shared folder inherits the folder's sharing from the folder, the owner from the drive
    person, folder = next((p, f) for p in org.people() for f in org.user_files(p.index)
                          if f.folder and f.shares and any(not c.shares for c in org.user_files(p.index) if not c.folder))
    child = next(c for c in org.user_files(person.index) if not c.folder and not c.shares)
    got = {(g["principal_id"], g["inherited_from"]) for g in by_resource[rid(s, child)]}
    assert (f"user:{person.email}", drive_rid(s, "od", person.index)) in got
    assert all(g["via"] == "inherited" for g in by_resource[rid(s, child)])
    assert {o for _, o in got} == {drive_rid(s, "od", person.index), rid(s, folder)}
    # an item with its own sharing in a shared folder: its own grants direct/link, the rest inherited
    own = next((c for p in org.people() for c in org.user_files(p.index)
                if c.shares and c.parent and org.find_file(c.parent).shares), None)
    if own is not None:
        vias = Counter(g["via"] for g in by_resource[rid(s, own)])
        assert vias["inherited"] == 1 + len(org.find_file(own.parent).shares)
        assert vias["direct"] + vias["link"] == len(own.shares)


def test_call_plan_and_resource_units(clean, tmp_path):
    env, s = clean, clean.microsoft_standin
    org = env.org
    outcome, info = run(env.endpoints["microsoft"], tmp_path)
    assert outcome.status == "complete"
    stats = s.stats.snapshot()
    calls, units = stats["calls"], stats["units"]
    own = sum(1 for p in org.people() for f in org.user_files(p.index) if f.shares)
    own += sum(1 for d in org.drives() for f in org.drive_files(d.index) if f.shares)
    drives = org.n + org.n_drives
    assert calls["sites.getAllSites"] == 1 and calls["users.list"] == 1
    assert calls["sites.drives"] == org.n_drives and calls["sites.drive"] == org.n
    assert calls["drives.delta"] == drives                      # each drive one page
    assert calls["items.permissions"] == drives + own           # roots + items with their own sharing, nothing else
    # the drive listings, then one $batch per drive: a drive's own-permission items share them
    assert info["calls"]["batch"] == calls["batch"] == -(-org.n_drives // 20) - (-org.n // 20) + drives
    assert units["items.permissions"] == 5 * (drives + own) and units["drives.delta"] == 2 * drives
    assert info["units"] == {k: v for k, v in units.items() if not k.startswith("login.") and k != "batch"} | {"batch": 0}
    assert info["calls"]["items.permissions"] == calls["items.permissions"]


def test_certificate_credential_and_a_misleading_ca_variable(clean, tmp_path, monkeypatch):
    env = clean
    bogus = tmp_path / "other-ca.pem"
    bogus.write_text("not a certificate\n")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bogus))   # requests would prefer it to Session.verify
    monkeypatch.setenv("CURL_CA_BUNDLE", str(bogus))
    outcome, info = run(env.endpoints["microsoft"], tmp_path, cert=True)
    assert outcome.status == "complete", outcome.reasons
    assert "certificate" in info["identity"]
    assert sum(1 for _ in records_of(outcome, "resources")) == expected(env.org)[0]
    secret, _ = run(env.endpoints["microsoft"], tmp_path / "s")
    assert secret.status == "complete" and normalised(secret) == normalised(outcome)


def _mutate(org: Org):
    """Sharing changes of every kind the delta feed reports, on OneDrive and SharePoint, on files
    and on folders (which changes what the files in them inherit)."""
    person = next(p for p in org.people() if org.file_count(p.index) > 4 and not p.suspended and p.index > 12)
    files = list(org.user_files(person.index))
    org.share(files[1].id, Share(f"{files[1].id}p9", "anyone", "reader"))
    shared = next(f for p in org.people() for f in org.user_files(p.index) if not f.folder and f.shares and p.index != person.index)
    org.unshare(shared.id, shared.shares[0].id)
    org.delete_file(files[2].id)
    plain = next(f for f in org.drive_files(0) if not f.shares and not f.folder)
    org.share(plain.id, Share(f"{plain.id}p9", "user", "writer", email=org.guest(0).email))
    own = next(f for f in org.drive_files(2) if f.shares and not f.folder)
    org.unshare(own.id, own.shares[0].id)
    # a folder shared that was not: its plain files now inherit the guest from it
    q, folder = next((p, f) for p in org.people() for f in org.user_files(p.index)
                     if f.folder and not f.shares and p.index != person.index
                     and sum(1 for c in org.user_files(p.index) if not c.folder) >= 2)
    org.share(folder.id, Share(f"{folder.id}p9", "user", "reader", email=org.guest(1).email))
    # a folder unshared: its files inherit the drive's grants only
    r, shared_folder = next((p, f) for p in org.people() for f in org.user_files(p.index)
                            if f.folder and f.shares and p.index not in (person.index, q.index))
    for sh in shared_folder.shares:
        org.unshare(shared_folder.id, sh.id)
    return q, folder, r, shared_folder


def test_incremental_equals_a_fresh_full_run(tmp_path):
    with SandboxEnv(tmp_path / "sb", google=False, aws=False) as env:
        ms, s, org = env.endpoints["microsoft"], env.microsoft_standin, env.org
        first, info1 = run(ms, tmp_path / "a")
        assert first.status == "complete" and info1["mode"] == "full" and info1["cursor"]["committed"]
        q, folder, r, unshared = _mutate(org)
        second, info2 = run(ms, tmp_path / "a")
        assert second.status == "complete", second.reasons
        assert info2["mode"] == "incremental", info2["notes"]["mode_reason"]
        notes = info2["notes"]
        assert notes["base"]["tagmanifest_sha256"] == first.bag.digest
        assert notes["changes_applied"]["items_removed"] == 1
        assert notes["changes_applied"]["drives_with_changes"] == len({(c["drive"], c["owner"]) for c in org.overlay.changes})
        assert {c["change"] for c in notes["changes"]} == {"removed", "sharing changed", "updated"}
        fresh, info3 = run(ms, tmp_path / "b", extra=FAST + "incremental = false\n")
        assert fresh.status == "complete" and info3["mode"] == "full"
        assert normalised(second) == normalised(fresh)
        assert normalised(second) != normalised(first)
        # what the folder's new sharing did to the files in it
        grants = records_of(second, "grants")
        plain = [c for c in org.user_files(q.index) if not c.folder and not c.shares]
        for c in plain:
            mine = [g for g in grants.values() if g["resource_id"] == rid(s, c)]
            assert any(g["principal_id"] == f"user:{org.guest(1).email}" and g["inherited_from"] == rid(s, folder)
                       for g in mine), c.id
        for c in (c for c in org.user_files(r.index) if not c.folder):
            assert not any(g["inherited_from"] == rid(s, unshared) for g in grants.values() if g["resource_id"] == rid(s, c))
        # the incremental run costs what changed, not what exists: measured 122 RU against 490 for
        # the full run (25%), of which 52 are the site and drive listing and one delta page per drive
        full_units = sum(info1["units"].values())
        inc_units = sum(info2["units"].values())
        assert inc_units < 0.3 * full_units, (info2["units"], info1["units"])
        assert info2["units"]["items.permissions"] < 0.2 * info1["units"]["items.permissions"]
        # and a third run on top of the incremental one still agrees
        f = next(f for f in org.drive_files(1) if not f.folder and not f.shares)
        org.share(f.id, Share(f"{f.id}p8", "domain", "reader", domain=org.domain))
        third, info4 = run(ms, tmp_path / "a")
        fresh2, _ = run(ms, tmp_path / "c", extra=FAST + "incremental = false\n")
        assert info4["mode"] == "incremental" and normalised(third) == normalised(fresh2)
        # nothing changed: a run reads one delta page per drive and no permissions
        fourth, info5 = run(ms, tmp_path / "a")
        assert info5["mode"] == "incremental" and normalised(fourth) == normalised(third)
        assert "items.permissions" not in info5["calls"]
        assert info5["units"]["drives.delta"] == org.n + org.n_drives


def test_a_410_on_a_delta_link_walks_that_drive_again(tmp_path):
    with SandboxEnv(tmp_path / "sb", google=False, aws=False) as env:
        ms, s, org = env.endpoints["microsoft"], env.microsoft_standin, env.org
        first, _ = run(ms, tmp_path / "a")
        assert first.status == "complete"
        gone = s.drive_id("sp", 1)
        s.invalidate_delta_tokens(gone)
        f = next(f for f in org.drive_files(1) if not f.folder and not f.shares)
        org.share(f.id, Share(f"{f.id}p9", "anyone", "writer"))     # a change in the resynced drive
        g = next(f for f in org.user_files(5) if not f.folder)
        org.share(g.id, Share(f"{g.id}p9", "user", "reader", email=org.guest(2).email))  # and elsewhere
        second, info = run(ms, tmp_path / "a")
        assert second.status == "complete", second.reasons
        assert info["mode"] == "incremental"
        assert [r["drive"] for r in info["notes"]["drives_resynced"]] == [gone]
        assert "resyncRequired" in info["notes"]["drives_resynced"][0]["reason"]
        assert info["cursor"]["committed"] and gone in info["cursor"]["after"]["drives"]
        fresh, _ = run(ms, tmp_path / "b", extra=FAST + "incremental = false\n")
        assert normalised(second) == normalised(fresh)


def test_a_changed_base_bag_means_a_full_run(tmp_path):
    with SandboxEnv(tmp_path / "sb", google=False, aws=False) as env:
        ms = env.endpoints["microsoft"]
        first, _ = run(ms, tmp_path / "a")
        path = first.bag.path / "data" / "records" / "grants.jsonl.gz"
        path.chmod(0o640)
        data = bytearray(path.read_bytes())
        data[-10] ^= 0xFF
        path.write_bytes(bytes(data))
        second, info = run(ms, tmp_path / "a")
        assert info["mode"] == "full" and "changed since it was sealed" in info["notes"]["mode_reason"]
        assert second.status == "complete"


def _own_standin(tmp_path: Path, **options):
    """A stand-in of our own (options SandboxEnv does not pass), with credentials written 0600."""
    org = Org(1, "small")
    server, standin = microsoft.start(org, workdir=tmp_path / "ms", **options)
    app = standin.app_info()
    secret = tmp_path / "ms" / "secret"
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(app.client_secret)
    ms = {"authority": app.authority, "tenant_id": app.tenant_id, "client_id": app.client_id,
          "client_secret_file": str(secret), "graph_url": app.graph_url, "ca_bundle": str(standin.ca_file)}
    return server, standin, org, ms


def test_throttling_errors_expired_tokens_and_drops_are_survived(tmp_path):
    server, s, org, ms = _own_standin(tmp_path, token_ttl_s=0.4)
    try:
        s.set_faults([
            FaultRule("items.permissions", throttle_next=30, retry_after_s=1),   # inside $batch: re-batched
            FaultRule("sites.drive", throttle_next=3, retry_after_s=1),
            FaultRule("sites.getAllSites", fail_next=2),                          # 503 + Retry-After
            FaultRule("users.list", throttle_next=1, retry_after_s=1),
            FaultRule("drives.delta", drop_rate=0.3),                             # connections closed unanswered
            FaultRule("*", latency_ms=3),                                         # long enough for tokens to expire
        ])
        outcome, info = run(ms, tmp_path / "a")
        assert outcome.status == "complete", outcome.reasons
        assert info["throttled"]["items.permissions"] == 30 and info["throttle_wait_s"] >= 1
        assert info["retries"]["items.permissions"] >= 30 and info["retries"]["sites.getAllSites"] >= 2
        st = s.stats.snapshot()
        assert st["throttled"]["items.permissions"] == 30 and st["errors"]["sites.getAllSites"] == 2
        assert st["calls"]["login.token"] > 2                         # tokens died and were renewed mid-run
        assert st["dropped"]["drives.delta"] >= 1 and info["retries"]["drives.delta"] >= st["dropped"]["drives.delta"]
        assert sum(1 for _ in records_of(outcome, "grants")) == expected(org)[1]
    finally:
        server.close()


def test_a_drive_that_cannot_be_read_makes_the_run_partial_and_named(clean, tmp_path):
    env, s = clean, clean.microsoft_standin
    bad = s.drive_id("od", 3)
    # every delta page of one drive fails (503), whatever is retried
    s.set_faults([FaultRule("drives.delta", error_rate=1.0, error_status=500)])
    outcome, info = run(env.endpoints["microsoft"], tmp_path, extra=FAST + "max_retries = 1\n")
    assert outcome.status == "partial"
    named = sorted(e["where"] for e in info["errors"])
    assert len(named) == env.org.n + env.org.n_drives and any(bad in w for w in named)
    assert any(f"OneDrive of {env.org.person(3).email}" in w for w in named)
    assert all("gave up after 1 retries: 500" in e["message"] for e in info["errors"])
    assert not info["cursor"]["committed"]
    s.set_faults([])
    # and one failing permissions read: partial, the item named, no cursor
    f = next(f for f in env.org.user_files(2) if f.shares)
    s.set_faults([FaultRule("items.permissions", fail_next=1000, error_status=500)])
    second, info2 = run(env.endpoints["microsoft"], tmp_path / "b", extra=FAST + "max_retries = 1\n")
    assert second.status == "partial" and not info2["cursor"]["committed"]
    assert any(rid(s, f) in e["where"] for e in info2["errors"])


def test_a_failure_while_applying_changes_keeps_the_base_and_no_key_twice(tmp_path):
    with SandboxEnv(tmp_path / "sb", google=False, aws=False) as env:
        ms, s, org = env.endpoints["microsoft"], env.microsoft_standin, env.org
        first, _ = run(ms, tmp_path / "a")
        _mutate(org)
        s.set_faults([FaultRule("items.permissions", error_rate=0.5, error_status=500)])
        second, info = run(ms, tmp_path / "a", extra=FAST + "max_retries = 0\n")
        assert info["mode"] == "incremental" and second.status == "partial"
        assert not any("share a key" in r for r in second.reasons), second.reasons
        assert not info["cursor"]["committed"]
        assert all(e["where"].startswith("permissions of m365:") for e in info["errors"])
        s.set_faults([])
        # the next run builds on the last complete bag again, and agrees with a full one
        third, info3 = run(ms, tmp_path / "a")
        fresh, _ = run(ms, tmp_path / "b", extra=FAST + "incremental = false\n")
        assert info3["mode"] == "incremental" and info3["notes"]["base"]["run_id"] == first.run_id
        assert normalised(third) == normalised(fresh)


def test_the_budget_paces_the_calls(clean, tmp_path):
    """With the SharePoint budget set, the collector stays under it instead of being throttled."""
    env, s = clean, clean.microsoft_standin
    budget = 6000
    s.set_faults([FaultRule("*", quota=budget, quota_units=True, quota_per="global", quota_window_s=60)])
    started = time.monotonic()
    outcome, info = run(env.endpoints["microsoft"], tmp_path, extra=f"ru_per_minute = {budget}\n")
    elapsed = time.monotonic() - started
    assert outcome.status == "complete"
    spent = sum(info["units"].values())
    burst = budget * 0.02
    assert elapsed >= 0.9 * (spent - burst) / ((budget - burst) / 60)
    assert not s.stats.snapshot()["throttled"] and not info["throttled"]


def test_check_names_a_missing_permission(clean):
    env, s = clean, clean.microsoft_standin
    cfg = load_config(write_config(Path(env.workdir) / "check", connectors={"m.toml": connector_toml(env.endpoints["microsoft"])}))
    entry = cfg.connectors[0]
    assert entry.cls(entry.config, entry.cls.make_clients(entry.config)).check().ok
    s.set_app_roles(["User.Read.All"])
    try:
        result = entry.cls(entry.config, entry.cls.make_clients(entry.config)).check()
    finally:
        s.set_app_roles(microsoft.DEFAULT_APP_ROLES)
    assert not result.ok
    bad = [i for i in result.items if not i.ok]
    assert [i.name for i in bad] == ["sites (getAllSites)"] and "Sites.Read.All" in bad[0].detail


def test_medium_tenant_counts(tmp_path):
    with SandboxEnv(tmp_path / "sb", size="medium", google=False, aws=False) as env:
        outcome, info = run(env.endpoints["microsoft"], tmp_path / "a")
        assert outcome.status == "complete"
        assert info["notes"]["scanned"]["drives"] == env.org.n + env.org.n_drives
        n_res, n_grants = expected(env.org)
        assert sum(1 for _ in records_of(outcome, "resources")) == n_res
        assert sum(1 for _ in records_of(outcome, "grants")) == n_grants


def test_no_secret_or_link_url_reaches_the_vault(clean, tmp_path):
    env = clean
    outcome, _ = run(env.endpoints["microsoft"], tmp_path)
    secret = Path(env.endpoints["microsoft"]["client_secret_file"]).read_text().strip()
    import gzip

    for path in outcome.bag.path.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            if path.suffix == ".gz":
                data = gzip.decompress(data)
            assert secret.encode() not in data, path
            if "records" in path.parts:
                assert b"/:r:/g/" not in data and b"/:w:/g/" not in data, path  # sharing-link URLs


@pytest.fixture(autouse=True)
def _no_leftovers(tmp_path):
    yield
    shutil.rmtree(tmp_path, ignore_errors=True)



# -- the mapping on shapes the stand-in does not serve ---------------------------------------------

def test_permission_shapes_map_to_grants():
    from connectors.base import Organization
    from connectors.m365_files import mapping as m

    org = Organization("Example", ("example.co.jp",))
    grants = lambda p, **kw: [r.data for r in m.permission_grants("m365:d:i", p, org, scope="site1", tenant="t", **kw)]
    assert m.real_address("alice_partner.co.jp#EXT#@tenant.onmicrosoft.com") == ("alice@partner.co.jp", True)
    assert m.real_address("i:0#.f|membership|bob_x.example#ext#@t.onmicrosoft.com") == ("bob@x.example", True)
    assert m.real_address("Carol@Example.co.jp") == ("carol@example.co.jp", False)
    # an anonymous edit link with a password and an expiry
    [g] = grants({"id": "p1", "roles": ["write"], "hasPassword": True, "expirationDateTime": "2027-01-01T00:00:00Z",
                  "link": {"scope": "anonymous", "type": "edit", "webUrl": "https://secret/link"}})
    assert (g["principal_id"], g["role"], g["raw_role"], g["via"], g["link_scope"], g["external"], g["expiry"]) == (
        "anyone", "editor", "edit", "link", "anyone", True, "2027-01-01T00:00:00Z")
    assert g["attributes"]["has_password"] is True and "secret" not in canonical_json(g)
    # an organisation link: the organisation's pseudo principal, not external; who used it is noted
    [g] = grants({"id": "p2", "roles": ["read"], "link": {"scope": "organization", "type": "view"},
                  "grantedToIdentitiesV2": [{"user": {"id": "u1", "email": "dan@example.co.jp"}}]})
    assert (g["principal_id"], g["principal_kind"], g["external"], g["role"]) == ("domain:example.co.jp", "domain", False, "viewer")
    assert g["attributes"]["used_by"] == ["user:dan@example.co.jp"]
    # a specific-people review link to a guest known only by its #EXT# login, plus an invitation
    out = grants({"id": "p3", "roles": ["read"], "link": {"scope": "users", "type": "review"},
                  "grantedToIdentitiesV2": [{"siteUser": {"id": "7", "loginName": "i:0#.f|membership|eve_partner.example#ext#@t.onmicrosoft.com"}}],
                  "invitation": {"email": "frank@other.example", "signInRequired": True}})
    assert [(g["principal_id"], g["principal_kind"], g["external"], g["role"], g["link_scope"]) for g in out] == [
        ("user:eve@partner.example", "guest", True, "commenter", "specific"),
        ("user:frank@other.example", "user", True, "commenter", "specific")]
    # direct grants: an Entra group without mail, a SharePoint site group, an app; inheritedFrom
    [g] = grants({"id": "p4", "roles": ["write"], "grantedToV2": {"group": {"id": "g-1", "displayName": "Team"}}})
    assert (g["principal_id"], g["principal_kind"], g["via"], g["role"]) == ("group:entra:g-1", "group", "direct", "editor")
    [g] = grants({"id": "p5", "roles": ["owner"], "grantedToV2": {"siteGroup": {"id": "3", "displayName": "Owners"}}})
    assert (g["principal_id"], g["role"], g["external"]) == ("site_group:site1:3", "owner", None)
    [g] = grants({"id": "p6", "roles": ["read"], "grantedToV2": {"application": {"id": "app-9"}}})
    assert (g["principal_id"], g["principal_kind"]) == ("app:app-9", "service_account")
    [g] = [r.data for r in m.item_grants("m365:d:i", [{"id": "p7", "roles": ["read"], "inheritedFrom": {"id": "folder"},
                                                        "grantedToV2": {"user": {"email": "g@example.co.jp"}}}],
                                          org, scope="s", tenant="t", from_source={}, rid_of_item=lambda i: f"m365:d:{i}")]
    assert (g["via"], g["inherited_from"]) == ("inherited", "m365:d:folder")
    # what an item without its own permissions gets from its source: the same grant, inherited from where it is set
    child = m.inherit(g, "m365:d:child", "m365:d:i").data
    assert (child["resource_id"], child["via"], child["inherited_from"]) == ("m365:d:child", "inherited", "m365:d:folder")
    direct = grants({"id": "p8", "roles": ["write"], "grantedToV2": {"user": {"email": "h@example.co.jp"}}})[0]
    assert m.inherit(direct, "m365:d:child", "m365:d:i").data["inherited_from"] == "m365:d:i"


def test_the_example_config_loads_and_both_copies_agree(tmp_path):
    root = Path(__file__).resolve().parents[2]
    text = (root / "collector" / "templates" / "m365-files.toml.example").read_text(encoding="utf-8")
    assert (root / "config" / "connectors" / "m365-files.toml.example").read_text(encoding="utf-8") == text
    cfg = load_config(write_config(tmp_path, connectors={"m365-files.toml": text}))
    entry = cfg.connector("m365-files")
    assert entry.type == "m365_files" and entry.config.client_secret_file == Path("/etc/shoseki/m365-client-secret")
    assert (entry.config.ru_per_minute, entry.config.full_every_days, entry.config.incremental) == (1200, 7, True)
    for perm in entry.cls.permissions + ("Sites.FullControl.All",):
        assert perm in text
    clients = entry.cls.make_clients(entry.config)
    assert clients.user_agent.startswith("NONISV|shoseki|shoseki/") and clients.budget.project_per_minute == 1200

"""Acceptance: judging the sandbox organisation collected by all six connectors.

The full set of findings must equal the set :mod:`sandbox.expected` derives from the Org alone:
every planted problem becomes exactly its finding, in every source that sees it, and nothing
else is reported. Exceptions cover a finding until their end date, then it returns as expired.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from collector.config import load_config
from collector.context import load_context
from collector.runner import run_connector
from evidence.controls import load_catalogue
from evidence.findings import assess, select_bundles, settings_from_config
from evidence.vault import Vault
from sandbox.env import SandboxEnv
from sandbox.expected import TENANT_RULES, expected_findings
from sandbox.org import REFERENCE_TIME

AS_OF = REFERENCE_TIME + timedelta(days=1)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    base = tmp_path_factory.mktemp("judge")
    with SandboxEnv(base / "sbx", size="small") as env:
        main = env.write_config(base / "config", base / "vault")
        cfg = load_config(main)
        for entry in cfg.connectors:
            outcome = run_connector(cfg, entry)
            assert outcome.bag.status == "complete", (entry.id, outcome.bag.status)
        yield env, cfg


def judge(env, cfg, *, as_of=AS_OF, context_dir: Path | None = None):
    vault = Vault(cfg.main.vault.path)
    bundles = select_bundles(vault, cfg.connectors, datetime.now(timezone.utc))
    context = load_context(context_dir or cfg.path.parent)
    return assess(vault, bundles, context, as_of=as_of, settings=settings_from_config(cfg),
                  catalogue=load_catalogue(cfg.path.parent), organization=cfg.main.organization.name,
                  domains=cfg.main.organization.domains)


def keys(findings):
    return {(f.rule, f.connector_id, None if f.rule in TENANT_RULES else f.resource, f.principal) for f in findings}


def expected(env, cfg, as_of=AS_OF):
    ms = env.microsoft_standin

    def m365(f, kind, index):
        drive = f"m365:{ms.drive_id(kind, index)}"
        return f"{drive}:{ms.item_id(f.id)}" if f is not None else drive

    return expected_findings(env.org, as_of=as_of, connectors={c.type: c.id for c in cfg.connectors},
                             m365_ids=m365, aws_account_id=env.endpoints["aws"]["account_id"])


def test_every_planted_problem_and_nothing_else(collected):
    env, cfg = collected
    got, want = keys(judge(env, cfg).findings), expected(env, cfg)
    missing, extra = sorted(want - got, key=str), sorted(got - want, key=str)
    assert not missing and not extra, f"missing {len(missing)}: {missing[:15]}\nextra {len(extra)}: {extra[:15]}"


def test_every_truth_problem_is_a_finding(collected):
    """Each problem of sandbox-truth.json (Google's source terms) is reported by the source that holds it."""
    env, cfg = collected
    ids = {c.type: c.id for c in cfg.connectors}
    got = keys(judge(env, cfg, as_of=REFERENCE_TIME + timedelta(hours=1)).findings)
    truth = json.loads((env.workdir / "context" / "sandbox-truth.json").read_text(encoding="utf-8"))
    directory, drive = ids["google_directory"], ids["google_drive"]
    rule_for = {
        "admin_without_mfa": ("admin_without_mfa", directory, None), "no_mfa": ("account_without_mfa", directory, None),
        "leaver_enabled": ("leaver_enabled", directory, None), "inactive_account": ("inactive_account", directory, None),
        "contractor_after_contract_end": ("contractor_after_end", directory, None),
        "guest_unapproved_domain": ("unapproved_domain", ids["entra_id"], None),
        "guest_without_sponsor": ("guest_without_sponsor", ids["entra_id"], None),
        "guest_inactive": ("guest_inactive", ids["entra_id"], None),
        "group_unapproved_member": ("unapproved_domain", directory, "group"),
        "anyone_link": ("public_share", drive, "file"), "share_unapproved_domain": ("unapproved_domain", drive, "file"),
        "suspended_owner_share": ("leaver_owns_shared", drive, "file"), "single_owner": ("single_owner", drive, "file"),
    }
    unmatched = []
    for p in truth["problems"]:
        if p["kind"] not in rule_for:
            continue  # approved contractors' shares and memberships, expired shares: not problems by themselves
        if p.get("detail") == "never" and _new_account(env.org, p["subject"], REFERENCE_TIME):
            continue  # never signed in, but created within the inactivity window: not inactive yet (README)
        rule, cid, where = rule_for[p["kind"]]
        subject = "anyone" if p["subject"] == "anyone" else f"user:{p['subject']}"
        resource = None if where is None else (f"group:{p['where']}" if where == "group" else p["where"])
        if (rule, cid, resource, subject) not in got:
            unmatched.append(p)
    assert not unmatched, unmatched[:10]


def _new_account(org, email, as_of, days=90):
    account = org.person_by_email(email) or org.guest_by_email(email)
    return account.created > as_of - timedelta(days=days)


def test_findings_carry_evidence_controls_and_texts(collected):
    env, cfg = collected
    a = judge(env, cfg)
    vault = Vault(cfg.main.vault.path)
    for f in a.findings:
        assert f.controls, f.rule
        for ev in f.evidence:
            assert (vault.root / ev.bag / "bag-info.txt").exists()
            if ev.stream != "run":
                records = dict(_records(vault.root / ev.bag, ev.stream))
                assert ev.key in records, (f.rule, ev)
    assert len({f.id for f in a.findings}) == len(a.findings)
    holders = {h.principal for h in a.privileged if h.top}
    assert f"user:{env.org.person(1).email}" in holders
    (entry,) = a.register
    assert entry.resources > 0 and any(not x.allowed for x in entry.accessors) and any(x.allowed for x in entry.accessors)


def _records(bag: Path, stream: str):
    import gzip

    with gzip.open(bag / "data" / "records" / f"{stream}.jsonl.gz", "rt", encoding="utf-8") as f:
        for line in f:
            obj = json.loads(line)
            yield obj["key"], obj["record"]


def test_an_exception_covers_its_finding_until_it_ends(collected, tmp_path):
    env, cfg = collected
    person = env.org.person(1)  # the admin without MFA
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    for name in ("contractors.toml", "register.toml", "roster.csv"):
        (ctx / name).write_text((cfg.path.parent / name).read_text(encoding="utf-8"), encoding="utf-8")
    (ctx / "exceptions.toml").write_text(
        "[[exception]]\n"
        'rule = "admin_without_mfa"\n'
        f'principal = "user:{person.email}"\n'
        'reason = "ハードウェアキー配布待ち / waiting for a hardware key"\n'
        f'approved_by = "{env.org.person(0).email}"\n'
        "approved_on = 2026-10-01\n"
        "valid_until = 2026-11-15\n",
        encoding="utf-8",
    )

    def statuses(as_of):
        return {(f.connector_id, f.status, f.exception) for f in judge(env, cfg, as_of=as_of, context_dir=ctx).findings
                if f.rule == "admin_without_mfa" and f.principal == f"user:{person.email}"}

    during = statuses(datetime(2026, 11, 15, 12, tzinfo=timezone.utc))
    after = statuses(datetime(2026, 11, 16, 12, tzinfo=timezone.utc))
    assert during == {("google-directory", "excepted", 1), ("entra-id", "excepted", 1)}
    assert after == {("google-directory", "exception_expired", 1), ("entra-id", "exception_expired", 1)}
    # the other admin findings are untouched
    others = [f for f in judge(env, cfg, context_dir=ctx).findings if f.rule == "admin_without_mfa" and f.principal != f"user:{person.email}"]
    assert others and all(f.status == "open" for f in others)


def _context_copy(cfg, tmp_path: Path, roster_edit=None) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(exist_ok=True)
    for name in ("contractors.toml", "register.toml", "roster.csv"):
        text = (cfg.path.parent / name).read_text(encoding="utf-8")
        if name == "roster.csv" and roster_edit is not None:
            text = roster_edit(text)
        (ctx / name).write_text(text, encoding="utf-8")
    return ctx


def test_accounts_missing_from_the_roster_are_reported_in_every_source(collected, tmp_path):
    env, cfg = collected
    gone = env.org.person(12)  # an ordinary employee, with an IAM user too if engineering/IT
    ctx = _context_copy(cfg, tmp_path, lambda text: "".join(
        line for line in text.splitlines(keepends=True) if not line.startswith(gone.email + ",")))
    found = {(f.connector_id, f.principal) for f in judge(env, cfg, context_dir=ctx).findings if f.rule == "not_on_roster"}
    want = {("google-directory", f"user:{gone.email}"), ("entra-id", f"user:{gone.email}")}
    if gone.aws:
        want.add(("aws-iam", f"arn:aws:iam::{env.endpoints['aws']['account_id']}:user/{gone.email.split('@')[0]}"))
    assert found == want


def test_a_shared_drive_whose_managers_all_left_is_reported(collected, tmp_path):
    env, cfg = collected
    drive = env.org.drive(2)
    managers = {m.email for m in drive.members if m.role == "organizer"}
    assert len(managers) == 2

    def leave(text: str) -> str:
        out = []
        for line in text.splitlines(keepends=True):
            cells = line.rstrip("\n").split(",")
            if cells[0] in managers:
                cells[4], cells[6] = "leaver", "2026-10-01"
            out.append(",".join(cells) + "\n")
        return "".join(out)

    a = judge(env, cfg, context_dir=_context_copy(cfg, tmp_path, leave))
    ms = env.microsoft_standin
    got = {(f.connector_id, f.resource) for f in a.findings if f.rule == "leaver_only_owner"}
    assert got == {("google-drive", drive.id), ("m365-files", f"m365:{ms.drive_id('sp', 2)}")}
    assert not [f for f in a.findings if f.rule == "single_owner" and f.resource == drive.id]


def test_a_larger_organisation(tmp_path):
    """200 people (seed 5): random rates plant more admins (too many top administrators), a shared
    drive managed only by leavers, more leavers and contractors; the full set must still match."""
    with SandboxEnv(tmp_path / "sbx", size=200, seed=5) as env:
        cfg = load_config(env.write_config(tmp_path / "config", tmp_path / "vault"))
        for entry in cfg.connectors:
            assert run_connector(cfg, entry).bag.status == "complete", entry.id
        got, want = keys(judge(env, cfg).findings), expected(env, cfg)
        missing, extra = sorted(want - got, key=str), sorted(got - want, key=str)
        assert not missing and not extra, f"missing {len(missing)}: {missing[:15]}\\nextra {len(extra)}: {extra[:15]}"
        assert len(got) > 300
        assert {"privileged_too_many", "leaver_only_owner"} <= {rule for rule, *_ in got}


def test_accounts_and_sharing_rows(collected):
    env, cfg = collected
    from evidence.findings import iter_accounts, iter_sharing

    vault = Vault(cfg.main.vault.path)
    bundles = select_bundles(vault, cfg.connectors, datetime.now(timezone.utc))
    context = load_context(cfg.path.parent)
    accounts = list(iter_accounts(vault, bundles, context))
    google = [r for r in accounts if r["connector_id"] == "google-directory"]
    assert len(google) == env.org.n and all(r["on_roster"] for r in google)
    guests = [r for r in accounts if r["kind"] == "guest"]
    assert len(guests) == env.org.n_guests and not any(r["on_roster"] for r in guests)
    rows = list(iter_sharing(vault, bundles, context, as_of=AS_OF, domains=cfg.main.organization.domains))
    want = expected(env, cfg)
    for cid in ("google-drive", "m365-files", "aws-s3"):
        anyone = {r["resource"] for r in rows if r["connector_id"] == cid and r["audience"] == "anyone"}
        assert anyone == {res for rule, c, res, _ in want if c == cid and rule == "public_share"}
    unapproved = {(r["connector_id"], r["resource"], r["principal"]) for r in rows if r["audience"] == "unapproved"}
    assert unapproved == {(c, res, p) for rule, c, res, p in want
                          if rule == "unapproved_domain" and c in ("google-drive", "m365-files", "aws-s3", "aws-iam")}
    assert all(r["resource_name"] for r in rows if r["connector_id"] == "google-drive")


def test_the_sandbox_report_in_a_real_browser(collected):
    """The report of the whole sandbox organisation, opened from file:// in headless chromium:
    no errors, no network, every finding's evidence link lands on the record it names."""
    from html.parser import HTMLParser
    from urllib.parse import urlparse

    from browser import load, require_browser

    from collector.runner import load_signing_key
    from evidence.report import build_report

    require_browser()
    env, cfg = collected
    result = build_report(cfg, signing_key=load_signing_key(cfg))
    artifacts = Path(__file__).resolve().parent.parent / "artifacts"
    visit = load(result.index, screenshot=artifacts / "report-sandbox.png", click_all_details=True, full_page=False)
    assert visit.console_errors == [] and visit.page_errors == [] and visit.network_requests == []
    assert "個人情報管理台帳" in visit.text and "多要素認証 (MFA) のない管理者" in visit.text

    class Anchors(HTMLParser):
        def __init__(self):
            super().__init__()
            self.text: dict[str, list[str]] = {}
            self.open: list[str] = []

        def handle_starttag(self, tag, attrs):
            ident = dict(attrs).get("id")
            if ident and ident.startswith("ev-"):
                self.text[ident] = []
                self.open.append(ident)

        def handle_data(self, data):
            for ident in self.open:
                self.text[ident].append(data)

        def handle_endtag(self, tag):
            if self.open and tag == "div":  # each record is one <div class="ev" id="ev-…">
                self.open.pop()

    anchors = Anchors()
    anchors.feed(result.index.read_text(encoding="utf-8"))
    linked = {urlparse(link).fragment for link in visit.links if urlparse(link).fragment.startswith("ev-")}
    refs = {r.anchor: r for f in result.assessment.findings for r in f.evidence}
    vault, bags = Vault(cfg.main.vault.path), {}
    assert set(refs) <= linked
    for anchor, ref in refs.items():
        assert anchor in anchors.text, f"no element for {ref}"
        if ref.stream != "run":
            shown = "".join(anchors.text[anchor])
            if (ref.bag, ref.stream) not in bags:
                bags[ref.bag, ref.stream] = dict(_records(vault.root / ref.bag, ref.stream))
            record = bags[ref.bag, ref.stream][ref.key]
            assert ref.key in shown, f"{anchor} does not name the record {ref.key}"
            assert all(f'"{field}": ' in shown for field in record), f"{anchor} does not show the record {ref.key}"

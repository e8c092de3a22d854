"""The report bundle (evidence.report): sealed and chained like a collection bag, its payload.

The assessment here is built by hand (tests/support/report_sample.py) over real signed
local_files bags, so these tests pin the report itself, not the rules that judge.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shutil
import subprocess
from datetime import date, datetime, timedelta, timezone
from html.parser import HTMLParser
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from report_sample import (
    INJECTION, FakeCatalogue, collect, collected_vault, judged, sample_assessment, seal_sample, use_sample_tables,
)

from collector.context import Context
from collector.state import Catalogue, rebuild
from evidence import ledger, report
from evidence.findings.model import Assessment, EvidenceRef
from evidence.report import (
    Baseline, BaselineBag, Period, ReportInputError, end_of_day, instant_for_date, load_evidence,
    resolve_period,
)
from evidence.verify import read_bag_info, verify_vault
from evidence.vault import AlreadyRunning

TOKYO = ZoneInfo("Asia/Tokyo")
NOW = datetime(2026, 11, 26, 3, 0, tzinfo=timezone.utc)  # 12:00 in Tokyo


@pytest.fixture
def sample(tmp_path, monkeypatch):
    use_sample_tables(monkeypatch)
    config, vault, key, share = collected_vault(tmp_path)
    return config, vault, key, share


def _csv(path: Path) -> list[list[str]]:
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf"), f"{path.name} has no BOM"
    return list(csv.reader(io.StringIO(raw[3:].decode("utf-8"), newline="")))


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and "href" in a:
            self.hrefs.append(a["href"])
        if tag in ("script", "link", "img", "iframe") or a.get("src"):
            self.external.append(f"<{tag} {a}>")


def _page(path: Path) -> _Ids:
    parser = _Ids()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser


# -- the instant judged -----------------------------------------------------------------------------


def test_end_of_day_is_the_last_instant_of_the_local_day():
    assert end_of_day(date(2026, 11, 25), TOKYO) == datetime(2026, 11, 25, 14, 59, 59, 999999, tzinfo=timezone.utc)


def test_a_past_day_is_judged_at_its_end_today_at_now_and_a_future_day_is_refused():
    assert instant_for_date(date(2026, 11, 25), TOKYO, NOW) == end_of_day(date(2026, 11, 25), TOKYO)
    assert instant_for_date(date(2026, 11, 26), TOKYO, NOW) == NOW
    with pytest.raises(ReportInputError, match="2026-11-27 is after today \\(2026-11-26 in Asia/Tokyo\\)"):
        instant_for_date(date(2026, 11, 27), TOKYO, NOW)


@pytest.mark.parametrize("kwargs, message", [
    ({"date_from": date(2026, 11, 1)}, "--from needs --to"),
    ({"date_to": date(2026, 11, 1)}, "--to needs --from"),
    ({"date_from": date(2026, 11, 2), "date_to": date(2026, 11, 1)}, "--from 2026-11-02 is after --to 2026-11-01"),
    ({"as_of": NOW - timedelta(days=1), "date_from": date(2026, 11, 1), "date_to": date(2026, 11, 2)},
     "--as-of cannot be combined with --from/--to"),
    ({"as_of": NOW + timedelta(hours=1)}, "is in the future"),
    ({"date_from": date(2026, 11, 1), "date_to": date(2026, 12, 1)}, "2026-12-01 is after today"),
])
def test_bad_dates_are_refused_with_the_reason(kwargs, message):
    with pytest.raises(ReportInputError, match=re.escape(message)):
        resolve_period(TOKYO, now=NOW, **kwargs)


def test_a_period_is_judged_at_the_end_of_to_and_counted_from_the_end_of_from():
    p = resolve_period(TOKYO, date_from=date(2026, 11, 1), date_to=date(2026, 11, 20), now=NOW)
    assert p.as_of == end_of_day(date(2026, 11, 20), TOKYO)
    assert p.baseline_as_of == end_of_day(date(2026, 11, 1), TOKYO)
    assert resolve_period(TOKYO, now=NOW) == Period(as_of=NOW)


# -- the bag -----------------------------------------------------------------------------------------


def test_report_bag_is_sealed_signed_ledgered_and_names_the_bags_it_judged(sample):
    config, vault, key, _ = sample
    assessment = sample_assessment(vault)
    result = seal_sample(config, vault, key, assessment)
    bag = result.sealed.path
    info_lines = (bag / "bag-info.txt").read_text(encoding="utf-8").splitlines()
    info = read_bag_info(bag)
    assert info["Connector-Id"] == info["Connector-Type"] == "report"
    assert info["Collection-Status"] == "complete" and info["Previous-Bag-Digest"] == "none"
    assert info["Report-As-Of-UTC"].startswith(assessment.as_of.strftime("%Y-%m-%dT%H:%M:%S"))
    judged_bag = assessment.bundles[0]
    assert [l for l in info_lines if l.startswith("Judged-Bag-Digest:")] == [
        f"Judged-Bag-Digest: sha256:{judged_bag.digest} {judged_bag.bag}"]  # the missing connector has no bag
    assert info["Signing-Key-Id"] == key.key_id_hex
    last = ledger.last_for_connector(vault.ledger, "report")
    assert last.bag == result.sealed.relpath and last.tagmanifest_sha256 == result.sealed.digest
    assert result.sealed.relpath.split("/")[-1].split("_")[1] == "report"
    assert sorted(p.name for p in (bag / "data").iterdir()) == sorted([
        "index.html", "findings.csv", "changes.csv", "accounts.csv", "privileged.csv", "sharing.csv", "columns.csv",
        "report.json", "run.json", "README.txt"])
    assert not any(vault.partial.iterdir()), "nothing is left in .partial"
    report_ = verify_vault(vault)
    assert report_.ok, [p.describe() for p in report_.problems]


def test_reports_chain_like_collection_bags_and_a_broken_link_is_found(sample):
    config, vault, key, _ = sample
    first = seal_sample(config, vault, key, sample_assessment(vault))
    second = seal_sample(config, vault, key, sample_assessment(vault))
    assert read_bag_info(second.sealed.path)["Previous-Bag-Digest"] == f"sha256:{first.sealed.digest}"
    run = json.loads((second.sealed.path / "data" / "run.json").read_text(encoding="utf-8"))
    assert run["previous_bag"] == {"path": first.sealed.relpath, "tagmanifest_sha256": first.sealed.digest}
    assert verify_vault(vault).ok
    shutil.rmtree(first.sealed.path)
    problems = [p.describe() for p in verify_vault(vault).problems]
    assert any("broken chain" in p and second.sealed.relpath in p for p in problems), problems


def test_bagit_py_validates_a_report_bag_with_repeated_tags(tmp_path, monkeypatch):
    bagit = pytest.importorskip("bagit")
    use_sample_tables(monkeypatch)
    extra = {"files2.toml": '[[connector]]\nid = "files-two"\ntype = "local_files"\nroots = ["%s"]\n' % (tmp_path / "share")}
    config, vault, key, _ = collected_vault(tmp_path, extra_connectors=extra)
    from collector.runner import run_connector

    run_connector(config, config.connector("files-two"), signing_key=key)
    assessment = sample_assessment(vault)
    assessment = Assessment(**{**assessment.__dict__, "bundles": (judged(vault), judged(vault, "files-two"))})
    result = seal_sample(config, vault, key, assessment)
    bag = bagit.Bag(str(result.sealed.path))
    bag.validate()  # raises BagValidationError on any problem
    assert bag.info["Judged-Bag-Digest"] == [f"sha256:{b.digest} {b.bag}" for b in assessment.bundles]
    assert bag.info["Connector-Id"] == "report"


def test_minisign_verifies_the_report_signature(sample):
    if shutil.which("minisign") is None:
        pytest.skip("minisign is not installed (apt-get install minisign)")
    config, vault, key, _ = sample
    result = seal_sample(config, vault, key, sample_assessment(vault))
    out = subprocess.run(["minisign", "-V", "-p", str(vault.public_key), "-m", "tagmanifest-sha256.txt"],
                         cwd=result.sealed.path, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert f"shoseki bag {result.sealed.path.name} status=complete tagmanifest-sha256={result.sealed.digest}" in out.stdout


def test_report_is_in_the_catalogue_and_survives_reindex_without_becoming_a_connector(sample):
    from click.testing import CliRunner

    from collector.cli import main

    config, vault, key, _ = sample
    result = seal_sample(config, vault, key, sample_assessment(vault))
    rows = {r["run_id"]: r for r in Catalogue(vault).runs()}
    row = rows[result.sealed.run_id]
    assert (row["connector_id"], row["connector_type"], row["status"], row["bag"], row["digest"]) == (
        "report", "report", "complete", result.sealed.relpath, result.sealed.digest)
    assert row["started_utc"] and row["finished_utc"]
    rebuild(vault)
    assert {r["run_id"]: r for r in Catalogue(vault).runs()}[result.sealed.run_id]["bag"] == result.sealed.relpath
    status = CliRunner().invoke(main, ["--config", str(config.path), "status"])
    assert status.exit_code == 0, status.output
    assert "latest report: " in status.output and f"{result.sealed.relpath}/data/index.html" in status.output
    assert not re.search(r"^report\s", status.output, re.M)  # not listed as a connector
    as_json = json.loads(CliRunner().invoke(main, ["--config", str(config.path), "status", "--json"]).output)
    assert as_json["report"]["bag"] == result.sealed.relpath
    assert [c["id"] for c in as_json["connectors"]] == ["files-main"]


def test_a_connector_named_report_is_refused(tmp_path):
    from conftest import write_config

    from collector.config import ConfigError, load_config

    path = write_config(tmp_path, connectors={"r.toml": '[[connector]]\nid = "report"\ntype = "local_files"\nroots = ["/tmp"]\n'})
    with pytest.raises(ConfigError, match="connector\\[0\\].id: 'report' is reserved for the report bundles"):
        load_config(path)


def test_only_one_report_at_a_time(sample):
    config, vault, _, _ = sample
    with vault.lock("report"):
        with pytest.raises(AlreadyRunning):
            report.build_report(config, context=Context(), catalogue=FakeCatalogue())


def test_a_failure_while_writing_leaves_nothing_behind(sample, monkeypatch):
    config, vault, key, _ = sample
    before = vault.ledger.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(report.build, "render_index", boom)  # where seal_report calls it
    with pytest.raises(RuntimeError, match="disk full"):
        seal_sample(config, vault, key, sample_assessment(vault))
    assert vault.ledger.read_bytes() == before
    assert list(vault.partial.iterdir()) == []
    assert not [p for p in vault.state.iterdir() if p.name.startswith("report-")], "the scratch folder is removed"


# -- the page --------------------------------------------------------------------------------------


def test_index_html_shows_every_part_and_links_every_finding_to_its_evidence(sample):
    config, vault, key, _ = sample
    assessment = sample_assessment(vault)
    result = seal_sample(config, vault, key, assessment)
    html = result.index.read_text(encoding="utf-8")
    page = _page(result.index)
    assert html.startswith("<!DOCTYPE html>") and '<html lang="ja">' in html
    assert page.external == [], "no scripts, stylesheets, images or frames: the page is self-contained"
    assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", html)
    for text in ("アクセス権限レポート", "テスト株式会社", "誰でもアクセスできる共有", "多要素認証 (MFA) のない管理者",
                 "例外 1 により承認済み (2027-03-31 まで)", "例外 2 の期限切れ", "従業員の給与情報", "管理者 太郎",
                 "台帳にない", "台帳で許可", "A.5.15", "未確認 (参考)", "確認済み", "前回のレポートがないため"):
        assert text in html, text
    # "no finding is not no data": the connector without evidence is named in the banner
    assert 'id="no-data"' in html and "drive-main" in html.split('id="no-data"')[1].split("</div>")[0]
    # every finding's evidence is an anchor on the page, holding the record read from the bag
    for f in assessment.findings:
        for r in f.evidence:
            assert f'href="#{r.anchor}"' in html and r.anchor in page.ids, (f.rule, r)
    for h in assessment.privileged:
        assert h.evidence.anchor in page.ids
    grant = assessment.findings[1].evidence[0]
    block = html.split(f'id="{grant.anchor}"')[1].split("</div>")[0]
    assert "&#34;principal_id&#34;" in block or '"principal_id"' in block.replace("&#34;", '"')
    assert "このレコードはバンドルの中に見つかりませんでした" in html  # the planted missing key
    # the injected cell is text on the page, never markup
    assert "=HYPERLINK(&#34;http://evil.example&#34;" in html
    # relative links to the judged bags' summaries resolve from the report's data/ folder
    summaries = [h for h in page.hrefs if h.endswith("/data/summary.html")]
    assert summaries
    for href in summaries:
        assert (result.index.parent / href).resolve().is_file(), href


def test_index_html_follows_the_configured_language(tmp_path, monkeypatch):
    use_sample_tables(monkeypatch)
    config, vault, key, _ = collected_vault(tmp_path, language="en")
    result = seal_sample(config, vault, key, sample_assessment(vault))
    html = result.index.read_text(encoding="utf-8")
    assert '<html lang="en">' in html and "<h1>Access review report" in html
    assert "Covered by exception 1 until 2027-03-31" in html
    assert '<span class="alt" lang="ja">アクセス権限レポート</span>' in html


def test_many_findings_are_grouped_and_capped_on_the_page_but_all_in_the_csv(sample, monkeypatch):
    config, vault, key, _ = sample
    monkeypatch.setattr(report.page, "FINDINGS_SHOWN", 3)
    base = sample_assessment(vault)
    many = tuple(base.findings[1].with_(resource=f"/share/f{i}") for i in range(10))
    result = seal_sample(config, vault, key, Assessment(**{**base.__dict__, "findings": many}))
    html = result.index.read_text(encoding="utf-8")
    assert html.count('<details class="rule" id="rule-public_share"') == 1
    assert html.count("/share/f") == 3 and "(7)" in html
    assert len(_csv(result.sealed.path / "data" / "findings.csv")) == 11


def test_a_rule_with_findings_of_two_severities_is_listed_at_the_higher_one(sample):
    config, vault, key, _ = sample
    base = sample_assessment(vault)
    critical = base.findings[1].with_(severity="critical", resource="/share/給与")
    result = seal_sample(config, vault, key, Assessment(**{**base.__dict__, "findings": (*base.findings, critical)}))
    html = result.index.read_text(encoding="utf-8")
    rules = re.findall(r'<details class="rule" id="rule-([a-z_]+)"', html)
    assert rules[:2] == ["public_share", "admin_without_mfa"]  # both critical now: catalogue order
    group = html.split('id="rule-public_share"')[1].split("</details>")[0]
    assert group.index("/share/給与") < group.index("/share/open")
    assert '<span class="badge critical">重大</span>' in group and '<span class="badge high">高</span>' in group


def test_a_finding_without_evidence_records_links_to_its_connector_s_collection_status(sample):
    config, vault, key, _ = sample
    html = seal_sample(config, vault, key, sample_assessment(vault)).index.read_text(encoding="utf-8")
    assert 'href="#bundle-drive-main"' in html and 'id="bundle-drive-main"' in html


# -- the CSV files, report.json, README ----------------------------------------------------------------


def test_csv_files_are_for_excel_bom_ids_as_text_injection_safe_utc_and_local_time(sample):
    config, vault, key, _ = sample
    assessment = sample_assessment(vault)
    data = seal_sample(config, vault, key, assessment).sealed.path / "data"
    findings = _csv(data / "findings.csv")
    header, rows = findings[0], findings[1:]
    assert header[:4] == ["finding_id", "severity", "severity_label", "rule"]
    by_id = {r[0]: dict(zip(header, r)) for r in rows}
    assert set(by_id) == {f.id for f in assessment.findings}
    injected = next(r for r in by_id.values() if r["resource_name"].endswith('"x")'))
    assert injected["resource_name"] == "'" + INJECTION
    assert injected["resource"] == '="00123"'  # Excel would drop the zeros
    assert injected["status"] == "excepted" and injected["status_label"] == "例外 1 により承認済み (2027-03-31 まで)"
    assert injected["exception"] == "1" and injected["exception_until"] == "2027-03-31"
    two = by_id[assessment.findings[1].id]
    assert two["evidence_stream"] == "grants; grants" and two["evidence_bag"].count(";") == 1
    assert json.loads(two["detail"]) == {"role": "editor", "link_scope": "anyone", "expiry": None}
    accounts = _csv(data / "accounts.csv")
    row = dict(zip(accounts[0], accounts[1]))
    assert row["principal"] == '="00123"' and row["display_name"] == "'@SUM(1+1)"
    assert row["last_sign_in_utc"] == "2026-11-25T15:00:00Z" and row["last_sign_in_local"] == "2026-11-26 00:00:00 +09:00"
    assert row["enabled"] == "true" and row["mfa"] == ""
    sharing = _csv(data / "sharing.csv")
    row = dict(zip(sharing[0], sharing[1]))
    assert row["resource"] == '="1E5"' and row["resource_name"] == "'-2+3"
    assert row["expiry_local"] == "2027-01-01 00:00:00 +09:00"
    privileged = _csv(data / "privileged.csv")
    assert dict(zip(privileged[0], privileged[1]))["mfa"] == "false"
    assert b"\r\n" in (data / "findings.csv").read_bytes()


def test_columns_csv_explains_every_column_of_every_csv_in_both_languages(sample):
    config, vault, key, _ = sample
    data = seal_sample(config, vault, key, sample_assessment(vault)).sealed.path / "data"
    docs = _csv(data / "columns.csv")
    assert docs[0] == ["file", "column", "日本語名", "English name", "説明", "description"]
    described = {(r[0], r[1]) for r in docs[1:] if all(r[2:])}
    for name in ("findings.csv", "changes.csv", "accounts.csv", "privileged.csv", "sharing.csv"):
        for column in _csv(data / name)[0]:
            assert (name, column) in described, (name, column)
    assert any("Asia/Tokyo" in r[3] for r in docs[1:] if r[1] == "expiry_local")


def test_report_json_and_run_json_say_what_was_judged(sample):
    config, vault, key, _ = sample
    assessment = sample_assessment(vault)
    data = seal_sample(config, vault, key, assessment).sealed.path / "data"
    body = json.loads((data / "report.json").read_text(encoding="utf-8"))
    assert body["format"] == "shoseki-report/1" and body["settings"] == {"inactive_days": 90}
    assert [j["connector_id"] for j in body["judged"]] == ["files-main", "drive-main"]
    assert body["judged"][1]["freshness"] == "missing"
    f = body["findings"][1]
    assert f["id"] == assessment.findings[1].id and f["evidence"][0]["anchor"].startswith("ev-")
    assert body["counts"]["by_status"] == {"open": 3, "excepted": 1, "exception_expired": 1}
    run = json.loads((data / "run.json").read_text(encoding="utf-8"))
    assert (run["format"], run["connector_id"], run["status"]) == ("shoseki-report/1", "report", "complete")
    assert run["counts"] == {"findings": 5, "bags_judged": 1}
    assert run["findings"]["by_severity"]["critical"] == 1
    readme = (data / "README.txt").read_bytes()
    assert readme.startswith(b"\xef\xbb\xbf")
    text = readme.decode("utf-8-sig")
    assert "[日本語]" in text and "[English]" in text
    assert f"sha256:{assessment.bundles[0].digest}" in text and "bagit.py --validate" in text
    assert "minisign -V -p ../../../minisign.pub" in text


# -- changes ----------------------------------------------------------------------------------------


def test_changes_are_counted_from_the_bags_the_previous_report_judged(sample):
    config, vault, key, share = sample
    first = seal_sample(config, vault, key, sample_assessment(vault))
    assert first.baseline.kind == "none" and [c.state for c in first.changes] == ["no_baseline", "no_baseline"]
    same = seal_sample(config, vault, key, sample_assessment(vault))
    assert same.baseline.report_bag == first.sealed.relpath
    assert [c.state for c in same.changes] == ["same", "no_bag"]
    (share / "open" / "新規.txt").write_text("z", encoding="utf-8")
    collect(config, key)
    third = seal_sample(config, vault, key, sample_assessment(vault))
    files = third.changes[0]
    assert (files.state, files.old_bag, files.new_bag) == ("compared", first.changes[0].new_bag, judged(vault).bag)
    assert files.counts[("resources", "added")] == 1 and files.total >= 1
    rows = _csv(third.sealed.path / "data" / "changes.csv")
    added = [dict(zip(rows[0], r)) for r in rows[1:] if r[2] == "added" and r[1] == "resources"]
    assert [r["resource"] for r in added] == [str(share / "open" / "新規.txt")]
    assert len(rows) - 1 == files.total
    html = third.index.read_text(encoding="utf-8")
    assert "前回のレポート" in html and "新規.txt" in html
    body = json.loads((third.sealed.path / "data" / "report.json").read_text(encoding="utf-8"))
    assert body["baseline"]["report_bag"] == same.sealed.relpath
    assert body["changes"][0]["counts"]["resources.added"] == 1


def test_a_backdated_report_compares_with_the_latest_report_not_after_it(sample):
    config, vault, key, _ = sample
    now = datetime.now(timezone.utc)
    old = seal_sample(config, vault, key, sample_assessment(vault, now - timedelta(days=2)))
    seal_sample(config, vault, key, sample_assessment(vault, now))
    back = report.previous_report_baseline(vault, now - timedelta(days=1))
    assert back.kind == "previous_report" and back.report_bag == old.sealed.relpath


def test_a_previous_report_changed_after_sealing_is_not_trusted(sample):
    config, vault, key, _ = sample
    first = seal_sample(config, vault, key, sample_assessment(vault))
    run_json = first.sealed.path / "data" / "run.json"
    os.chmod(run_json, 0o640)
    run_json.write_text(run_json.read_text(encoding="utf-8").replace("files-main", "files-xxxx"), encoding="utf-8")
    baseline = report.previous_report_baseline(vault, datetime.now(timezone.utc))
    assert baseline.kind == "unavailable" and first.sealed.relpath in baseline.note


def test_a_baseline_bag_changed_after_sealing_is_not_compared(sample):
    config, vault, key, share = sample
    old = judged(vault)
    (share / "open" / "b.txt").write_text("b", encoding="utf-8")
    collect(config, key)
    records = vault.root / old.bag / "data" / "records" / "grants.jsonl.gz"
    os.chmod(records, 0o640)
    records.write_bytes(b"tampered")
    baseline = Baseline("period", {"files-main": BaselineBag(old.bag, old.digest)}, "2026-11-01T00:00:00Z")
    result = seal_sample(config, vault, key, sample_assessment(vault), baseline=baseline)
    assert result.changes[0].state == "unavailable" and result.changes[0].total == 0


def test_the_html_list_of_changes_is_capped_but_the_csv_has_them_all(sample, monkeypatch):
    config, vault, key, share = sample
    old = judged(vault)
    for i in range(6):
        (share / "open" / f"n{i}.txt").write_text("n", encoding="utf-8")
    collect(config, key)
    monkeypatch.setattr(report.changes, "CHANGES_SHOWN", 2)
    baseline = Baseline("period", {"files-main": BaselineBag(old.bag, old.digest)}, "2026-11-01T00:00:00Z")
    result = seal_sample(config, vault, key, sample_assessment(vault), baseline=baseline)
    c = result.changes[0]
    assert c.total > 6 and len(c.shown) == 2
    assert len(_csv(result.sealed.path / "data" / "changes.csv")) - 1 == c.total
    assert f"2 / {c.total:,}" in result.index.read_text(encoding="utf-8")


# -- evidence ---------------------------------------------------------------------------------------


def test_load_evidence_reads_each_record_once_and_says_which_are_missing(sample):
    _, vault, _, _ = sample
    b = judged(vault)
    good = sample_assessment(vault).findings[1].evidence[0]
    refs = [good, good, EvidenceRef(b.connector_id, b.bag, b.digest, "grants", "nope"),
            EvidenceRef(b.connector_id, b.bag, b.digest, "run", "")]
    found = load_evidence(vault, refs)
    assert len(found) == 3
    assert found[good.anchor][1]["resource_id"] == good.key.split("|")[0]
    assert found[refs[2].anchor][1] is None
    run = found[refs[3].anchor][1]
    assert run["connector_id"] == "files-main" and run["status"] == "complete" and "raw_pages" not in run

"""The period export: the right bags, an anchored ledger excerpt, ASCII names, and a README whose
own commands (bagit.py, sha256sum, minisign, sh) verify the unzipped copy — and fail on a tampered one."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import zipfile
from datetime import date
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from test_vault_index import WHEN, Org  # noqa: E402

from evidence import ledger as ledger_mod  # noqa: E402
from evidence.export import LEDGER_EXCERPT, ExportError, export_period  # noqa: E402

NOVEMBER = (date(2025, 11, 1), date(2025, 11, 30))
TOOLS = ("bagit.py", "sha256sum", "minisign")


@pytest.fixture
def org(tmp_path, small_tree):
    org = Org(tmp_path, small_tree)
    org.bags = [org.collect(w) for w in WHEN[:3]]
    org.bags.insert(3, org.report("2025-11-20T09:00:00"))
    org.bags += [org.collect(w) for w in WHEN[3:]]
    return org  # sealed, local time: 10-31 23:30, 11-01 00:10, 11-15 12:00, report 11-20, 11-30 23:50, 12-01 00:05


def export(org: Org, out: Path, period=NOVEMBER, **kw):
    o = org.cfg.main.organization
    return export_period(org.vault, *period, out, tz=org.cfg.tz, language=o.language, organization=o.name, **kw)


def unzip(zip_path: Path, into: Path) -> Path:
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(into)
        (top,) = {n.split("/")[0] for n in zf.namelist()}
    return into / top


def readme_commands(top: Path) -> list[str]:
    raw = (top / "README.txt").read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf"), "README.txt must be UTF-8 with a BOM"
    return re.findall(r"^\s*\$ (.+)$", raw.decode("utf-8-sig"), re.M)


def follow_readme(top: Path) -> list[tuple[str, int, str]]:
    """Type every "$ " line of the README into one POSIX shell in the export's folder, in order,
    as an auditor would; return (command, exit status, what it printed) for each."""
    for tool in TOOLS:
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (CI installs bagit, coreutils and minisign)")
    commands = readme_commands(top)
    script = "".join(f"{c}\necho \"@@END {i} $?\"\n" for i, c in enumerate(commands))
    out = subprocess.run(["sh", "-c", script], cwd=top, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, timeout=120)
    results, start = [], 0
    for i, c in enumerate(commands):
        m = re.compile(rf"^@@END {i} (\d+)$", re.M).search(out.stdout, start)
        assert m, f"command {i} did not finish: {c}\n{out.stdout[-3000:]}"
        results.append((c, int(m.group(1)), out.stdout[start:m.start()]))
        start = m.end()
    return results


def failing(results) -> set[str]:
    return {kind(c) for c, rc, _ in results if rc != 0}


def kind(command: str) -> str:
    """A short name for each check of the README."""
    for word, name in (("bagit.py --quiet", "bagit-all"), ("bagit.py", "bagit-one"), ("minisign -Vqm", "minisign-all"),
                       ("minisign -Vm", "minisign-one"), ("sha256sum --quiet", "sha256-all"),
                       ("sha256sum -c manifest", "sha256-manifest"), ("sha256sum -c tagmanifest", "sha256-tagmanifest"),
                       ("read -r line", "chain"),
                       ("grep -qF", "ledger-bags"), ("wc -l", "ledger-count")):
        if word in command:
            return name
    return command


def test_the_period_the_anchor_and_the_names(org, tmp_path):
    result = export(org, tmp_path / "nov.zip")
    in_nov = [b.relpath for b in org.bags[1:5]]  # 11-01 00:10 JST is 10-31 in UTC, 12-01 00:05 JST is 11-30 in UTC
    assert result.bags == sorted(in_nov) and result.warnings == []
    assert result.top == "shoseki-export_2025-11-01_2025-11-30"
    with zipfile.ZipFile(result.path) as zf:
        names = zf.namelist()
        assert zf.testzip() is None
    assert all(n.isascii() and n.startswith(result.top + "/") for n in names)
    assert names[:4] == [f"{result.top}/{n}" for n in ("README.txt", "index.html", "minisign.pub", LEDGER_EXCERPT)]
    bag_names = names[4:]
    assert bag_names == sorted(bag_names)
    assert {n.split("/", 1)[1].rsplit("/", 1)[0] for n in bag_names if n.endswith("/bagit.txt")} == set(in_nov)
    for rel in in_nov:  # the whole bag, at its vault-relative path
        bag = org.vault.root / rel
        want = sorted(f"{result.top}/{rel}/{p.relative_to(bag).as_posix()}" for p in bag.rglob("*") if p.is_file())
        assert [n for n in bag_names if n.startswith(f"{result.top}/{rel}/")] == want

    top = unzip(result.path, tmp_path / "x")
    lines = (top / LEDGER_EXCERPT).read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) - 1 == 1 + len(in_nov)
    vault_lines = [raw for _, raw in ledger_mod.read_lines(org.vault.ledger)]
    assert lines[:-1] == vault_lines[0:5]  # the anchor (the October bag's line), then November's, byte for byte
    assert json.loads(lines[0])["bag"] == org.bags[0].relpath and result.anchor_seq == 1
    for before, line in zip(lines[:-2], lines[1:-1]):
        assert json.loads(line)["prev_line_sha256"] == hashlib.sha256(before).hexdigest()
    assert result.last_line_sha256 == hashlib.sha256(lines[-2]).hexdigest()
    readme = (top / "README.txt").read_text(encoding="utf-8-sig")
    assert result.last_line_sha256 in readme and hashlib.sha256(lines[0]).hexdigest() in readme
    assert "期間 / Period" in readme and "How to verify" in readme and "検証の手順" in readme
    assert (top / "minisign.pub").read_bytes() == org.vault.public_key.read_bytes()


def test_the_zip_verifies_offline_by_following_its_own_readme(org, tmp_path):
    top = unzip(export(org, tmp_path / "nov.zip").path, tmp_path / "clean")
    results = follow_readme(top)
    assert [(c, rc) for c, rc, _ in results if rc != 0] == []
    checks = {kind(c) for c, _, _ in results}
    assert {"bagit-one", "bagit-all", "sha256-manifest", "sha256-tagmanifest", "sha256-all", "minisign-one",
            "minisign-all", "chain", "ledger-bags", "ledger-count"} <= checks
    printed = "".join(o for _, _, o in results)
    assert printed.count("ALL OK") == 6 and "NG:" not in printed
    assert "Signature and comment signature verified" in printed
    anchor_digest, second_prev = [o for c, _, o in results if c.startswith("sed -n")]
    assert anchor_digest.split()[0] in second_prev  # lines 1 and 2 by hand: the same value

    payload = shutil.copytree(top, tmp_path / "payload")  # one byte of one payload file changed
    grants = next(payload.glob("2025/2025-11/*files-main*/data/tables/grants.csv"))
    grants.write_bytes(grants.read_bytes().replace(b"x", b"y", 1) + b"\n")
    results = follow_readme(payload)
    assert {"bagit-all", "sha256-all"} <= failing(results) <= {"bagit-all", "sha256-all", "bagit-one", "sha256-manifest"}
    assert f"NG: {grants.relative_to(payload).parts[0]}/" in "".join(o for _, _, o in results)

    tags = shutil.copytree(top, tmp_path / "tags")  # a tag manifest rewritten to match a changed bag-info
    bag = next(tags.glob("2025/2025-11/*report*"))
    (bag / "bag-info.txt").write_text((bag / "bag-info.txt").read_text() + "Collection-Status: complete\n")
    digest = hashlib.sha256((bag / "bag-info.txt").read_bytes()).hexdigest()
    tm = bag / "tagmanifest-sha256.txt"
    tm.write_text(re.sub(r"^[0-9a-f]{64}(  bag-info.txt)$", digest + r"\1", tm.read_text(), flags=re.M))
    results = follow_readme(tags)
    assert {"minisign-all", "ledger-bags"} <= failing(results)
    assert "bagit-all" not in failing(results) and "sha256-all" not in failing(results)  # consistent, but not signed

    chain = shutil.copytree(top, tmp_path / "chain")  # a ledger line edited
    excerpt = chain / LEDGER_EXCERPT
    lines = excerpt.read_bytes().split(b"\n")
    lines[2] = lines[2].replace(b'"status":"complete"', b'"status":"partial"')
    excerpt.write_bytes(b"\n".join(lines))
    assert "chain" in failing(follow_readme(chain))

    gone = shutil.copytree(top, tmp_path / "gone")  # a bag left out
    shutil.rmtree(next(gone.glob("2025/2025-11/*T1200*")))
    assert "ledger-count" in failing(follow_readme(gone))


def test_from_the_first_bag_there_is_no_anchor(org, tmp_path):
    result = export(org, tmp_path / "oct.zip", (date(2025, 10, 1), date(2025, 11, 1)))
    assert result.anchor_seq is None and len(result.bags) == 2
    top = unzip(result.path, tmp_path / "x")
    first = json.loads((top / LEDGER_EXCERPT).read_bytes().split(b"\n")[0])
    assert first["seq"] == 1 and first["prev_line_sha256"] == "0" * 64
    results = follow_readme(top)
    assert [(c, rc) for c, rc, _ in results if rc != 0] == []
    assert "0" * 64 in "".join(o for _, _, o in results)


def test_refusals_are_clear_and_leave_nothing_behind(org, tmp_path):
    out = tmp_path / "out.zip"
    with pytest.raises(ExportError, match=r"no bag was sealed from 2024-01-01 to 2024-01-31 \(Asia/Tokyo\); "
                                          r"the vault holds bags sealed from 2025-10-31 to 2025-12-01"):
        export(org, out, (date(2024, 1, 1), date(2024, 1, 31)))
    with pytest.raises(ExportError, match="is after --to"):
        export(org, out, (date(2025, 12, 1), date(2025, 11, 1)))
    assert not out.exists()
    out.write_bytes(b"keep me")
    with pytest.raises(ExportError, match="already exists; choose another name, or add --force"):
        export(org, out)
    assert out.read_bytes() == b"keep me"
    export(org, out, force=True)
    assert zipfile.is_zipfile(out)

    odd = org.bags[2].path / "data" / "メモ.txt"  # a non-ASCII name inside a bag of the period
    odd.write_text("added by hand")
    with pytest.raises(ExportError, match=r"1 file name\(s\) are not ASCII.*/data/\\u30e1\\u30e2\.txt"):
        export(org, tmp_path / "odd.zip")
    assert not (tmp_path / "odd.zip").exists() and not list(tmp_path.glob(".odd.zip*"))


def test_the_same_period_gives_the_same_entries_in_the_same_order(org, tmp_path):
    a, b = export(org, tmp_path / "a.zip"), export(org, tmp_path / "b.zip")
    with zipfile.ZipFile(a.path) as za, zipfile.ZipFile(b.path) as zb:
        assert za.namelist() == zb.namelist()
        for name in za.namelist():
            if not name.endswith(("README.txt", "index.html")):  # these two say when they were made
                assert za.read(name) == zb.read(name)


def test_the_index_inside_covers_the_period_and_its_links_resolve(org, tmp_path):
    top = unzip(export(org, tmp_path / "nov.zip").path, tmp_path / "x")
    html = (top / "index.html").read_text(encoding="utf-8")
    shown = set(re.findall(r'data-bag="([^"]+)"', html))
    assert shown == {b.relpath for b in org.bags[1:5]}
    assert 'id="scope"' in html and "2025-11-01" in html
    hrefs = [h for h in re.findall(r'href="([^"#]+)"', html)]
    assert len(hrefs) == 5  # four bags and the latest report
    from urllib.parse import unquote

    assert all((top / unquote(h)).is_file() for h in hrefs)


def test_a_bag_the_ledger_names_but_the_vault_lacks_is_reported_not_hidden(org, tmp_path):
    shutil.rmtree(org.bags[2].path)
    result = export(org, tmp_path / "nov.zip")
    assert org.bags[2].relpath not in result.bags and len(result.bags) == 3
    assert any("missing from the vault" in w for w in result.warnings)
    top = unzip(result.path, tmp_path / "x")
    assert "missing from the vault" in (top / "README.txt").read_text(encoding="utf-8-sig")
    if all(shutil.which(t) for t in TOOLS):
        assert "ledger-count" in failing(follow_readme(top))  # the auditor's own count shows it too


def test_a_bag_whose_latest_check_found_a_problem_is_named_before_the_auditor_finds_it(org, tmp_path):
    from evidence.vault_index import record_verification
    from evidence.verify import verify_vault

    target = org.bags[1].path / "data" / "tables" / "grants.csv"
    target.chmod(0o640)
    target.write_bytes(target.read_bytes() + b"x")
    record_verification(org.vault, verify_vault(org.vault))  # as shoseki verify does
    result = export(org, tmp_path / "nov.zip")
    assert org.bags[1].relpath in result.bags  # still exported: hiding it would hide the problem
    assert [w for w in result.warnings if w.startswith(f"{org.bags[1].relpath}: its latest check (verify, ")
            and "changed file data/tables/grants.csv" in w]
    top = unzip(result.path, tmp_path / "x")
    assert "changed file data/tables/grants.csv" in (top / "README.txt").read_text(encoding="utf-8-sig")


import shutil
from datetime import date
from pathlib import Path

import pytest

from collector.config import ConfigError
from collector.context import load_context
from sandbox.org import Org
from sandbox.truth import write_context

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("contractors.toml", "exceptions.toml", "register.toml", "roster.csv")

CONTRACTOR = """\
[[contractor]]
name = "Vendor"
domains = ["vendor.example.org"]
purpose = "development"
contract_end = 2027-03-31
responsible = "boss@example.co.jp"
"""

EXCEPTIONS = """\
[[exception]]
rule = "public_share"
resource = "0AD0*"
reason = "public brochure"
approved_by = "ciso@example.co.jp"
approved_on = 2026-01-01
valid_until = 2026-06-30

[[exception]]
rule = "share_without_expiry"
principal = "*@Vendor.example.org"
reason = "contract"
approved_by = "ciso@example.co.jp"
approved_on = 2026-01-01
valid_until = 2026-12-31
"""


def _problems(directory, **kw):
    with pytest.raises(ConfigError) as exc:
        load_context(directory, **kw)
    return [str(p) for p in exc.value.problems]


def _write(directory, **files):
    for name, text in files.items():
        (directory / name.replace("_", ".")).write_text(text, encoding="utf-8")
    return directory


def test_sandbox_context_loads(tmp_path):
    org = Org()
    write_context(org, tmp_path)
    ctx = load_context(tmp_path, connector_ids={"google-drive"})
    approved = [p for p in org.partners if p.approved]
    assert [c.domains[0] for c in ctx.contractors] == [p.domain for p in approved]
    assert len(ctx.roster) == org.n
    first = org.person(0)
    assert ctx.person_by_email(first.email.upper()).name == first.name_ja
    assert {p.status for p in ctx.roster} == {"active", "leaver", "contractor"}
    assert ctx.register[0].locations[0].connector == "google-drive"
    assert ctx.contractor_for_domain("mail.bpo.example.net").domains == ("bpo.example.net",)
    assert ctx.contractor_for_domain("someone@vendor.example.org") is not None
    assert ctx.contractor_for_domain("freemail.example.com") is None
    assert ctx.contractor_for_domain("notbpo.example.net") is None


def test_no_files_is_an_empty_context(tmp_path):
    ctx = load_context(tmp_path)
    assert (ctx.contractors, ctx.exceptions, ctx.register, ctx.roster) == ((), (), (), ())
    assert ctx.exception_for("public_share", "x", None, on=date(2026, 1, 1)) == (None, False)


def test_exceptions_expire_and_match_globs(tmp_path):
    ctx = load_context(_write(tmp_path, exceptions_toml=EXCEPTIONS))
    exc, expired = ctx.exception_for("public_share", "0AD00001", None, on=date(2026, 6, 30))
    assert exc is not None and exc.reason == "public brochure" and not expired
    exc, expired = ctx.exception_for("public_share", "0AD00001", None, on=date(2026, 7, 1))
    assert exc is not None and expired
    assert ctx.exception_for("public_share", "1XYZ", None, on=date(2026, 3, 1)) == (None, False)
    assert ctx.exception_for("public_share", "0AD00001", None, on=date(2025, 12, 31)) == (None, False)
    assert ctx.exception_for("no_mfa", "0AD00001", None, on=date(2026, 3, 1)) == (None, False)
    exc, expired = ctx.exception_for("share_without_expiry", "any-file", "Dev@VENDOR.example.org", on=date(2026, 3, 1))
    assert exc is not None and exc.rule == "share_without_expiry" and not expired
    assert ctx.exception_for("share_without_expiry", "any-file", "dev@other.example.org", on=date(2026, 3, 1)) == (None, False)
    assert ctx.exception_for("share_without_expiry", "any-file", None, on=date(2026, 3, 1)) == (None, False)


def test_a_current_exception_wins_over_an_expired_one(tmp_path):
    renewed = EXCEPTIONS.split("\n\n")[0].replace("2026-01-01", "2026-07-01").replace("2026-06-30", "2027-06-30")
    ctx = load_context(_write(tmp_path, exceptions_toml=EXCEPTIONS + "\n" + renewed + "\n"))
    exc, expired = ctx.exception_for("public_share", "0AD00001", None, on=date(2026, 8, 1))
    assert exc.valid_until == date(2027, 6, 30) and not expired


def test_toml_problems_name_file_line_and_key_path(tmp_path):
    bad_contractor = (
        CONTRACTOR
        + "\n[[contractor]]\n"              # line 8
        'name = "Dup"\n'
        'domains = ["https://Vendor.example.org", "VENDOR.example.org"]\n'   # line 10
        'purpose = "x"\n'
        'contract_end = "31/03/2027"\n'     # line 12
        'responsible = "nobody"\n'          # line 13
        "colour = 1\n"                      # line 14
    )
    bad_exceptions = EXCEPTIONS.replace("valid_until = 2026-06-30", "valid_until = 2025-06-30").replace(
        'approved_by = "ciso@example.co.jp"\napproved_on = 2026-01-01\nvalid_until = 2026-12-31', 'approved_on = 2026-01-01\nvalid_until = 2026-12-31'
    )
    register = (
        "[[entry]]\n"
        'name = "HR"\n'
        'locations = [{ connector = "drive-main", resource_prefix = "0AD" }, { connector = "nope", bucket = "b" }]\n'   # line 3
        'allowed = ["group:hr@example.co.jp", "contractor:unknown.example.com", "team:x"]\n'                           # line 4
        'responsible = "hr@example.co.jp"\n'
    )
    _write(tmp_path, contractors_toml=bad_contractor, exceptions_toml=bad_exceptions, register_toml=register)
    problems = _problems(tmp_path, connector_ids={"drive-main"})
    c, e, r = (tmp_path / n for n in NAMES[:3])
    expected = [
        f"{c}:10: contractor[1].domains[0]: 'https://vendor.example.org' is not a domain name: write it without scheme",
        f"{c}:12: contractor[1].contract_end: '31/03/2027' is not an ISO date",
        f"{c}:13: contractor[1].responsible: 'nobody' is not an email address",
        f"{c}:14: contractor[1].colour: unknown key",
        f"{e}:7: exception[0].valid_until: 2025-06-30 is before approved_on (2026-01-01)",
        f"{e}:9: exception[1].approved_by: required key is missing",
        f"{r}:4: entry[0].allowed[2]: 'team:x' must be written group:<email>",
    ]
    for want in expected:
        assert any(p.startswith(want) for p in problems), (want, problems)
    # the table is invalid, so its cross-file checks wait until it loads
    assert not any("nope" in p for p in problems), problems
    register = register.replace('"team:x"', '"person:a@example.co.jp"')
    good_contractors = CONTRACTOR + CONTRACTOR.replace('"Vendor"', '"Again"').replace('["vendor', '["x.example.org", "vendor')
    _write(tmp_path, contractors_toml=good_contractors, register_toml=register)
    tmp_path.joinpath("exceptions.toml").unlink()
    problems = _problems(tmp_path, connector_ids={"drive-main"})
    assert problems == [
        f"{c}:9: contractor[1].domains[1]: domain 'vendor.example.org' is already listed for contractor[0] (Vendor)",
        f"{r}:3: entry[0].locations[1].connector: no connector with id 'nope' (configured: drive-main)",
        f"{r}:4: entry[0].allowed[1]: 'unknown.example.com' is not a domain of any contractor in contractors.toml",
    ], problems


def test_unknown_connector_is_not_checked_without_ids(tmp_path):
    _write(tmp_path, register_toml='[[entry]]\nname = "x"\nlocations = [{ connector = "nope" }]\nresponsible = "a@example.co.jp"\n')
    assert load_context(tmp_path).register[0].locations[0].connector == "nope"
    assert _problems(tmp_path, connector_ids=set()) == [
        f"{tmp_path / 'register.toml'}:3: entry[0].locations[0].connector: no connector with id 'nope' (configured: none)"
    ]


def test_toml_syntax_and_shape_errors(tmp_path):
    _write(tmp_path, contractors_toml="[[contractor]\n", exceptions_toml='exception = "x"\nother = 1\n')
    problems = _problems(tmp_path)
    assert any(p.startswith(f"{tmp_path / 'contractors.toml'}:1: not valid TOML") for p in problems), problems
    assert f"{tmp_path / 'exceptions.toml'}:2: other: unknown key (this file holds [[exception]] tables)" in problems
    assert f"{tmp_path / 'exceptions.toml'}:1: exception: write each one as a [[exception]] table" in problems


def test_roster_problems_name_line_and_column(tmp_path):
    roster = (
        "email,name,department,manager,status,start,end\n"
        "a@example.co.jp;A2@example.co.jp,A,総務部,,active,2020-04-01,\n"   # 2
        "b@example.co.jp,B,,a@example.co.jp,leaver,2020-04-01,\n"           # 3: leaver without end
        "not-an-email,C,,,active,2020-04-01,\n"                              # 4
        '"d@example.co.jp",D,,,retired,2020/04/01,\n'                        # 5
        "a2@example.co.jp,E,,,active,,\n"                                    # 6: duplicate of line 2
        ",F,,,active,,\n"                                                    # 7
        "\n"
        "g@example.co.jp,G,,boss,contractor,2021-01-01,2020-01-01\n"         # 9
        "h@example.co.jp,H\n"                                                # 10
    )
    _write(tmp_path, roster_csv=roster)
    f = tmp_path / "roster.csv"
    problems = _problems(tmp_path)
    expected = [
        f"{f}:3: end: required for a leaver",
        f"{f}:4: email: 'not-an-email' is not an email address",
        f"{f}:5: status: Input should be 'active', 'leaver' or 'contractor'",
        f"{f}:5: start: '2020/04/01' is not an ISO date",
        f"{f}:6: email: 'a2@example.co.jp' is already on line 2",
        f"{f}:7: email: required",
        f"{f}:9: manager: 'boss' is not an email address",
        f"{f}:9: end: 2020-01-01 is before start (2021-01-01)",
        f"{f}:10: 2 cells, but the header has 7 columns",
    ]
    for want in expected:
        assert any(p.startswith(want) for p in problems), (want, problems)
    assert len(problems) == len(expected), problems


def test_roster_header_problems(tmp_path):
    _write(tmp_path, roster_csv="mail,name,grade\nx@example.co.jp,X,1\n")
    f = tmp_path / "roster.csv"
    assert _problems(tmp_path) == [
        f"{f}:1: mail: unknown column (columns: email, name, department, manager, status, start, end)",
        f"{f}:1: grade: unknown column (columns: email, name, department, manager, status, start, end)",
        f"{f}:1: email: required column is missing",
        f"{f}:1: status: required column is missing",
    ]


def test_example_files_load_and_match_config_copies(tmp_path):
    for name in NAMES:
        template = ROOT / "collector" / "templates" / f"{name}.example"
        copy = ROOT / "config" / f"{name}.example"
        assert template.read_bytes() == copy.read_bytes(), name
        shutil.copy(template, tmp_path / name)
    ctx = load_context(tmp_path, connector_ids={"google-drive"})
    assert len(ctx.contractors) == len(ctx.exceptions) == len(ctx.register) == 1
    assert ctx.person_by_email("H.Suzuki@example.co.jp").email == "hanako.suzuki@example.co.jp"
    assert ctx.contractor_for_domain("contractor.example.net") is ctx.contractors[0]
    exc, expired = ctx.exception_for("public_share", "0AD00001abc", None, on=date(2026, 5, 1))
    assert exc is ctx.exceptions[0] and not expired


def test_an_exception_must_name_a_rule(tmp_path):
    _write(tmp_path, **{"exceptions.toml": EXCEPTIONS.replace('rule = "public_share"', 'rule = "anyone_link"')})
    (problem,) = _problems(tmp_path)
    assert "exceptions.toml:2: exception[0].rule: 'anyone_link' matches no rule (rules: public_share," in problem
    _write(tmp_path, **{"exceptions.toml": EXCEPTIONS.replace('rule = "public_share"', 'rule = "guest_*"')})
    assert len(load_context(tmp_path).exceptions) == 2


def test_register_may_allow_any_principal_by_its_record_id(tmp_path):
    entry = ('[[entry]]\nname = "payslips"\nlocations = [{ connector = "files-main", resource_prefix = "/srv/hr" }]\n'
             'allowed = ["principal:uid:1001", "principal: arn:aws:iam::111122223333:role/Payroll", "principal:"]\n'
             'responsible = "a@example.co.jp"\n')
    _write(tmp_path, register_toml=entry)
    (problem,) = _problems(tmp_path)
    assert "register.toml:4: entry[0].allowed[2]: 'principal:': principal: needs the principal's id" in problem
    _write(tmp_path, register_toml=entry.replace(', "principal:"]', "]"))
    (loaded,) = load_context(tmp_path).register
    assert loaded.allowed == ("principal:uid:1001", "principal:arn:aws:iam::111122223333:role/Payroll")


def test_a_contractor_may_list_its_aws_accounts_and_s3_canonical_ids(tmp_path):
    canonical = "AB" * 32
    aws = CONTRACTOR + f'aws_accounts = ["444455556666"]\naws_canonical_ids = [" {canonical} "]\n'
    _write(tmp_path, contractors_toml=aws)
    ctx = load_context(tmp_path)
    assert ctx.contractor_for_aws_account("444455556666").name == "Vendor"
    assert ctx.contractor_for_canonical_id(canonical).aws_canonical_ids == (canonical.lower(),)
    assert ctx.contractor_for_canonical_id("cd" * 32) is None and ctx.contractor_for_aws_account("999988887777") is None

    bad = CONTRACTOR + 'aws_accounts = ["4444-5555-6666"]\naws_canonical_ids = ["ab12"]\n'
    _write(tmp_path, contractors_toml=bad)
    f = tmp_path / "contractors.toml"
    problems = _problems(tmp_path)
    for want in (f"{f}:7: contractor[0].aws_accounts[0]: '4444-5555-6666' is not an AWS account id (12 digits",
                 f"{f}:8: contractor[0].aws_canonical_ids[0]: 'ab12' is not an S3 canonical user id (64 hexadecimal"):
        assert any(p.startswith(want) for p in problems), (want, problems)

    # one account or canonical id names one contractor: listed twice, a grant's contractor would be ambiguous
    again = aws.replace('"Vendor"', '"Again"').replace('["vendor.example.org"]', '["again.example.org"]')
    _write(tmp_path, contractors_toml=aws + "\n" + again)
    assert _problems(tmp_path) == [
        f"{f}:16: contractor[1].aws_accounts[0]: AWS account '444455556666' is already listed for contractor[0] (Vendor)",
        f"{f}:17: contractor[1].aws_canonical_ids[0]: canonical id '{canonical.lower()}' is already listed for "
        "contractor[0] (Vendor)",
    ]

"""The control catalogue: the packaged file (every rule mapped, nothing invented without saying so),
the override file's semantics, and each validation problem as an admin reads it (file:line: keypath)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import write_config

from collector.cli import main
from collector.config import ConfigError
from evidence.controls import OVERRIDE_FILE, PACKAGED_FILE, Catalogue, Control, load_catalogue
from evidence.findings.model import RULES

ROOT = Path(__file__).resolve().parents[2]
JIS, ISO, SOC2 = "JIS Q 15001:2023", "ISO/IEC 27001:2022", "SOC 2 (TSC 2017)"


def override(tmp_path: Path, text: str) -> Path:
    (tmp_path / OVERRIDE_FILE).write_text(text, encoding="utf-8")
    return tmp_path


def problems(tmp_path: Path, text: str) -> list[str]:
    override(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_catalogue(tmp_path)
    return [str(p) for p in exc.value.problems]


# -- the packaged catalogue ------------------------------------------------------------------------


def test_the_packaged_catalogue_loads_and_maps_every_rule():
    cat = load_catalogue(None)
    assert isinstance(cat, Catalogue) and cat.files == (PACKAGED_FILE,)
    assert PACKAGED_FILE.is_relative_to(ROOT / "evidence" / "data")  # shipped with the package (evidence/data/*)
    assert cat.frameworks == (JIS, ISO, SOC2)
    assert set(cat.rules) == set(RULES)
    ids = [c.id for c in cat.controls]
    assert len(ids) == len(set(ids))
    for rule in RULES:
        mapped = cat.controls_for(rule)
        assert mapped and len(mapped) == len(set(mapped)), rule
        assert {cat.control(c).framework for c in mapped} == {JIS, ISO, SOC2}, rule  # each rule in all three
    used = {c for rule in RULES for c in cat.controls_for(rule)}
    assert used == set(ids)  # no control that no rule evidences
    assert load_catalogue(None) == cat


def test_packaged_controls_say_what_was_not_confirmed():
    cat = load_catalogue(None)
    for c in cat.controls:
        assert isinstance(c, Control) and c.ref and c.title_ja and c.title_en, c
        assert c.confirmed or c.note, f"{c.id}: unconfirmed without a note"
        assert c.title("ja") == c.title_ja and c.title("en") == c.title_en
    jis = [c for c in cat.controls if c.framework == JIS]
    # JIS Q 15001:2023's text could not be checked: every entry unconfirmed, no 2023 number claimed
    assert jis and all(not c.confirmed and "2017" in c.note and c.ref.startswith("2017: A.3.") for c in jis)
    assert all(not re.search(r":A\.\d", c.id) for c in jis)  # descriptive ids, not numbers
    iso = [c for c in cat.controls if c.framework == ISO]
    assert all(c.confirmed and c.id == f"iso27001:{c.ref}" and re.fullmatch(r"A\.[5-8]\.\d{1,2}", c.ref) for c in iso)
    soc2 = [c for c in cat.controls if c.framework == SOC2]
    assert all(c.confirmed and c.id == f"soc2:{c.ref}" and re.fullmatch(r"(CC\d|C1|P\d)\.\d", c.ref) for c in soc2)
    by_id = {c.id: c for c in cat.controls}
    assert by_id["iso27001:A.5.15"].title_en == "Access control" and by_id["iso27001:A.5.15"].title_ja == "アクセス制御"
    assert by_id["iso27001:A.8.5"].title_en == "Secure authentication"
    assert by_id["soc2:CC9.2"].title_en == "The entity assesses and manages risks associated with vendors and business partners."
    assert by_id["jisq15001:supervision-of-contractors"].title_ja == "委託先の監督"


def test_a_few_mappings_an_auditor_would_expect():
    cat = load_catalogue(None)
    assert {"iso27001:A.8.5", "iso27001:A.8.2", "soc2:CC6.1"} <= set(cat.controls_for("admin_without_mfa"))
    assert {"jisq15001:supervision-of-contractors", "iso27001:A.5.19", "soc2:CC9.2"} <= set(cat.controls_for("unapproved_domain"))
    assert {"iso27001:A.6.5", "soc2:CC6.2"} <= set(cat.controls_for("leaver_enabled"))
    assert {"jisq15001:pi-identification", "iso27001:A.5.34"} <= set(cat.controls_for("register_drift"))
    assert "soc2:CC4.1" in cat.controls_for("collection_failed")
    assert [c.id for c in cat.for_rule("privileged_too_many")] == list(cat.controls_for("privileged_too_many"))


def test_lookups_of_unknown_ids_raise_key_error():
    cat = load_catalogue(None)
    with pytest.raises(KeyError, match="no control 'iso27001:A.9.9'"):
        cat.control("iso27001:A.9.9")
    with pytest.raises(KeyError, match="'anyone_link' is not a findings rule"):
        cat.controls_for("anyone_link")


# -- overrides -------------------------------------------------------------------------------------


def test_no_override_file_is_the_packaged_catalogue(tmp_path):
    assert load_catalogue(tmp_path) == load_catalogue(None)


def test_an_override_adds_controls_replaces_fields_and_replaces_rule_mappings(tmp_path):
    packaged = load_catalogue(None)
    cat = load_catalogue(override(tmp_path, """\
[[control]]
id = "internal:sec-7"
framework = "社内規程"
ref = "第7条"
title_ja = "社外共有の承認"
title_en = "Approval of external sharing"

[[control]]                      # a JIS number checked against the organisation's copy
id = "jisq15001:supervision-of-contractors"
ref = "A.21"
confirmed = true
note = "checked 2026-04-01"

[[control]]                      # own wording, confirmation not claimed: unconfirmed
id = "iso27001:A.5.15"
title_ja = "アクセス制御 (社内訳)"

[[control]]                      # only the note: the packaged confirmation stands; "" removes it
id = "iso27001:A.8.5"
note = ""

[[control]]
id = "soc2:CC6.1"
note = "in scope of our SOC 2 Type II"

[rules]
share_without_expiry = ["internal:sec-7", "iso27001:A.5.14"]
privileged_too_many = []
"""))
    assert cat.files == (PACKAGED_FILE, tmp_path / OVERRIDE_FILE)
    assert cat.frameworks == (JIS, ISO, SOC2, "社内規程")  # a new framework comes after the packaged ones
    new = cat.control("internal:sec-7")
    assert (new.framework, new.ref, new.confirmed, new.note) == ("社内規程", "第7条", False, None)  # confirmed defaults to false
    jis = cat.control("jisq15001:supervision-of-contractors")
    assert (jis.ref, jis.confirmed, jis.note, jis.title_ja) == ("A.21", True, "checked 2026-04-01", "委託先の監督")
    iso = cat.control("iso27001:A.5.15")
    assert iso.title_ja == "アクセス制御 (社内訳)" and iso.title_en == "Access control" and iso.confirmed is False
    assert cat.control("iso27001:A.8.5").confirmed is True and cat.control("iso27001:A.8.5").note is None
    assert cat.control("soc2:CC6.1").confirmed is True and cat.control("soc2:CC6.1").note == "in scope of our SOC 2 Type II"
    assert [c.id for c in cat.controls][: len(packaged.controls)] == [c.id for c in packaged.controls]  # replaced in place
    assert cat.controls[-1].id == "internal:sec-7"
    # a listed rule gets exactly its list (replaced, not extended; [] allowed); the others keep theirs
    assert cat.controls_for("share_without_expiry") == ("internal:sec-7", "iso27001:A.5.14")
    assert cat.controls_for("privileged_too_many") == ()
    assert all(cat.controls_for(r) == packaged.controls_for(r) for r in RULES
               if r not in ("share_without_expiry", "privileged_too_many"))


def test_the_example_override_loads_and_does_what_it_says(tmp_path):
    shutil.copy(ROOT / "config" / "controls.toml.example", tmp_path / OVERRIDE_FILE)
    cat = load_catalogue(tmp_path)
    assert cat.control("internal:sec-7").confirmed is True
    assert "internal:sec-7" in cat.controls_for("share_without_expiry")
    assert cat.control("jisq15001:supervision-of-contractors").confirmed is False  # example 2 is commented out
    text = (ROOT / "config" / "controls.toml.example").read_text(encoding="utf-8")
    assert "使うには" in text and "Rename this file" in text


# -- problems: file, line, key path ----------------------------------------------------------------


def test_not_toml(tmp_path):
    (p,) = problems(tmp_path, '[[control]]\nid = "x:y"\nref = \n')
    assert p.startswith(f"{tmp_path / OVERRIDE_FILE}:3: not valid TOML")


def test_unknown_keys_and_wrong_types_name_file_line_and_key_path(tmp_path):
    f = tmp_path / OVERRIDE_FILE
    got = problems(tmp_path, """\
[[control]]
id = "iso27001:A.5.15"
titel_en = "Access control"

[[control]]
id = "iso27001:A.8.5"
confirmed = "yes"
ref = 5

[[control]]
id = "not an id"

[mapping]
x = 1
""")
    assert got == [
        f"{f}:13: mapping: unknown key (this file holds [[control]] tables and a [rules] table)",
        f"{f}:3: control[0].titel_en: unknown key",
        f"{f}:8: control[1].ref: Input should be a valid string",
        f"{f}:7: control[1].confirmed: Input should be a valid boolean",
        f"{f}:11: control[2].id: 'not an id' is not a control id: write '<framework>:<reference>', e.g. \"iso27001:A.5.15\"",
    ]


def test_duplicate_ids_and_incomplete_new_controls(tmp_path):
    f = tmp_path / OVERRIDE_FILE
    got = problems(tmp_path, """\
[[control]]
id = "internal:a"
framework = "Internal"
ref = "1"
title_ja = "一"
title_en = "One"

[[control]]
id = "internal:a"
note = "again"

[[control]]
id = "internal:b"
ref = "2"
""")
    assert got == [
        f"{f}:9: control[1].id: 'internal:a' is already defined in this file by control[0] (line 2)",
        f"{f}:13: control[2].framework: required for a new control (the catalogue has no control 'internal:b')",
        f"{f}:13: control[2].title_ja: required for a new control (the catalogue has no control 'internal:b')",
        f"{f}:13: control[2].title_en: required for a new control (the catalogue has no control 'internal:b')",
    ]


def test_rule_mappings_name_the_rule_the_item_and_its_line(tmp_path):
    f = tmp_path / OVERRIDE_FILE
    got = problems(tmp_path, """\
[rules]
public_shares = ["iso27001:A.5.15"]
guest_can_edit = [
    "iso27001:A.5.15",
    "iso27001:A5.15",
    "iso27001:A.5.15",
    7,
]
leaver_enabled = "iso27001:A.6.5"
""")
    assert got == [
        f"{f}:2: rules.public_shares: 'public_shares' is not a findings rule (did you mean 'public_share'?)",
        f"{f}:5: rules.guest_can_edit[1]: no control 'iso27001:A5.15' in the catalogue (did you mean 'iso27001:A.5.15'?)",
        f"{f}:6: rules.guest_can_edit[2]: 'iso27001:A.5.15' is listed twice for this rule",
        f"{f}:3: rules.guest_can_edit[3]: must be a control id (text), not int",
        f"{f}:9: rules.leaver_enabled: must be a list of control ids, e.g. [\"iso27001:A.5.15\"]",
    ]


def test_tables_written_the_wrong_way(tmp_path):
    f = tmp_path / OVERRIDE_FILE
    got = problems(tmp_path, 'control = "iso27001:A.5.15"\nrules = ["public_share"]\n')
    assert got == [
        f"{f}:1: control: write each control as a [[control]] table",
        f"{f}:2: rules: write [rules] as a table: <rule id> = [<control id>, …]",
    ]


def test_a_rule_may_name_a_control_defined_in_the_same_file_but_not_one_defined_nowhere(tmp_path):
    cat = load_catalogue(override(tmp_path, """\
[rules]
guest_inactive = ["internal:x"]

[[control]]
id = "internal:x"
framework = "Internal"
ref = "X"
title_ja = "エックス"
title_en = "X"
"""))
    assert cat.controls_for("guest_inactive") == ("internal:x",)


# -- shoseki check ---------------------------------------------------------------------------------


def test_check_validates_config_controls_toml(tmp_path):
    path = write_config(tmp_path)
    result = CliRunner().invoke(main, ["--config", str(path), "check"])
    assert result.exit_code == 0 and "control catalogue" not in result.output  # no override: nothing to say
    (path.parent / OVERRIDE_FILE).write_text('[rules]\nguest_can_edit = ["iso27001:A.5.51"]\n', encoding="utf-8")
    result = CliRunner().invoke(main, ["--config", str(path), "check"])
    assert result.exit_code == 2
    assert f"{path.parent / OVERRIDE_FILE}:2: rules.guest_can_edit[0]: no control 'iso27001:A.5.51'" in result.output
    (path.parent / OVERRIDE_FILE).write_text('[rules]\nguest_can_edit = ["iso27001:A.5.15"]\n', encoding="utf-8")
    result = CliRunner().invoke(main, ["--config", str(path), "check"])
    assert result.exit_code == 0
    assert f"control catalogue OK: {path.parent / OVERRIDE_FILE}" in result.output


def test_a_catalogue_that_leaves_a_rule_unmapped_is_refused(tmp_path, monkeypatch):
    """What the packaged-file test guards against, seen from a broken packaged file."""
    broken = tmp_path / "packaged.toml"
    text = PACKAGED_FILE.read_text(encoding="utf-8")
    broken.write_text(re.sub(r"(?m)^guest_inactive = \[[^\]]*\]\n", "", text), encoding="utf-8")
    monkeypatch.setattr("evidence.controls.PACKAGED_FILE", broken)
    with pytest.raises(ConfigError) as exc:
        load_catalogue(None)
    assert [str(p) for p in exc.value.problems] == [
        f"{broken}: rules.guest_inactive: the rule is not mapped: every findings rule needs a list of controls"]

import pytest
from click.testing import CliRunner
from conftest import fake_connector, files_connector, write_config

from collector.cli import main
from collector.config import ConfigError, load_config


def _problems(path):
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    return [str(p) for p in exc.value.problems]


def test_valid_config_loads_with_defaults_and_relative_paths(tmp_path, fake_registered):
    path = write_config(tmp_path, connectors={"f.toml": fake_connector()}, vault=tmp_path / "v")
    path.write_text(path.read_text().replace(str(tmp_path / "v"), "../v"))
    cfg = load_config(path)
    assert cfg.vault_path == tmp_path / "v"
    entry = cfg.connectors[0]
    assert (entry.id, entry.type, entry.schedule, entry.max_age.total_seconds()) == ("fake-1", "fake", "0 3 * * *", 26 * 3600)
    assert cfg.organization.domains == ("example.co.jp",)
    assert len(entry.digest()) == 64


def test_unknown_key_names_file_line_and_key_path(tmp_path):
    path = write_config(tmp_path, main_extra="typo_key = 1\n")
    path.write_text(path.read_text().replace("[vault]\n", "[vault]\npathh = 'x'\n"))
    problems = _problems(path)
    assert any(p.startswith(f"{path}:7: vault.pathh: unknown key") for p in problems), problems
    assert any("vault.typo_key: unknown key" in p for p in problems), problems


def test_wrong_type_and_bad_values(tmp_path, fake_registered):
    path = write_config(
        tmp_path,
        connectors={"f.toml": fake_connector().replace("records = 5", 'records = "many"') + 'schedule = "61 * * * *"\nmax_age = "soon"\n'},
    )
    problems = _problems(path)
    f = tmp_path / "config" / "connectors" / "f.toml"
    assert any(p.startswith(f"{f}:5: connector[0].records:") for p in problems), problems
    assert any("connector[0].schedule: '61 * * * *' is not a valid crontab" in p for p in problems), problems
    assert any("connector[0].max_age: 'soon' is not a duration" in p for p in problems), problems


def test_inline_secret_is_refused_with_the_spelling_to_use(tmp_path, fake_registered):
    path = write_config(tmp_path, connectors={"f.toml": fake_connector() + 'client_secret = "hunter2"\n'})
    problems = _problems(path)
    assert len([p for p in problems if "client_secret" in p]) == 1
    p = [p for p in problems if "client_secret" in p][0]
    assert "connector[0].client_secret: inline secrets are refused" in p
    assert "client_secret_file" in p and "client_secret_env" in p
    assert "hunter2" not in p


def test_missing_root_and_unknown_type_and_duplicate_id(tmp_path, fake_registered):
    good = tmp_path / "exists"
    good.mkdir()
    body = files_connector(good).replace(f'roots = ["{good}"]', f'roots = ["{good}", "{tmp_path}/nope"]')
    path = write_config(
        tmp_path,
        connectors={
            "a.toml": body,
            "b.toml": '[[connector]]\nid = "x-1"\ntype = "dropbox"\n',
            "c.toml": fake_connector("files-main"),
        },
    )
    problems = _problems(path)
    a = tmp_path / "config" / "connectors" / "a.toml"
    assert any(p.startswith(f"{a}:4: connector[0].roots[1]:") and "path does not exist" in p for p in problems), problems
    assert any("connector[0].type: unknown connector type 'dropbox'" in p for p in problems), problems


def test_duplicate_ids_are_refused(tmp_path, fake_registered):
    path = write_config(tmp_path, connectors={"a.toml": fake_connector("same"), "b.toml": fake_connector("same")})
    problems = _problems(path)
    assert any("connector[0].id: id 'same' is already used" in p for p in problems), problems


def test_missing_config_file(tmp_path):
    problems = _problems(tmp_path / "nope.toml")
    assert problems == [f"{tmp_path / 'nope.toml'}: file not found"]


def test_bad_toml_names_the_line(tmp_path):
    path = write_config(tmp_path, main_extra="[defaults\n")
    problems = _problems(path)
    assert problems[0].startswith(f"{path}:8: not valid TOML")


@pytest.mark.parametrize(
    "extra, message",
    [
        ("unknown_option = true\n", "f.toml:6: connector[0].unknown_option: unknown key"),
        ('password = "hunter2"\n', "f.toml:6: connector[0].password: inline secrets are refused"),
        ("", "f.toml:5: connector[0].records: Input should be a valid integer"),
    ],
)
def test_cli_exits_2_and_writes_nothing_on_bad_config(tmp_path, fake_registered, extra, message):
    body = fake_connector() + extra
    if not extra:
        body = body.replace("records = 5", 'records = "five"')
    path = write_config(tmp_path, connectors={"f.toml": body})
    for command in (["collect"], ["check"], ["verify"]):
        result = CliRunner().invoke(main, ["--config", str(path), *command])
        assert result.exit_code == 2
        assert message in result.output
        assert "hunter2" not in result.output
    assert not (tmp_path / "vault").exists()


def test_cli_missing_config_file_exits_2(tmp_path):
    result = CliRunner().invoke(main, ["--config", str(tmp_path / "none.toml"), "collect"])
    assert result.exit_code == 2
    assert f"{tmp_path / 'none.toml'}: file not found" in result.output


def test_repo_example_config_is_the_starter_and_is_valid(tmp_path):
    from pathlib import Path

    from collector.starter import STARTER, starter_text, write_starter_config

    repo = Path(__file__).resolve().parents[2] / "config"
    for rel in STARTER:
        assert (repo / rel).read_text(encoding="utf-8") == starter_text(rel)
    written = write_starter_config(tmp_path / "cfg")
    cfg = load_config(written[0])
    assert cfg.connectors == () and cfg.main.organization.timezone == "Asia/Tokyo"
    with pytest.raises(FileExistsError):
        write_starter_config(tmp_path / "cfg")
    # the context examples, renamed as their comments say, load as they are
    from collector.context import load_context
    from evidence.controls import load_catalogue

    for example in (tmp_path / "cfg").glob("*.example"):
        example.rename(example.with_suffix(""))
    ctx = load_context(tmp_path / "cfg")
    assert (len(ctx.contractors), len(ctx.exceptions), len(ctx.register)) == (1, 1, 1) and ctx.roster
    assert len(load_catalogue(tmp_path / "cfg").files) == 2


def test_findings_thresholds(tmp_path):
    from conftest import write_config

    cfg = load_config(write_config(tmp_path, main_extra="[findings]\ninactive_days = 30\ntop_admins_max = 9\n"))
    assert (cfg.main.findings.inactive_days, cfg.main.findings.top_admins_max, cfg.main.findings.top_admins_min) == (30, 9, 2)
    with pytest.raises(ConfigError) as exc:
        load_config(write_config(tmp_path, main_extra="[findings]\ntop_admins_min = 3\ntop_admins_max = 2\ninactive = 1\n"))
    text = "\n".join(str(p) for p in exc.value.problems)
    assert "findings.top_admins_max" in text and "below top_admins_min (3)" in text and "findings.inactive" in text


@pytest.mark.parametrize(("field", "days"), [
    ("1", ["Monday"]), ("0", ["Sunday"]), ("7", ["Sunday"]), ("1-5", ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]),
    ("*/2", ["Sunday", "Tuesday", "Thursday", "Saturday"]), ("mon,wed", ["Monday", "Wednesday"]), ("5-7", ["Friday", "Saturday", "Sunday"]),
])
def test_crontab_weekdays_count_from_sunday_as_cron_does(field, days):
    """APScheduler 3 numbers days from Monday = 0: "0 7 * * 1" must still run on Mondays."""
    from datetime import datetime, timedelta, timezone

    from collector.config import schedule_trigger

    trigger = schedule_trigger(f"0 7 * * {field}", "Asia/Tokyo")
    start, seen = datetime(2026, 11, 29, tzinfo=timezone.utc), set()  # a Sunday
    fire = trigger.get_next_fire_time(None, start)
    while fire < start + timedelta(days=7):
        seen.add(fire.strftime("%A"))
        fire = trigger.get_next_fire_time(fire, fire + timedelta(minutes=1))
    assert sorted(seen) == sorted(days)


def test_bad_crontab_weekdays_are_refused(tmp_path):
    from collector.config import validate_schedule

    for bad in ("0 7 * * 8", "0 7 * * 5-1", "0 7 * * funday", "0 7 * *"):
        with pytest.raises(ValueError, match="is not a valid crontab expression"):
            validate_schedule(bad)

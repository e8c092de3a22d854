import io
import logging
import stat

from click.testing import CliRunner
from conftest import fake_connector, files_connector, write_config

from collector.cli import main
from collector.progress import ProgressPrinter
from collector.runner import Progress


def test_check_reports_each_connector_and_a_bad_one_fails_alone(tmp_path, small_tree, fake_registered, monkeypatch):
    path = write_config(tmp_path, connectors={"a.toml": files_connector(small_tree), "b.toml": fake_connector("broken")})
    import fakes

    def boom(self):
        raise RuntimeError("credential file unreadable")

    monkeypatch.setattr(fakes.FakeConnector, "check", boom)
    result = CliRunner().invoke(main, ["--config", str(path), "check"])
    assert result.exit_code == 1
    assert "configuration OK" in result.output
    assert "[OK  ] files-main (local_files)" in result.output
    assert f"ok  root {small_tree}" in result.output
    assert "[FAIL] broken (fake): RuntimeError: credential file unreadable" in result.output


def test_check_all_good_exits_0(tmp_path, small_tree):
    path = write_config(tmp_path, connectors={"a.toml": files_connector(small_tree)})
    assert CliRunner().invoke(main, ["--config", str(path), "check"]).exit_code == 0


def test_check_validates_the_context_files(tmp_path, small_tree):
    path = write_config(tmp_path, connectors={"a.toml": files_connector(small_tree)})
    (path.parent / "roster.csv").write_text("email,name,department,manager,status,start,end\n"
                                            "a@example.co.jp,A,,,active,2020-01-01,\n", encoding="utf-8")
    result = CliRunner().invoke(main, ["--config", str(path), "check"])
    assert result.exit_code == 0 and "context OK: roster.csv (0 contractor(s), 0 exception(s), 0 register entr(ies), 1 person(s)" in result.output
    (path.parent / "register.toml").write_text(
        '[[entry]]\nname = "HR"\nlocations = [{ connector = "nope" }]\nresponsible = "a@example.co.jp"\n', encoding="utf-8")
    result = CliRunner().invoke(main, ["--config", str(path), "check"])
    assert result.exit_code == 2
    assert "register.toml:3: entry[0].locations[0].connector: no connector with id 'nope' (configured: files-main)" in result.output


def test_collect_unknown_id_and_no_connectors(tmp_path, small_tree):
    path = write_config(tmp_path, connectors={"a.toml": files_connector(small_tree)})
    result = CliRunner().invoke(main, ["--config", str(path), "collect", "nope"])
    assert result.exit_code == 2 and "no connector with id 'nope' (configured: files-main)" in result.output
    empty = write_config(tmp_path / "empty")
    result = CliRunner().invoke(main, ["--config", str(empty), "collect"])
    assert result.exit_code == 2 and "no connectors configured" in result.output


def test_collect_writes_a_restricted_signed_bag(files_config, tmp_path):
    result = CliRunner().invoke(main, ["--config", str(files_config), "collect", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "files-main: complete ->" in result.output
    vault = tmp_path / "vault"
    bag = next(vault.glob("2*/2*/*"))
    assert (bag / "tagmanifest-sha256.txt.minisig").exists()
    assert (vault / "minisign.pub").exists()
    for p in [bag, *bag.rglob("*")]:
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode & 0o027 == 0, f"{p} is {oct(mode)}"  # nothing for group-write or other


def test_keygen_refuses_to_overwrite(tmp_path):
    sk, pk = tmp_path / "k.key", tmp_path / "k.pub"
    result = CliRunner().invoke(main, ["keygen", "--secret-key", str(sk), "--public-key", str(pk)])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(sk.stat().st_mode) == 0o600
    assert "key id" in result.output
    before = sk.read_bytes()
    again = CliRunner().invoke(main, ["keygen", "--secret-key", str(sk), "--public-key", str(pk)])
    assert again.exit_code == 2 and sk.read_bytes() == before


def test_encrypted_or_broken_signing_key_is_a_clear_error(tmp_path, small_tree):
    bad = tmp_path / "bad.key"
    bad.write_text("untrusted comment: x\nnot base64!\n")
    path = write_config(tmp_path, connectors={"a.toml": files_connector(small_tree)}, signing_key=bad)
    result = CliRunner().invoke(main, ["--config", str(path), "collect"])
    assert result.exit_code == 2
    assert "signing key:" in result.output and str(bad) in result.output
    assert not list((tmp_path / "vault").glob("2*"))


def test_init_writes_a_starter_config(tmp_path):
    result = CliRunner().invoke(main, ["init", str(tmp_path / "cfg")])
    assert result.exit_code == 0
    assert (tmp_path / "cfg" / "shoseki.toml").exists()
    assert CliRunner().invoke(main, ["init", str(tmp_path / "cfg")]).exit_code == 2


def test_progress_line_on_a_terminal_and_log_lines_otherwise(caplog):
    p = Progress("files-main", records=1234, pages=7, errors=2, throttle_wait_s=3.0)
    out = io.StringIO()
    live = ProgressPrinter(out, live=True)
    live.update(p)
    live.finish("files-main")
    text = out.getvalue()
    assert text.startswith("\rfiles-main  7 pages  1,234 records") and "2 errors" in text and "throttled 3s" in text
    assert text.endswith("\n")
    quiet = io.StringIO()
    with caplog.at_level(logging.INFO, logger="shoseki.progress"):
        printer = ProgressPrinter(quiet, live=False, log_every=3600)
        printer.update(p)
        printer.update(p)  # within log_every: no second line
        p.done = True
        printer.update(p)  # the final one is always logged
    assert quiet.getvalue() == ""
    assert len([r for r in caplog.records if "1,234 records" in r.message]) == 2

from click.testing import CliRunner
from conftest import fake_connector, write_config

from collector.cli import main
from collector.config import load_config
from collector.runner import recover, run_connector
from collector.state import Catalogue
from evidence.vault import Vault


def test_reindex_rebuilds_runs_and_cursors_from_the_vault(tmp_path, fake_registered):
    path = write_config(tmp_path, connectors={"f.toml": fake_connector(), "g.toml": fake_connector("fake-2", "raise_midway")})
    cfg = load_config(path)
    for entry in cfg.connectors:
        run_connector(cfg, entry)
    run_connector(cfg, cfg.connectors[0])
    vault = Vault(cfg.vault_path)
    (vault.partial / "rdead0001" / "data").mkdir(parents=True)
    recover(vault)
    cat = Catalogue(vault)
    key = lambda r: (r["run_id"], r["connector_id"], r["status"], r.get("bag"), r.get("digest"))
    before = sorted(map(key, cat.runs()))
    cursor_before = cat.cursor("fake-1")
    cat.path.unlink()
    result = CliRunner().invoke(main, ["--config", str(path), "reindex"])
    assert result.exit_code == 0, result.output
    assert "catalogue rebuilt: 4 run(s), 1 cursor(s)" in result.output
    assert sorted(map(key, cat.runs())) == before
    assert cat.cursor("fake-1") == cursor_before == {"token": "t5"}
    assert cat.cursor("fake-2") is None  # its only run was partial: no cursor

"""Shared fixtures: temporary configurations and vaults, and keys generated at run time."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

# helpers shared by test modules: ``from conftest import write_config`` and tests/support/*.py
# (pytest runs with --import-mode=importlib, so equal test file names in two folders are fine)
sys.path.insert(0, str(Path(__file__).parent / "support"))
sys.path.insert(0, str(Path(__file__).parent))


def write_config(
    base: Path,
    *,
    connectors: dict[str, str] | None = None,
    main_extra: str = "",
    vault: Path | None = None,
    signing_key: Path | None = None,
) -> Path:
    """Write ``base/config/shoseki.toml`` plus connector files; return the main file's path."""
    config_dir = base / "config"
    (config_dir / "connectors").mkdir(parents=True, exist_ok=True)
    vault = vault or base / "vault"
    key_line = f'signing_key = "{signing_key}"\n' if signing_key else ""
    (config_dir / "shoseki.toml").write_text(
        textwrap.dedent(
            f"""\
            [organization]
            name = "テスト株式会社"
            domains = ["example.co.jp"]
            timezone = "Asia/Tokyo"

            [vault]
            path = "{vault}"
            """
        )
        + key_line
        + main_extra,
        encoding="utf-8",
    )
    for name, body in (connectors or {}).items():
        (config_dir / "connectors" / name).write_text(textwrap.dedent(body), encoding="utf-8")
    return config_dir / "shoseki.toml"


def files_connector(root: Path, cid: str = "files-main", extra: str = "") -> str:
    return f'[[connector]]\nid = "{cid}"\ntype = "local_files"\nroots = ["{root}"]\n{extra}'


@pytest.fixture
def small_tree(tmp_path: Path) -> Path:
    root = tmp_path / "share"
    (root / "人事").mkdir(parents=True)
    (root / "人事" / "給与.csv").write_text("x", encoding="utf-8")
    (root / "open").mkdir()
    os.chmod(root / "open", 0o777)
    (root / "open" / "a.txt").write_text("y", encoding="utf-8")
    return root


@pytest.fixture
def keypair(tmp_path: Path) -> tuple[Path, Path]:
    from evidence.signing import write_keypair

    sk, pk = tmp_path / "keys" / "minisign.key", tmp_path / "keys" / "minisign.pub"
    sk.parent.mkdir()
    write_keypair(sk, pk)
    return sk, pk


@pytest.fixture
def files_config(tmp_path: Path, small_tree: Path, keypair) -> Path:
    return write_config(tmp_path, connectors={"files.toml": files_connector(small_tree)}, signing_key=keypair[0])


@pytest.fixture
def fake_registered(monkeypatch):
    """Register tests/support/fakes.py:FakeConnector as type "fake" for one test."""
    from connectors import REGISTRY, connector_class

    monkeypatch.setitem(REGISTRY, "fake", "fakes:FakeConnector")
    connector_class.cache_clear()
    yield
    connector_class.cache_clear()


def fake_connector(cid: str = "fake-1", behaviour: str = "ok", records: int = 5) -> str:
    return f'[[connector]]\nid = "{cid}"\ntype = "fake"\nbehaviour = "{behaviour}"\nrecords = {records}\n'

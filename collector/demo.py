"""``shoseki demo``: a sample file share with planted problems, collected, sealed and verified.

Everything it makes lives in two folders (``shoseki-demo/`` and ``vault/`` by default), so a
newcomer can delete both and start again. Running it twice adds a second bag per connector,
which shows the chain and the "changes since the previous bundle" counts.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from collector.config import load_config

# (relative path, mode, what the auditor should notice) — the planted problems are the point
SAMPLE_TREE: tuple[tuple[str, int, str], ...] = (
    ("総務部", 0o750, ""),
    ("総務部/従業員名簿.csv", 0o640, "personal information, group-readable only: fine"),
    ("人事部", 0o755, ""),
    ("人事部/給与", 0o755, ""),
    ("人事部/給与/給与明細_2026-10.csv", 0o644, "PLANTED: salary data readable by every local account"),
    ("共有", 0o777, "PLANTED: a world-writable folder"),
    ("共有/議事録.txt", 0o666, "PLANTED: a world-writable file"),
    ("営業部", 0o750, ""),
    ("営業部/顧客リスト.csv", 0o640, "PLANTED (when ACLs are supported): a POSIX ACL grants a named account read access"),
    ("委託先受け渡し", 0o770, "a contractor hand-over folder"),
    ("委託先受け渡し/納品データ.zip", 0o660, ""),
)


def build_sample_tree(root: Path) -> list[str]:
    """Create the sample share (idempotent); return notes on what could not be planted."""
    notes = []
    for rel, mode, _ in SAMPLE_TREE:
        path = root / rel
        if "." in Path(rel).name:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                path.write_text("sample data for the shoseki demo; no real personal information\n", encoding="utf-8")
        else:
            path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)
    try:
        from connectors.local_files import plant_acl_for_demo

        plant_acl_for_demo(root / "営業部/顧客リスト.csv", uid=65534)
    except OSError as exc:
        notes.append(f"POSIX ACLs are not supported here ({exc.strerror}); the ACL example was skipped")
    return notes


def write_demo_config(workdir: Path, vault: Path, files_root: Path, signing_key: Path) -> Path:
    config_dir = workdir / "config"
    (config_dir / "connectors").mkdir(parents=True, exist_ok=True)
    main = config_dir / "shoseki.toml"
    main.write_text(
        "# Written by `shoseki demo`. A real installation starts from `shoseki init`.\n"
        "[organization]\n"
        'name = "サンプル株式会社 (Example K.K.)"\n'
        'domains = ["example.co.jp"]\n'
        'timezone = "Asia/Tokyo"\n'
        'language = "ja"\n\n'
        "[vault]\n"
        f"path = {_toml_str(vault)}\n"
        f"signing_key = {_toml_str(signing_key)}\n\n"
        "[defaults]\n"
        'schedule = "0 3 * * *"\n'
        'max_age = "26h"\n',
        encoding="utf-8",
    )
    (config_dir / "connectors" / "files.toml").write_text(
        "[[connector]]\n"
        'id = "files-demo"\n'
        'type = "local_files"\n'
        f"roots = [{_toml_str(files_root)}]\n"
        'exclude = ["*.tmp"]\n',
        encoding="utf-8",
    )
    # the sample share's HR folder holds personal information: only its owner and group may read it
    hr = files_root / "人事部"
    (config_dir / "register.toml").write_text(
        "# Written by `shoseki demo`: the personal-information register (README: \"Findings\").\n"
        "[[entry]]\n"
        'name = "給与明細 (ファイルサーバ) / payslips on the file server"\n'
        f'locations = [{{ connector = "files-demo", resource_prefix = {_toml_str(hr)} }}]\n'
        f'allowed = ["principal:uid:{hr.stat().st_uid}", "principal:gid:{hr.stat().st_gid}"]\n'
        'responsible = "hr-manager@example.co.jp"\n',
        encoding="utf-8",
    )
    return main


def _toml_str(path: Path) -> str:
    return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'


def run_demo(workdir: Path, vault_path: Path, *, echo: Callable[[str], None] = print) -> int:
    from evidence.signing import write_keypair

    workdir, vault_path = workdir.resolve(), vault_path.resolve()
    files_root = workdir / "files"
    keys = workdir / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    secret = keys / "minisign.key"
    if not secret.exists():
        write_keypair(secret, keys / "minisign.pub")
    echo(f"sample file share: {files_root}")
    for note in build_sample_tree(files_root):
        echo(f"  note: {note}")
    main_config = write_demo_config(workdir, vault_path, files_root, secret)
    env = _start_sandbox_if_needed(workdir, main_config, echo)
    try:
        return _collect_and_verify(load_config(main_config), echo)
    finally:
        if env is not None:
            env.close()


def _start_sandbox_if_needed(workdir: Path, main_config: Path, echo: Callable[[str], None]):
    """Start the sandbox when a registered connector can run against it; add those connectors."""
    from connectors import REGISTRY
    from sandbox.env import CONNECTOR_TEMPLATES, CONTEXT_FILES, SandboxEnv

    if not any(kind in CONNECTOR_TEMPLATES for kind in REGISTRY):
        return None
    env = SandboxEnv(workdir / "sandbox").start()
    echo(f"sandbox organisation: {env.org.n} users at 127.0.0.1 ({env.workdir / 'endpoints.json'})")
    for name, text in env.connector_files().items():
        (main_config.parent / "connectors" / name).write_text(text, encoding="utf-8")
    ids = {entry.id for entry in load_config(main_config).connectors}
    for name in CONTEXT_FILES:  # its contractors, register and roster: what the report judges against
        text = (env.workdir / "context" / name).read_text(encoding="utf-8")
        if name == "register.toml":  # the sandbox's entries go after the sample share's
            if _names_only(text, ids):  # (not when it names a connector this demo does not run)
                with open(main_config.parent / name, "a", encoding="utf-8") as f:
                    f.write("\n" + text)
            continue
        (main_config.parent / name).write_text(text, encoding="utf-8")
    return env


def _names_only(register_text: str, ids: set[str]) -> bool:
    import tomllib

    entries = tomllib.loads(register_text).get("entry", [])
    return all(loc.get("connector") in ids for e in entries for loc in e.get("locations", []))


def _collect_and_verify(config, echo: Callable[[str], None]) -> int:
    from collector.runner import prepare, run_connector
    from evidence.verify import verify_vault

    vault, key, _ = prepare(config)
    worst = 0
    for entry in config.connectors:
        outcome = run_connector(config, entry, signing_key=key)
        echo(f"collected {entry.id}: {outcome.status}")
        if outcome.bag:
            echo(f"  bag:     {outcome.bag.path}")
            echo(f"  summary: {outcome.bag.path / 'data' / 'summary.html'}")
            echo(f"  tables:  {outcome.bag.path / 'data' / 'tables'}")
        worst = max(worst, 0 if outcome.status == "complete" else 1)
    _report(config, key, echo)
    report = verify_vault(vault)
    echo(f"verify: {'OK' if report.ok else 'FAILED'} ({report.bags} bag(s), {report.files} files)")
    for p in report.problems:
        echo(f"  PROBLEM {p.describe()}")
    index = _write_index(config, vault, report)
    echo("")
    if index is not None:
        echo(f"vault index: {index}  (open it in a browser: every bag by month, with its verification)")
    echo(f"config used: {config.path}  (try: shoseki --config {config.path} verify)")
    echo(f"public key:  {vault.public_key}  (auditors verify signatures with minisign -V)")
    return worst if report.ok else 1


def _report(config, key, echo: Callable[[str], None]) -> None:
    """Judge what was just collected (`shoseki report`) and say where the report is."""
    from evidence.report import build_report, summary_lines

    result = build_report(config, signing_key=key)
    for line in summary_lines(result, config.tz):
        echo(line)


def _write_index(config, vault, report):
    """vault/index.html with the results of the verify just made; None if it could not be written."""
    from collector.runner import refresh_vault_index
    from evidence.vault_index import record_verification

    try:
        record_verification(vault, report)
    except OSError:
        pass  # the page then shows the checks made after each seal
    return refresh_vault_index(config, vault)

"""The ``shoseki`` command.

Exit codes: 0 all good; 1 the command ran but something needs attention (a run not complete,
a verification problem, a failing check); 2 the configuration or the command line is wrong.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from collector.config import ConfigError, LoadedConfig, default_config_path, load_config
from evidence.vault import AlreadyRunning, Vault

log = logging.getLogger("shoseki")


class OneLineFormatter(logging.Formatter):
    """Human-readable, one line per event: line breaks (tracebacks) are folded into " | "."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\r", "").replace("\n", " | ")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC), level, logger, message, and the event fields the
    daemon adds (connector, run_id, event, status); a traceback goes in ``exception``."""

    FIELDS = ("connector", "run_id", "event", "status")

    def format(self, record: logging.LogRecord) -> str:
        import json
        from datetime import datetime, timezone

        out = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update({k: getattr(record, k) for k in self.FIELDS if hasattr(record, k)})
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def _setup_logging(verbose: bool, log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else OneLineFormatter())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    for noisy in ("googleapiclient", "urllib3", "botocore", "boto3", "msal", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _load(ctx: click.Context) -> LoadedConfig:
    path = ctx.obj["config_path"]
    try:
        return load_config(path)
    except ConfigError as exc:
        _config_problems(ctx, exc)
        raise  # unreachable; ctx.exit raises


def _config_problems(ctx: click.Context, exc: ConfigError) -> None:
    """Print every problem of a configuration or context file and exit 2."""
    click.echo(f"configuration error ({len(exc.problems)}):", err=True)
    for p in exc.problems:
        click.echo(f"  {p}", err=True)
    ctx.exit(2)


def _judging_inputs(ctx: click.Context, config: LoadedConfig):
    """The context files and the control catalogue (``report`` judges with them); exit 2 on a problem."""
    from collector.context import load_context
    from evidence.controls import load_catalogue

    try:
        return (load_context(config.path.parent, connector_ids={c.id for c in config.connectors}),
                load_catalogue(config.path.parent))
    except ConfigError as exc:
        _config_problems(ctx, exc)
        raise  # unreachable


def _prepare(ctx: click.Context, config: LoadedConfig):
    """Recover crashed runs and load the signing key (``collector.runner.prepare``); exit 2 on a bad key."""
    from collector.runner import prepare
    from evidence.signing import SigningError

    try:
        _, signing_key, recovered = prepare(config)
    except SigningError as exc:
        click.echo(f"signing key: {exc}", err=True)
        ctx.exit(2)
    for r in recovered:
        click.echo(f"recovered: {r}", err=True)
    return signing_key


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="Main config file (default ./config/shoseki.toml or $SHOSEKI_CONFIG).")
@click.option("-v", "--verbose", is_flag=True, help="Log debug details.")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", envvar="SHOSEKI_LOG_FORMAT",
              show_default=True, help="Log lines (stderr): human-readable, or one JSON object per line.")
@click.version_option(package_name="shoseki")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, verbose: bool, log_format: str) -> None:
    """shoseki (証跡): sealed, verifiable permission snapshots for audits."""
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path or default_config_path()
    ctx.obj["verbose"] = verbose
    _setup_logging(verbose, log_format)


@main.command()
@click.argument("ids", nargs=-1)
@click.option("--progress/--no-progress", default=None, help="Live progress line (default: on a terminal).")
@click.pass_context
def collect(ctx: click.Context, ids: tuple[str, ...], progress: bool | None) -> None:
    """Run connectors once (all enabled ones, or the IDS given) and seal their bags."""
    from collector.progress import ProgressPrinter
    from collector.runner import refresh_vault_index, run_connector

    config = _load(ctx)
    try:
        entries = [config.connector(i) for i in ids] if ids else [c for c in config.connectors if c.enabled]
    except KeyError as exc:
        click.echo(f"error: {exc.args[0]}", err=True)
        ctx.exit(2)
    if not entries:
        click.echo(f"no connectors configured: add a file under {config.path.parent / 'connectors'}/", err=True)
        ctx.exit(2)
    signing_key = _prepare(ctx, config)
    printer = ProgressPrinter(sys.stderr, live=progress if progress is not None else sys.stderr.isatty())
    vault = Vault(config.vault_path)
    worst = 0
    for entry in entries:
        try:
            outcome = run_connector(config, entry, progress=printer.update, signing_key=signing_key)
        except AlreadyRunning:
            click.echo(f"{entry.id}: skipped, a collection of it is already running", err=True)
            worst = max(worst, 1)
            continue
        printer.finish(entry.id)
        if outcome.bag is not None:
            refresh_vault_index(config, vault)
        click.echo(f"{entry.id}: {outcome.status} -> {outcome.bag.path if outcome.bag else '-'}")
        for reason in outcome.reasons:
            click.echo(f"    {reason}")
        if outcome.status != "complete":
            worst = max(worst, 1)
    ctx.exit(worst)


@main.command()
@click.option("--health-port", type=click.IntRange(0, 65535), default=None,
              help="Serve /healthz and /metrics on 127.0.0.1:PORT (default: [daemon] health_port; 0 = off).")
@click.pass_context
def run(ctx: click.Context, health_port: int | None) -> None:
    """Run as a service: collect every enabled connector on its schedule (overdue ones at once).

    SIGTERM/SIGINT: stop; running collections seal as partial ("interrupted"). SIGHUP: reload
    the configuration (a broken one is logged and the running one kept).
    """
    from collector.daemon import run_daemon

    try:
        config = load_config(ctx.obj["config_path"])
    except ConfigError as exc:  # logged, so that --log-format json holds from the first line
        for p in exc.problems:
            log.error("configuration error: %s", p)
        ctx.exit(2)
    ctx.exit(run_daemon(config, health_port=health_port))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Each connector's last run, evidence age, next run and last error.

    Exit 0: every enabled connector fresh and complete; 1: something stale or partial;
    2: a connector failing (or the configuration is broken).
    """
    import json

    from collector.status import (
        LEVEL_NAMES, exit_code, latest_report, read_runs, render_report, render_text, render_uploads,
        render_verification, snapshot, upload_status, verification_level, verification_state,
    )

    config = _load(ctx)
    vault = Vault(config.vault_path)
    statuses, daemon = snapshot(config)
    code = exit_code(statuses)
    uploads = upload_status(config)
    if uploads and uploads["not_copied"]:  # bags not yet in the WORM copy need attention
        code = max(code, 1)
    verification = verification_state(vault)
    code = max(code, verification_level(verification))
    report = latest_report(read_runs(vault))  # reports are not connectors: shown apart
    if as_json:
        click.echo(json.dumps({"exit_code": code, "daemon": daemon, "connectors": [s.as_dict() for s in statuses],
                               "uploads": uploads, "report": report, "verification": verification},
                              ensure_ascii=False, indent=2))
    else:
        text = render_text(statuses, config.tz, daemon)
        # the uploads, the verification and the latest report go above the overall line (which counts them)
        extra = render_uploads(uploads, config.tz) if uploads is not None else ""
        extra += render_verification(verification, config.tz)
        if report:
            extra += render_report(report, config.tz)
        text = text.rstrip("\n").rpartition("\n")[0] + "\n" + extra + f"overall: {LEVEL_NAMES[code]} (exit {code})\n"
        click.echo(text, nl=False)
    ctx.exit(code)


@main.command()
@click.pass_context
def check(ctx: click.Context) -> None:
    """Validate the configuration and run every connector's check()."""
    config = _load(ctx)
    context, catalogue = _judging_inputs(ctx, config)  # what `report` judges with, when present
    click.echo(f"configuration OK: {config.path} ({len(config.connectors)} connector(s))")
    if context.files:
        click.echo(f"context OK: {', '.join(f.name for f in context.files)} ({len(context.contractors)} contractor(s), "
                   f"{len(context.exceptions)} exception(s), {len(context.register)} register entr(ies), "
                   f"{len(context.roster)} person(s) on the roster)")
    if len(catalogue.files) > 1:
        click.echo(f"control catalogue OK: {catalogue.files[-1]} ({len(catalogue.controls)} controls)")
    failing = 0
    for entry in config.connectors:
        try:
            cls = entry.cls
            connector = cls(entry.config, cls.make_clients(entry.config))
            result = connector.check()
        except Exception as exc:  # a bad connector fails alone
            click.echo(f"[FAIL] {entry.id} ({entry.type}): {type(exc).__name__}: {exc}")
            failing += 1
            continue
        mark = "OK  " if result.ok else "FAIL"
        click.echo(f"[{mark}] {entry.id} ({entry.type})")
        for item in result.items:
            click.echo(f"         {'ok ' if item.ok else 'NG '} {item.name}{': ' + item.detail if item.detail else ''}")
        failing += 0 if result.ok else 1
    ctx.exit(1 if failing else 0)


@main.command()
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--public-key", type=click.Path(path_type=Path, exists=True), help="minisign public key (default: the vault's minisign.pub).")
@click.option("--remote", is_flag=True, help="Also compare the S3 WORM copy ([vault] s3) with the manifests.")
@click.pass_context
def verify(ctx: click.Context, path: Path | None, public_key: Path | None, remote: bool) -> None:
    """Verify a vault (manifests, signatures, chains, ledger) or a single bag."""
    from evidence.verify import load_public_key, verify_bag, verify_vault

    config = None
    if path is None or remote:
        config = _load(ctx)
        path = path or config.vault_path
    if remote and config.main.vault.s3 is None:
        click.echo("--remote: no WORM copy is configured ([vault] s3 = {...})", err=True)
        ctx.exit(2)
    if not path.exists():
        click.echo(f"not found: {path}", err=True)
        ctx.exit(2)
    if (path / "bagit.txt").exists():
        key_path = public_key or _find_vault_key(path)
        report = verify_bag(path, label=str(path), public_key=load_public_key(key_path))
    else:
        report = verify_vault(Vault(path), public_key_path=public_key)
        if public_key is None:  # checked with the vault's own key: what vault/index.html shows
            _record_verification(ctx, Vault(path), report, config)
    if remote:
        from evidence.remote import verify_remote

        rr = verify_remote(config, vault=None if (path / "bagit.txt").exists() else Vault(path))
        report.problems.extend(rr.problems)
        click.echo(f"remote: s3://{config.main.vault.s3.bucket}/{config.main.vault.s3.prefix}: "
                   f"{rr.bags} bag(s), {rr.files} object(s) compared, {len(rr.problems)} problem(s)")
    for p in report.problems:
        click.echo(f"PROBLEM  {p.describe()}")
    summary = report.summary
    if report.ok:
        click.echo(f"OK: {summary}; no problems found.")
    else:
        click.echo(f"FAILED: {len(report.problems)} problem(s) in {summary}.")
    ctx.exit(0 if report.ok else 1)


def _record_verification(ctx: click.Context, vault: Vault, report, config: LoadedConfig | None) -> None:
    """Keep vault/index.html's verification cache (and the page, when the configuration is this
    vault's) up to date with what verify found. A failure here is reported, never fatal."""
    from collector.runner import refresh_vault_index
    from evidence.vault_index import record_verification

    if not vault.state.is_dir():  # a copy of a vault (an auditor's, say): leave it as it is
        return
    try:
        record_verification(vault, report)
    except Exception as exc:
        click.echo(f"note: could not record the results for {vault.root / 'index.html'}: {type(exc).__name__}: {exc}", err=True)
        return
    if config is None:
        try:
            config = load_config(ctx.obj["config_path"])
        except (ConfigError, OSError):
            return
    if config.vault_path.resolve() == vault.root.resolve():
        refresh_vault_index(config, vault)


def _find_vault_key(bag: Path) -> Path | None:
    for parent in bag.resolve().parents:
        if (parent / "minisign.pub").exists():
            return parent / "minisign.pub"
    return None


@main.command()
@click.option("--from", "date_from", required=True, type=click.DateTime(formats=["%Y-%m-%d"]),
              help="First day of the period (YYYY-MM-DD, the organisation's time zone).")
@click.option("--to", "date_to", required=True, type=click.DateTime(formats=["%Y-%m-%d"]),
              help="Last day of the period, included.")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@click.argument("out", type=click.Path(path_type=Path, dir_okay=False))
@click.pass_context
def export(ctx: click.Context, date_from, date_to, force: bool, out: Path) -> None:
    """Write the bags sealed in a period, the ledger excerpt, the public key and a README on how
    to verify them offline into OUT (a zip) for the auditor."""
    from evidence.export import ExportError, export_period

    config = _load(ctx)
    start, end = date_from.date(), date_to.date()
    if start > end:
        click.echo(f"error: --from {start} is after --to {end}", err=True)
        ctx.exit(2)
    if out.exists() and not force:
        click.echo(f"error: {out} already exists; choose another name, or add --force to replace it", err=True)
        ctx.exit(2)
    o = config.main.organization
    try:
        result = export_period(Vault(config.vault_path), start, end, out, tz=config.tz, language=o.language,
                               organization=o.name, force=force)
    except ExportError as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(1)
    except OSError as exc:  # the vault unreadable, OUT's folder missing or not writable, the disk full
        click.echo(f"error: {exc.filename or out}: {exc.strerror or exc}; nothing was written to {out}", err=True)
        ctx.exit(1)
    click.echo(f"wrote {result.path}: {len(result.bags)} bag(s) sealed {start} to {end} ({config.tz}), "
               f"{result.files} file(s), {result.bytes:,} bytes of bags")
    click.echo(f"inside: {result.top}/README.txt explains how to verify it offline (bagit.py, sha256sum, minisign)")
    click.echo(f"SHA-256 of the last ledger line exported: {result.last_line_sha256}")
    for w in result.warnings:
        click.echo(f"PROBLEM  {w}")
    ctx.exit(1 if result.warnings else 0)


_DATE = click.DateTime(formats=["%Y-%m-%d"])


@main.command()
@click.option("--as-of", "as_of", type=_DATE, default=None,
              help="Judge the evidence as it stood at the end of this day (YYYY-MM-DD, the organisation's time zone). Default: now.")
@click.option("--from", "date_from", type=_DATE, default=None,
              help="First day of a period: its changes are counted from the end of this day (needs --to).")
@click.option("--to", "date_to", type=_DATE, default=None,
              help="Last day of the period, included: the evidence is judged as of its end (needs --from).")
@click.pass_context
def report(ctx: click.Context, as_of, date_from, date_to) -> None:
    """Judge the sealed evidence and seal a report bundle: findings, changes, the register, CSV files.

    Never calls a source API. Findings are not an error: exit 0 when the report was sealed;
    1 when it could not be made (evidence changed since it was sealed, another report running);
    2 for a bad configuration, context file or date.
    """
    from datetime import datetime, timezone

    from evidence.report import ReportInputError, instant_for_date, resolve_period

    config = _load(ctx)
    if not config.connectors:
        click.echo(f"no connectors configured: add a file under {config.path.parent / 'connectors'}/", err=True)
        ctx.exit(2)
    now = datetime.now(timezone.utc)
    day = lambda value: value.date() if value is not None else None  # noqa: E731
    try:
        instant = instant_for_date(as_of.date(), config.tz, now) if as_of is not None else None
        resolve_period(config.tz, as_of=instant, date_from=day(date_from), date_to=day(date_to), now=now)
    except ReportInputError as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(2)
    context, catalogue = _judging_inputs(ctx, config)
    signing_key = _prepare(ctx, config)
    result = _build_report(ctx, config, instant, day(date_from), day(date_to), context, catalogue, signing_key)
    from evidence.report import summary_lines

    for line in summary_lines(result, config.tz):
        click.echo(line)
    ctx.exit(0)


def _build_report(ctx: click.Context, config: LoadedConfig, as_of, date_from, date_to, context, catalogue, signing_key):
    from evidence.findings import JudgeError
    from evidence.report import ReportError, build_report

    try:
        return build_report(config, as_of=as_of, date_from=date_from, date_to=date_to, signing_key=signing_key,
                            context=context, catalogue=catalogue)
    except ReportError as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(2)
    except AlreadyRunning:
        click.echo("a report is already being made in another process; try again when it has finished", err=True)
        ctx.exit(1)
    except JudgeError as exc:
        click.echo(f"cannot judge the evidence: {exc}", err=True)
        ctx.exit(1)


@main.command()
@click.pass_context
def reindex(ctx: click.Context) -> None:
    """Rebuild the run catalogue (.state/catalog.json) from the vault."""
    from collector.state import rebuild

    config = _load(ctx)
    runs, cursors = rebuild(Vault(config.vault_path).ensure())
    click.echo(f"catalogue rebuilt: {runs} run(s), {cursors} cursor(s)")


@main.command()
@click.option("--secret-key", "secret_path", type=click.Path(path_type=Path), default=Path("minisign.key"), show_default=True)
@click.option("--public-key", "public_path", type=click.Path(path_type=Path), default=Path("minisign.pub"), show_default=True)
def keygen(secret_path: Path, public_path: Path) -> None:
    """Make an Ed25519 signing key pair in minisign format (the secret key is not password-protected)."""
    from evidence.signing import SigningError, write_keypair

    try:
        secret, public = write_keypair(secret_path, public_path)
    except (SigningError, FileExistsError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    click.echo(f"secret key: {secret_path} (mode 0600; set [vault] signing_key to this path)")
    click.echo(f"public key: {public_path} (key id {public.key_id_hex}; give it to your auditor)")


@main.command()
@click.argument("directory", type=click.Path(path_type=Path), default=Path("config"))
def init(directory: Path) -> None:
    """Write a commented starter configuration into DIRECTORY."""
    from collector.starter import write_starter_config

    try:
        written = write_starter_config(directory)
    except FileExistsError as exc:
        click.echo(f"error: {exc} already exists; nothing was written", err=True)
        sys.exit(2)
    for p in written:
        click.echo(f"wrote {p}")


@main.command()
@click.option("--dir", "workdir", type=click.Path(path_type=Path), default=Path("shoseki-demo"), show_default=True,
              help="Where the sample data, config and keys go.")
@click.option("--vault", "vault_path", type=click.Path(path_type=Path), default=Path("vault"), show_default=True)
def demo(workdir: Path, vault_path: Path) -> None:
    """Build a sample organisation, collect it into ./vault, verify it, and say where to look."""
    from collector.demo import run_demo

    sys.exit(run_demo(workdir, vault_path, echo=click.echo))


@main.group()
def sandbox() -> None:
    """Local stand-ins for Google Workspace, Microsoft 365 and AWS (offline, 127.0.0.1 only)."""


def _size(value: str) -> int | str:
    from sandbox.org import SIZES

    if value.isdigit():
        return int(value)
    if value not in SIZES:
        raise click.BadParameter(f"use one of {', '.join(SIZES)} or a number of users")
    return value


@sandbox.command("serve")
@click.option("--size", default="small", show_default=True, callback=lambda c, p, v: _size(v),
              help="small (20 users), medium (500), large (100k), or a number of users.")
@click.option("--seed", default=1, show_default=True, type=int, help="The same seed gives the same organisation.")
@click.option("--files-per-user", type=int, default=None, help="Average My Drive / OneDrive files per person (default 8).")
@click.option("--dir", "workdir", type=click.Path(path_type=Path), default=Path("shoseki-sandbox"), show_default=True,
              help="Where credentials, context files, endpoints.json and a config go.")
@click.option("--google/--no-google", default=True)
@click.option("--microsoft/--no-microsoft", default=True)
@click.option("--aws/--no-aws", default=True)
def sandbox_serve(size, seed: int, files_per_user: int | None, workdir: Path, google: bool, microsoft: bool, aws: bool) -> None:
    """Serve one synthetic organisation until stopped (Ctrl-C or SIGTERM)."""
    import signal
    import threading

    from sandbox.env import SandboxEnv

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    env = SandboxEnv(workdir, size=size, seed=seed, files_per_user=files_per_user, google=google, microsoft=microsoft, aws=aws)
    with env:
        config = env.write_config(env.workdir / "config", env.workdir / "vault")
        click.echo(f"organisation: {env.org.n:,} users, domain {env.org.domain}, seed {seed}")
        for provider in ("google", "microsoft", "aws"):
            if provider in env.endpoints:
                first = next(iter(env.endpoints[provider].values()))
                click.echo(f"{provider:<10} {first}")
        click.echo(f"endpoints:   {env.workdir / 'endpoints.json'}")
        click.echo(f"context:     {env.workdir / 'context'} (contractors, roster, register, sandbox-truth.json)")
        click.echo(f"config:      {config}")
        click.echo("ready; stop with Ctrl-C", err=True)
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass
    click.echo("sandbox stopped", err=True)


if __name__ == "__main__":  # pragma: no cover
    main()

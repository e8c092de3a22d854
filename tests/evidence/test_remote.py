"""The WORM copy in S3 Object Lock, against moto in process (never real AWS)."""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timedelta, timezone

import pytest
from click.testing import CliRunner
from conftest import files_connector, write_config

from collector.cli import main
from collector.config import ConfigError, load_config
from collector.runner import prepare, run_connector
from collector.state import Catalogue
from evidence import ledger
from evidence.remote import RemoteChanged, RemoteShadowed, bag_files, verify_remote
from evidence.verify import verify_vault
from evidence.vault import Vault

moto = pytest.importorskip("moto")
BUCKET, REGION, PREFIX = "shoseki-evidence-test", "ap-northeast-1", "shoseki/"
S3_LINE = f's3 = {{ bucket = "{BUCKET}", prefix = "{PREFIX}", object_lock_mode = "COMPLIANCE", retain_days = 30, region = "{REGION}" }}\n'


@pytest.fixture
def aws(monkeypatch, tmp_path):
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    import boto3

    with moto.mock_aws():
        yield boto3.client("s3", region_name=REGION)


def _bucket(s3) -> None:
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}, ObjectLockEnabledForBucket=True)


def _config(tmp_path, small_tree, keypair, extra: str = S3_LINE):
    path = write_config(tmp_path, connectors={"files.toml": files_connector(small_tree)}, signing_key=keypair[0], main_extra=extra)
    return path, load_config(path)


def _collect(cfg):
    _, key, _ = prepare(cfg)  # as `shoseki collect` does: publishes the public key, retries uploads
    return run_connector(cfg, cfg.connectors[0], signing_key=key)


def _cli(path, *args):
    return CliRunner().invoke(main, ["--config", str(path), *args])


def test_upload_end_to_end_with_object_lock_and_checksums(tmp_path, small_tree, keypair, aws):
    _bucket(aws)
    _, cfg = _config(tmp_path, small_tree, keypair)
    before = datetime.now(timezone.utc)
    out = _collect(cfg)
    assert out.status == "complete"
    vault = Vault(cfg.vault_path)
    row = Catalogue(vault).upload(out.bag.relpath)
    assert row["status"] == "uploaded" and row["attempts"] == 1 and row["last_error"] is None
    files = bag_files(out.bag.path)
    assert "tagmanifest-sha256.txt.minisig" in files and "data/run.json" in files
    keys = {o["Key"] for o in aws.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX)["Contents"]}
    entry = next(ledger.entries(vault.ledger))
    ledger_key = f"{PREFIX}ledger/{entry.seq:08d}-{entry.tagmanifest_sha256[:12]}.json"
    assert keys == {f"{PREFIX}{out.bag.relpath}/{rel}" for rel in files} | {ledger_key}
    for rel in files:
        key = f"{PREFIX}{out.bag.relpath}/{rel}"
        head = aws.head_object(Bucket=BUCKET, Key=key, ChecksumMode="ENABLED")
        local = (out.bag.path / rel).read_bytes()
        assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(local).digest()).decode()
        assert head["ObjectLockMode"] == "COMPLIANCE"
        until = head["ObjectLockRetainUntilDate"].astimezone(timezone.utc)
        assert before + timedelta(days=30) - timedelta(seconds=2) <= until <= datetime.now(timezone.utc) + timedelta(days=30)
        assert head["VersionId"] == row["objects"][rel]["version_id"]
        assert aws.get_object(Bucket=BUCKET, Key=key)["Body"].read() == local
    # the ledger line, byte for byte: its SHA-256 is what the next line chains to
    line = aws.get_object(Bucket=BUCKET, Key=ledger_key)["Body"].read()
    assert hashlib.sha256(line).hexdigest() == entry.line_sha256
    assert aws.head_object(Bucket=BUCKET, Key=ledger_key)["ObjectLockMode"] == "COMPLIANCE"
    # a locked version cannot be deleted
    with pytest.raises(Exception):
        aws.delete_object(Bucket=BUCKET, Key=ledger_key, VersionId=row["ledger"]["version_id"])
    # a second bag chains on: its ledger object is the next sequence number
    out2 = _collect(cfg)
    assert Catalogue(vault).upload(out2.bag.relpath)["ledger"]["key"].startswith(f"{PREFIX}ledger/00000002-")
    assert verify_remote(cfg).ok


def test_failed_upload_never_blocks_and_is_retried_by_the_next_collect(tmp_path, small_tree, keypair, aws):
    path, cfg = _config(tmp_path, small_tree, keypair)  # no bucket yet: every upload fails
    out = _collect(cfg)
    assert out.status == "complete"
    vault = Vault(cfg.vault_path)
    assert verify_vault(vault).ok  # the local bag is whole
    row = Catalogue(vault).upload(out.bag.relpath)
    assert row["status"] == "pending" and row["attempts"] == 1 and "NoSuchBucket" in row["last_error"]
    status = _cli(path, "status")
    assert status.exit_code == 1, status.output
    assert "1 bag(s) NOT COPIED" in status.output and out.bag.relpath in status.output and "NoSuchBucket" in status.output
    assert "overall: attention (exit 1)" in status.output
    as_json = _cli(path, "status", "--json")
    assert as_json.exit_code == 1 and '"not_copied": 1' in as_json.output
    remote = _cli(path, "verify", "--remote")
    assert remote.exit_code == 1 and "not copied to S3 yet" in remote.output

    _bucket(aws)
    collected = _cli(path, "collect", "--no-progress")
    assert collected.exit_code == 0, collected.output
    rows = {r["bag"]: r for r in Catalogue(vault).uploads()}
    assert len(rows) == 2 and all(r["status"] == "uploaded" for r in rows.values())
    assert rows[out.bag.relpath]["attempts"] == 2
    status = _cli(path, "status")
    assert status.exit_code == 0, status.output
    assert "every sealed bag copied" in status.output
    assert _cli(path, "verify", "--remote").exit_code == 0


def test_upload_error_from_s3_is_recorded_and_the_run_stays_complete(tmp_path, small_tree, keypair, aws, monkeypatch):
    _bucket(aws)
    _, cfg = _config(tmp_path, small_tree, keypair)
    import evidence.remote as remote

    def broken(self, *a, **k):
        raise OSError("connection reset by peer")

    monkeypatch.setattr(remote.Uploader, "upload_bag", broken)
    out = _collect(cfg)
    assert out.status == "complete" and out.bag.path.is_dir()
    row = Catalogue(Vault(cfg.vault_path)).upload(out.bag.relpath)
    assert row["status"] == "pending" and "connection reset" in row["last_error"]
    monkeypatch.undo()


def test_verify_remote_passes_then_reports_a_tampered_object(tmp_path, small_tree, keypair, aws):
    _bucket(aws)
    path, cfg = _config(tmp_path, small_tree, keypair)
    out = _collect(cfg)
    good = _cli(path, "verify", "--remote")
    assert good.exit_code == 0, good.output
    assert "remote: s3://" in good.output and "0 problem(s)" in good.output
    key = f"{PREFIX}{out.bag.relpath}/data/tables/grants.csv"
    recorded = Catalogue(Vault(cfg.vault_path)).upload(out.bag.relpath)["objects"]["data/tables/grants.csv"]["version_id"]
    # Object Lock forbids changing or deleting the locked version, but a newer version can be put
    aws.put_object(Bucket=BUCKET, Key=key, Body=b"resource_id,principal\nnothing,to see\n")
    bad = _cli(path, "verify", "--remote")
    assert bad.exit_code == 1
    assert f"remote object changed: s3 key {key}" in bad.output and "shadows the locked copy" in bad.output
    problems = verify_remote(cfg).problems
    assert [type(p) for p in problems] == [RemoteChanged]
    assert problems[0].shadowing and problems[0].version_id != recorded
    # the same content written again is still reported: someone rewrote a locked object
    aws.put_object(Bucket=BUCKET, Key=key, Body=(out.bag.path / "data/tables/grants.csv").read_bytes())
    assert [type(p) for p in verify_remote(cfg).problems] == [RemoteShadowed]
    # an object added under the bag's prefix is reported too
    aws.put_object(Bucket=BUCKET, Key=f"{PREFIX}{out.bag.relpath}/data/extra.csv", Body=b"x")
    assert any("unexpected remote object" in p.describe() for p in verify_remote(cfg).problems)


@pytest.mark.parametrize(
    ("line", "keypath", "message"),
    [
        ('s3 = { bucket = "Bad_Bucket" }\n', "vault.s3.bucket", "is not an S3 bucket name"),
        ('s3 = { bucket = "ok-bucket", object_lock_mode = "FOREVER" }\n', "vault.s3.object_lock_mode", "COMPLIANCE"),
        ('s3 = { bucket = "ok-bucket", retain_days = 0 }\n', "vault.s3.retain_days", "greater than or equal to 1"),
        ('s3 = { bucket = "ok-bucket", endpoint_url = "http://s3.example.com" }\n', "vault.s3.endpoint_url", "https://"),
        ('s3 = { bucket = "ok-bucket", region = "tokyo" }\n', "vault.s3.region", "not an AWS region"),
        ('s3 = { bucket = "ok-bucket", object_lock_days = 3 }\n', "vault.s3.object_lock_days", "unknown key"),
    ],
)
def test_s3_config_errors_name_file_line_and_key(tmp_path, line, keypath, message):
    path = write_config(tmp_path, main_extra=line)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    (problem,) = exc.value.problems
    assert problem.keypath == keypath and message in problem.message
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[problem.line - 1].startswith("s3 = {") and str(problem).startswith(f"{path}:{problem.line}: {keypath}: ")


def test_s3_config_defaults_and_template(tmp_path):
    cfg = load_config(write_config(tmp_path, main_extra='s3 = { bucket = "ok-bucket", prefix = "evidence" }\n'))
    s3 = cfg.main.vault.s3
    assert (s3.prefix, s3.object_lock_mode, s3.retain_days, s3.endpoint_url) == ("evidence/", "COMPLIANCE", 2555, None)
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    template = (root / "collector/templates/shoseki.toml").read_text(encoding="utf-8")
    assert template == (root / "config/shoseki.toml").read_text(encoding="utf-8")
    example = next(line for line in template.splitlines() if line.startswith("# s3 = {"))
    cfg = load_config(write_config(tmp_path / "t", main_extra=example[2:] + "\n"))
    assert cfg.main.vault.s3.retain_days == 2555

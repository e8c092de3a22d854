"""The whole sandbox: serve command, credentials, context files, and the demo's use of it."""

import json
import signal
import stat
import subprocess
import sys
import time

import boto3
import requests
from conftest import files_connector

from sandbox import env as env_mod
from sandbox.env import SandboxEnv


def test_env_starts_all_three_and_writes_credentials_and_context(tmp_path):
    with SandboxEnv(tmp_path / "sbx", size="small") as env:
        e = json.loads((env.workdir / "endpoints.json").read_text())
        assert set(e) == {"organization", "google", "microsoft", "aws"}
        for url in (e["google"]["root_url"], e["microsoft"]["authority"], e["aws"]["endpoint_url"]):
            assert url.startswith(("http://127.0.0.1:", "https://127.0.0.1:"))
        for name in ("google-service-account.json", "microsoft-client-secret", "microsoft-app-cert.key"):
            assert stat.S_IMODE((env.workdir / "credentials" / name).stat().st_mode) == 0o600
        assert requests.get(e["google"]["stats"], timeout=5).json()["total_calls"] == 0
        s = requests.Session()
        s.verify, s.trust_env = e["microsoft"]["ca_bundle"], False
        assert s.get(e["microsoft"]["stats"], timeout=5).status_code == 200
        s3 = boto3.client("s3", endpoint_url=e["aws"]["endpoint_url"], region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        assert len(s3.list_buckets()["Buckets"]) >= 8
        truth = json.loads((env.workdir / "context" / "sandbox-truth.json").read_text())
        assert truth["users"] == 20 and truth["problems"]
        roster = (env.workdir / "context" / "roster.csv").read_text(encoding="utf-8")
        assert roster.count("\n") == 21 and ",leaver," in roster
    # closed: nothing listens any more
    try:
        requests.get(e["google"]["stats"], timeout=2)
        raise AssertionError("still serving after close")
    except requests.ConnectionError:
        pass


def test_serve_command_runs_until_sigterm(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "collector.cli", "sandbox", "serve", "--no-aws", "--dir", str(tmp_path / "s")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "s" / "endpoints.json").exists():
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.1)
        e = json.loads((tmp_path / "s" / "endpoints.json").read_text())
        assert "aws" not in e
        assert requests.get(e["google"]["stats"], timeout=5).status_code == 200
        assert (tmp_path / "s" / "config" / "shoseki.toml").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "organisation: 20 users" in out and "sandbox stopped" in err


def test_demo_starts_the_sandbox_for_connectors_that_have_a_template(tmp_path, monkeypatch):
    from collector.demo import run_demo

    extra = tmp_path / "extra-share"
    (extra / "d").mkdir(parents=True)
    seen = {}

    def template(env):
        seen["users"] = env.org.n
        return files_connector(extra, "files-sandbox")

    monkeypatch.setattr(env_mod, "CONNECTOR_TEMPLATES", {"local_files": template})
    lines = []
    assert run_demo(tmp_path / "demo", tmp_path / "vault", echo=lines.append) == 0
    text = "\n".join(lines)
    assert seen == {"users": 20}
    assert "sandbox organisation: 20 users" in text
    assert "collected files-demo: complete" in text and "collected files-sandbox: complete" in text
    assert "verify: OK (3 bag(s)" in text  # the two collections and the report

"""A whole sandbox: the three stand-ins serving one organisation, with ready-to-use credentials.

``SandboxEnv`` starts the Google stand-in (HTTP), the Microsoft identity + Graph stand-in
(HTTPS, self-signed CA) and a moto server (AWS), all on 127.0.0.1, seeded with one
:class:`sandbox.org.Org`. It writes, under its work directory::

    credentials/google-service-account.json   the service-account key the Google stand-in trusts
    credentials/microsoft-client-secret        the app's client secret
    credentials/microsoft-app-cert.pem / .key  the app's certificate credential
    credentials/microsoft-ca.pem               the CA clients must trust (configured explicitly)
    context/contractors.toml roster.csv register.toml sandbox-truth.json
    endpoints.json                             every URL and id above, for scripts

Every secret is generated at start and lives only there (mode 0600). ``write_config`` adds a
connector file for each registered connector type that has a template in
:data:`CONNECTOR_TEMPLATES` (the connector issues add theirs), so ``shoseki collect`` runs
against the sandbox with the same code that runs against the real services.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sandbox.org import Org
from sandbox.truth import write_context

#: the context files written by sandbox.truth.write_context that belong in a config directory
CONTEXT_FILES = ("contractors.toml", "register.toml", "roster.csv")

# connector type -> function(env) returning the [[connector]] TOML text for the sandbox
CONNECTOR_TEMPLATES: dict[str, Callable[["SandboxEnv"], str]] = {}


def _write_secret(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    return path


@dataclass
class SandboxEnv:
    workdir: Path
    size: int | str = "small"
    seed: int = 1
    files_per_user: int | None = None
    google: bool = True
    microsoft: bool = True
    aws: bool = True
    google_options: dict[str, Any] = field(default_factory=dict)  # GoogleStandIn options (faults, token_ttl_s …)
    org: Org = field(init=False)
    endpoints: dict[str, Any] = field(init=False, default_factory=dict)
    _closers: list[Callable[[], None]] = field(init=False, default_factory=list)

    def start(self) -> "SandboxEnv":
        self.workdir = Path(self.workdir).resolve()
        creds = self.workdir / "credentials"
        creds.mkdir(parents=True, exist_ok=True)
        self.org = Org(self.seed, self.size) if self.files_per_user is None else Org(self.seed, self.size, files_per_user=self.files_per_user)
        self.endpoints = {"organization": {"domain": self.org.domain, "users": self.org.n, "seed": self.seed}}
        try:
            if self.google:
                self._start_google(creds)
            if self.microsoft:
                self._start_microsoft(creds)
            if self.aws:
                self._start_aws()
        except BaseException:
            self.close()
            raise
        write_context(self.org, self.workdir / "context")
        (self.workdir / "endpoints.json").write_text(json.dumps(self.endpoints, indent=2, ensure_ascii=False), encoding="utf-8")
        return self

    def _start_google(self, creds: Path) -> None:
        from sandbox import google

        server, standin = google.start(self.org, **self.google_options)
        self._closers.append(server.close)
        self.google_standin = standin
        key = _write_secret(creds / "google-service-account.json", json.dumps(standin.service_account_info(), indent=2))
        admin = next(p for p in self.org.people() if p.admin and not p.suspended)
        self.endpoints["google"] = {
            "root_url": server.url + "/",
            "service_account_key_file": str(key),
            "admin_subject": admin.email,
            "customer": "my_customer",
            "stats": server.url + "/_sandbox/stats",
        }

    def _start_microsoft(self, creds: Path) -> None:
        from sandbox import microsoft

        server, standin = microsoft.start(self.org, workdir=creds)
        self._closers.append(server.close)
        self.microsoft_standin = standin
        app = standin.app_info()
        secret = _write_secret(creds / "microsoft-client-secret", app.client_secret)
        cert = _write_secret(creds / "microsoft-app-cert.pem", app.certificate_pem)
        key = _write_secret(creds / "microsoft-app-cert.key", app.private_key_pem)
        self.endpoints["microsoft"] = {
            "authority": app.authority,
            "tenant_id": app.tenant_id,
            "client_id": app.client_id,
            "client_secret_file": str(secret),
            "certificate_file": str(cert),
            "private_key_file": str(key),
            "thumbprint": app.thumbprint,
            "graph_url": app.graph_url,
            "ca_bundle": str(standin.ca_file),
            "stats": server.url + "/_sandbox/stats",
        }

    def _start_aws(self) -> None:
        from sandbox import aws

        server, url = aws.start_moto_server(self.org)
        self._closers.append(server.stop)
        self.endpoints["aws"] = {"endpoint_url": url, "region": "ap-northeast-1", "account_id": aws.MOTO_DEFAULT_ACCOUNT_ID}

    def connector_files(self) -> dict[str, str]:
        """``{file name: TOML}`` for every registered connector type with a sandbox template."""
        from connectors import REGISTRY

        return {f"{kind.replace('_', '-')}.toml": CONNECTOR_TEMPLATES[kind](self) for kind in sorted(REGISTRY) if kind in CONNECTOR_TEMPLATES}

    def write_config(self, config_dir: Path, vault: Path, *, signing_key: Path | None = None) -> Path:
        """A main config plus the sandbox's connector files; returns the main file's path."""
        config_dir = Path(config_dir)
        (config_dir / "connectors").mkdir(parents=True, exist_ok=True)
        main = config_dir / "shoseki.toml"
        key_line = f"signing_key = {json.dumps(str(signing_key))}\n" if signing_key else ""
        main.write_text(
            "# Written by the shoseki sandbox: every connector points at 127.0.0.1.\n"
            "[organization]\n"
            'name = "サンドボックス株式会社 (Sandbox K.K.)"\n'
            f'domains = ["{self.org.domain}"]\n'
            'timezone = "Asia/Tokyo"\n'
            'language = "ja"\n\n'
            "[vault]\n"
            f"path = {json.dumps(str(vault))}\n" + key_line,
            encoding="utf-8",
        )
        for name, text in self.connector_files().items():
            (config_dir / "connectors" / name).write_text(text, encoding="utf-8")
        for name in CONTEXT_FILES:  # the organisation's context: what `shoseki report` judges against
            source = self.workdir / "context" / name
            if source.exists():
                (config_dir / name).write_text(source.read_text(encoding="utf-8"), encoding="utf-8")
        return main

    def close(self) -> None:
        while self._closers:
            try:
                self._closers.pop()()
            except Exception:  # closing must not hide what the caller is handling
                pass

    def __enter__(self) -> "SandboxEnv":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _google_directory_template(env: SandboxEnv) -> str:
    google = env.endpoints.get("google")
    if google is None:  # started without the Google stand-in: nothing to point at
        return "# google_directory: the sandbox was started without the Google stand-in\n"
    return (
        "# Written by the shoseki sandbox: the Google Workspace directory of the sandbox organisation.\n"
        "[[connector]]\n"
        'id = "google-directory"\n'
        'type = "google_directory"\n'
        'schedule = "0 2 * * *"\n'
        f"service_account_key_file = {json.dumps(google['service_account_key_file'])}\n"
        f"admin_subject = {json.dumps(google['admin_subject'])}\n"
        f"customer = {json.dumps(google['customer'])}\n"
        f"root_url = {json.dumps(google['root_url'])}\n"
    )


def _google_drive_template(env: SandboxEnv) -> str:
    google = env.endpoints.get("google")
    if google is None:
        return "# google_drive: the sandbox was started without the Google stand-in\n"
    return (
        "# Written by the shoseki sandbox: every My Drive and shared drive of the sandbox organisation.\n"
        "[[connector]]\n"
        'id = "google-drive"\n'
        'type = "google_drive"\n'
        'schedule = "30 2 * * *"\n'
        f"service_account_key_file = {json.dumps(google['service_account_key_file'])}\n"
        f"admin_subject = {json.dumps(google['admin_subject'])}\n"
        f"customer = {json.dumps(google['customer'])}\n"
        f"root_url = {json.dumps(google['root_url'])}\n"
    )


def _microsoft_template(kind: str, cid: str, what: str, schedule: str, extra: str = "") -> Callable[[SandboxEnv], str]:
    def template(env: SandboxEnv) -> str:
        ms = env.endpoints.get("microsoft")
        if ms is None:
            return f"# {kind}: the sandbox was started without the Microsoft stand-in\n"
        authority = ms["authority"].removesuffix("/" + ms["tenant_id"])
        return (
            f"# Written by the shoseki sandbox: {what} of the sandbox organisation.\n"
            "[[connector]]\n"
            f'id = "{cid}"\n'
            f'type = "{kind}"\n'
            f'schedule = "{schedule}"\n'
            f"tenant_id = {json.dumps(ms['tenant_id'])}\n"
            f"client_id = {json.dumps(ms['client_id'])}\n"
            f"client_secret_file = {json.dumps(ms['client_secret_file'])}\n"
            f"authority = {json.dumps(authority)}\n"
            f"graph_url = {json.dumps(ms['graph_url'])}\n"
            f"ca_bundle = {json.dumps(ms['ca_bundle'])}\n" + extra
        )
    return template


CONNECTOR_TEMPLATES["entra_id"] = _microsoft_template("entra_id", "entra-id", "the Entra ID directory", "15 2 * * *")
CONNECTOR_TEMPLATES["m365_files"] = _microsoft_template(
    "m365_files", "m365-files", "every SharePoint site and OneDrive", "45 2 * * *",
    "# the stand-in sets no quota unless asked: a real tenant's budget (1,200 a minute and up) would only slow the demo\n"
    "ru_per_minute = 100000\n")
CONNECTOR_TEMPLATES["google_directory"] = _google_directory_template
CONNECTOR_TEMPLATES["google_drive"] = _google_drive_template


def _aws_template(kind: str, cid: str, what: str, schedule: str) -> Callable[[SandboxEnv], str]:
    """The AWS connectors: the moto server, and a credentials file of their own (generated keys: moto
    accepts any) so that no AWS_* variable or ~/.aws file of the machine is read or sent."""
    def template(env: SandboxEnv) -> str:
        aws = env.endpoints.get("aws")
        if aws is None:
            return f"# {kind}: the sandbox was started without the AWS stand-in (moto)\n"
        import secrets
        import string

        from sandbox.aws import MANAGEMENT_ACCOUNT_ID

        creds = env.workdir / "credentials" / "aws-credentials"
        config = env.workdir / "credentials" / "aws-config"
        if not creds.exists():
            alphabet = string.ascii_uppercase + string.digits
            key_id = "AKIA" + "".join(secrets.choice(alphabet) for _ in range(16))
            _write_secret(creds, f"[sandbox]\naws_access_key_id = {key_id}\naws_secret_access_key = {secrets.token_urlsafe(30)}\n")
            _write_secret(config, f"[profile sandbox]\nregion = {aws['region']}\n")
        return (
            f"# Written by the shoseki sandbox: {what} of the sandbox organisation (moto).\n"
            "[[connector]]\n"
            f'id = "{cid}"\n'
            f'type = "{kind}"\n'
            f'schedule = "{schedule}"\n'
            'profile = "sandbox"\n'
            f"credentials_file = {json.dumps(str(creds))}\n"
            f"config_file = {json.dumps(str(config))}\n"
            f"region = {json.dumps(aws['region'])}\n"
            f"endpoint_url = {json.dumps(aws['endpoint_url'])}\n"
            f'internal_accounts = ["{MANAGEMENT_ACCOUNT_ID}"]  # the organisation\'s management account\n'
        )
    return template


CONNECTOR_TEMPLATES["aws_iam"] = _aws_template("aws_iam", "aws-iam", "IAM users, groups, roles and policies", "5 2 * * *")
CONNECTOR_TEMPLATES["aws_s3"] = _aws_template("aws_s3", "aws-s3", "every S3 bucket's policy, ACL and public access blocks", "50 2 * * *")

"""Seeding moto through plain boto3 calls, and running moto: in-process (:func:`aws_sandbox`) or as a server.

:func:`seed_aws` does not know which one it talks to; :func:`_offline_guard` makes sure it is one of them.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import boto3
from botocore.config import Config

from sandbox.aws.plan import (
    _ALLOW_ALL,
    _DEVELOPER,
    _READ_ONLY,
    ADMIN_POLICY,
    DEVELOPER_POLICY,
    FAKE_CREDENTIALS,
    GROUP_POLICIES,
    HOME_REGION,
    READONLY_POLICY,
    STANDIN_PATH,
    AwsPlan,
    UserPlan,
    aws_plan,
)
from sandbox.aws.truth import AwsTruth, truth_from_plan
from sandbox.org import Org

# -- seeding ---------------------------------------------------------------------------------


def totp(seed_base32: bytes | str, counter: int) -> str:
    """RFC 6238 TOTP (SHA-1, 6 digits) for time step ``counter`` — what an authenticator shows."""
    text = seed_base32.decode() if isinstance(seed_base32, bytes) else seed_base32
    text = text.strip().upper()
    key = base64.b32decode(text + "=" * (-len(text) % 8))
    mac = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    return f"{(int.from_bytes(mac[offset:offset + 4], 'big') & 0x7FFFFFFF) % 1_000_000:06d}"


def _password(org: Org, u: UserPlan) -> str:
    digest = hashlib.blake2b(f"{org.seed}:pw:{u.person}".encode(), digest_size=8).hexdigest()
    return f"Sandbox-{digest}-9x"  # test-only; satisfies the planted policy


def _offline_guard(endpoint_url: str | None) -> None:
    """Refuse to run anywhere but moto: in-process mock or a server on 127.0.0.1."""
    if endpoint_url is not None:
        parts = urlsplit(endpoint_url)
        if parts.scheme not in ("http", "https") or parts.netloc != f"127.0.0.1:{parts.port}":
            raise ValueError(f"the AWS sandbox only talks to 127.0.0.1, not {endpoint_url!r}")
        return
    try:
        from moto.core.models import botocore_stubber
    except ImportError as exc:  # pragma: no cover - moto is a test dependency
        raise RuntimeError("seed_aws without endpoint_url needs moto installed and mock_aws() active") from exc
    if not botocore_stubber.enabled:
        raise RuntimeError("seed_aws without endpoint_url must run inside moto.mock_aws() (see aws_sandbox)")


class _Clients:
    def __init__(self, session: boto3.Session, endpoint_url: str | None):
        self.session, self.endpoint_url = session, endpoint_url
        self.config = Config(retries={"mode": "standard", "max_attempts": 2}, s3={"addressing_style": "path"})
        self._cache: dict[tuple[str, str], Any] = {}

    def __call__(self, service: str, region: str = HOME_REGION) -> Any:
        key = (service, region)
        if key not in self._cache:
            self._cache[key] = local_client(self.session, service, region, self.endpoint_url, self.config)
        return self._cache[key]

    def as_key(self, service: str, key_id: str, secret: str) -> Any:
        return self.session.client(service, region_name=HOME_REGION, endpoint_url=self.endpoint_url, config=self.config,
                                   aws_access_key_id=key_id, aws_secret_access_key=secret)


def strip_account_host_prefix(request: Any, **_: Any) -> None:
    """botocore ``before-sign`` hook: ``http://123456789012.127.0.0.1:PORT`` → ``http://127.0.0.1:PORT``.

    The S3 Control endpoint rules put the account id in front of the host even for a custom
    ``endpoint_url``; a name under an IP address resolves nowhere, so a local server needs this.
    """
    parts = urlsplit(request.url)
    host = parts.hostname or ""
    prefix, _, rest = host.partition(".")
    if prefix.isdigit() and len(prefix) == 12 and rest == "127.0.0.1":
        request.url = urlunsplit(parts._replace(netloc=parts.netloc.split(".", 1)[1]))


def local_client(session: boto3.Session, service: str, region: str = HOME_REGION, endpoint_url: str | None = None,
                 config: Config | None = None) -> Any:
    """A client for the sandbox: path-style S3 and, against a server, the S3 Control host fix."""
    client = session.client(service, region_name=region, endpoint_url=endpoint_url,
                            config=config or Config(s3={"addressing_style": "path"}))
    if endpoint_url is not None and service == "s3control":
        client.meta.events.register("before-sign.s3-control", strip_account_host_prefix)
    return client


def _has_aws_managed_policies(iam: Any) -> bool:
    try:
        iam.get_policy(PolicyArn=f"arn:aws:iam::aws:policy/{ADMIN_POLICY}")
        return True
    except iam.exceptions.NoSuchEntityException:
        return False


def seed_aws(org: Org, *, session: boto3.Session | None = None, endpoint_url: str | None = None) -> AwsTruth:
    """Create the organisation's IAM and S3 state with boto3; return its :class:`AwsTruth`.

    Inside ``mock_aws()`` leave ``endpoint_url`` None; against a moto server pass
    ``http://127.0.0.1:PORT``. Expects an empty account (a fresh mock or a reset server).
    """
    _offline_guard(endpoint_url)
    if session is None:
        session = boto3.Session(aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                                aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"], region_name=HOME_REGION)
    clients = _Clients(session, endpoint_url)
    account_id = clients("sts").get_caller_identity()["Account"]
    iam = clients("iam", "us-east-1")
    plan = aws_plan(org, account_id=account_id, aws_managed_policies=_has_aws_managed_policies(iam))
    _seed_iam(org, plan, clients)
    _seed_s3(plan, clients)
    return truth_from_plan(org, plan)


def _seed_iam(org: Org, plan: AwsPlan, clients: _Clients) -> None:
    iam = clients("iam", "us-east-1")
    iam.update_account_password_policy(**plan.password_policy)
    documents = {DEVELOPER_POLICY: _DEVELOPER, ADMIN_POLICY: _ALLOW_ALL, READONLY_POLICY: _READ_ONLY}
    for name in plan.customer_policies:
        standin = name != DEVELOPER_POLICY
        iam.create_policy(
            PolicyName=name, Path=STANDIN_PATH if standin else "/", PolicyDocument=json.dumps(documents[name]),
            Description=("Stand-in for the AWS managed policy of the same name (moto without managed policies)"
                         if standin else "Engineering: build and run workloads, no IAM"),
        )
    for group, policy in GROUP_POLICIES.items():
        iam.create_group(GroupName=group)
        iam.attach_group_policy(GroupName=group, PolicyArn=plan.policy_arn(policy))
    for role in plan.roles:
        iam.create_role(RoleName=role.name, AssumeRolePolicyDocument=json.dumps(role.trust),
                        Description=f"sandbox {role.kind} role")
        for policy in role.policies:
            iam.attach_role_policy(RoleName=role.name, PolicyArn=plan.policy_arn(policy))
        if role.inline is not None:
            iam.put_role_policy(RoleName=role.name, PolicyName="app-data-read", PolicyDocument=json.dumps(role.inline))
    for u in plan.users:
        iam.create_user(UserName=u.name, Tags=u.tags)
        if u.console:
            iam.create_login_profile(UserName=u.name, Password=_password(org, u), PasswordResetRequired=False)
        if u.mfa:
            device = iam.create_virtual_mfa_device(VirtualMFADeviceName=u.name)["VirtualMFADevice"]
            step = int(time.time()) // 30
            iam.enable_mfa_device(UserName=u.name, SerialNumber=device["SerialNumber"],
                                  AuthenticationCode1=totp(device["Base32StringSeed"], step),
                                  AuthenticationCode2=totp(device["Base32StringSeed"], step + 1))
        for group in u.groups:
            iam.add_user_to_group(GroupName=group, UserName=u.name)
        if u.inline_admin:
            iam.put_user_policy(UserName=u.name, PolicyName="break-glass", PolicyDocument=json.dumps(_ALLOW_ALL))
        for k in u.keys:
            key = iam.create_access_key(UserName=u.name)["AccessKey"]
            if k.used:  # a real call signed with the key: IAM records AccessKeyLastUsed
                clients.as_key("sts", key["AccessKeyId"], key["SecretAccessKey"]).get_caller_identity()
            if k.status != "Active":
                iam.update_access_key(UserName=u.name, AccessKeyId=key["AccessKeyId"], Status=k.status)


def _seed_s3(plan: AwsPlan, clients: _Clients) -> None:
    owner_id: str | None = None
    for b in plan.buckets:
        s3 = clients("s3", b.region)
        kwargs: dict[str, Any] = {"Bucket": b.name}
        if b.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": b.region}
        if b.object_lock:
            kwargs["ObjectLockEnabledForBucket"] = True
        if b.ownership:
            kwargs["ObjectOwnership"] = b.ownership
        s3.create_bucket(**kwargs)
        if b.object_lock:
            s3.put_object_lock_configuration(Bucket=b.name, ObjectLockConfiguration={
                "ObjectLockEnabled": "Enabled", "Rule": {"DefaultRetention": {"Mode": "COMPLIANCE", "Years": 7}}})
        if b.ownership is None:
            # real S3 gives new buckets BucketOwnerEnforced; a legacy bucket has no controls at all
            with contextlib.suppress(s3.exceptions.ClientError):
                s3.delete_bucket_ownership_controls(Bucket=b.name)
        if b.acl:
            s3.put_bucket_acl(Bucket=b.name, ACL=b.acl)
        if b.grant_read_to:
            if owner_id is None:
                owner_id = s3.get_bucket_acl(Bucket=b.name)["Owner"]["ID"]
            s3.put_bucket_acl(Bucket=b.name, GrantFullControl=f'id="{owner_id}"', GrantRead=f'id="{b.grant_read_to}"')
        if b.policy is not None:
            s3.put_bucket_policy(Bucket=b.name, Policy=json.dumps(b.policy))
        if b.public_access_block:
            s3.put_public_access_block(Bucket=b.name, PublicAccessBlockConfiguration={
                "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
        else:
            # real S3 turns the block on for new buckets; these had it removed
            s3.delete_public_access_block(Bucket=b.name)
    clients("s3control", HOME_REGION).put_public_access_block(
        AccountId=plan.account_id, PublicAccessBlockConfiguration=plan.account_public_access_block)


# -- running moto ----------------------------------------------------------------------------

_AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE",
            "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_IAM", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_STS",
            "AWS_ENDPOINT_URL_S3_CONTROL", "MOTO_ACCOUNT_ID", "MOTO_IAM_LOAD_MANAGED_POLICIES")


def _fake_aws_env(**extra: str) -> contextlib.AbstractContextManager[None]:
    """Test-only AWS environment for the duration (saved and restored, like monkeypatch)."""
    values: dict[str, str | None] = {k: None for k in _AWS_ENV}
    values.update(FAKE_CREDENTIALS)
    values.update({"AWS_DEFAULT_REGION": HOME_REGION, "AWS_CONFIG_FILE": os.devnull,
                   "AWS_SHARED_CREDENTIALS_FILE": os.devnull, **extra})
    return _override_env(values)


@dataclass
class AwsSandbox:
    truth: AwsTruth
    session: boto3.Session
    endpoint_url: str | None = None

    def client(self, service: str, region: str = HOME_REGION) -> Any:
        return local_client(self.session, service, region, self.endpoint_url)


@contextlib.contextmanager
def aws_sandbox(org: Org, *, load_aws_managed_policies: bool = False) -> Iterator[AwsSandbox]:
    """In-process ``mock_aws()`` seeded with the organisation; fake credentials for the duration.

    Do not run it while a :func:`start_moto_server` server is in use in the same process: both
    share moto's backends, and leaving the mock wipes them.
    """
    from moto import mock_aws

    config = {
        "core": {"mock_credentials": False, "passthrough": {"urls": [], "services": []},
                 "reset_boto3_session": True, "service_whitelist": None},
        "iam": {"load_aws_managed_policies": load_aws_managed_policies},
    }
    with _fake_aws_env(), mock_aws(config=config):
        session = boto3.Session(region_name=HOME_REGION)
        truth = seed_aws(org, session=session)
        yield AwsSandbox(truth, session)


def start_moto_server(org: Org, *, load_aws_managed_policies: bool = False) -> tuple[Any, str]:
    """Start ``ThreadedMotoServer`` on 127.0.0.1 (free port), reset it, seed it; ``(server, url)``.

    The caller stops it with ``server.stop()``. Clients need ``endpoint_url=url``, any region,
    test credentials, and path-style S3 (automatic for an IP address).
    """
    from moto.core.models import botocore_stubber
    from moto.server import ThreadedMotoServer

    if botocore_stubber.enabled:
        raise RuntimeError("mock_aws() is active in this process: it shares moto's state with the server; leave it first")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    try:
        import requests

        session = boto3.Session(aws_access_key_id=FAKE_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                                aws_secret_access_key=FAKE_CREDENTIALS["AWS_SECRET_ACCESS_KEY"], region_name=HOME_REGION)
        # moto's /moto-api/config cannot switch IAM managed policies; the environment variable can,
        # read when the reset IAM backend is built by the first IAM call (inside seed_aws)
        flag = {"MOTO_IAM_LOAD_MANAGED_POLICIES": "true"} if load_aws_managed_policies else {}
        with _override_env(flag):
            requests.post(f"{url}/moto-api/reset", timeout=30).raise_for_status()
            seed_aws(org, session=session, endpoint_url=url)
    except BaseException:
        server.stop()
        raise
    return server, url


@contextlib.contextmanager
def _override_env(values: dict[str, str | None]) -> Iterator[None]:
    """Set (or, for None, remove) environment variables for the duration; restore them after."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

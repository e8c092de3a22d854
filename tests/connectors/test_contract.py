"""The contract every registered connector must keep (Singer SDK style).

Each registered type needs a case in CASES: a function building a config (and clients) that
runs offline. A new connector without a case fails here, on purpose.
"""

from __future__ import annotations

import importlib
from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from connectors import REGISTRY, connector_class
from connectors.base import Organization, RunContext
from evidence.model import STREAMS, RawPage, Record, canonical_json, field_names


def _local_files_case(tmp_path):
    root = tmp_path / "share"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "f.txt").write_text("x")
    (root / "a" / "b" / "g.txt").write_text("y")
    return {"roots": [str(root)]}, None


_STARTED: list = []  # sandboxes the cases started; the test stops them when it ends


def _stop_started() -> None:
    while _STARTED:
        _STARTED.pop().close()


def _google_directory_case(tmp_path):
    from sandbox.env import SandboxEnv

    env = SandboxEnv(tmp_path / "sandbox", microsoft=False, aws=False).start()
    _STARTED.append(env)
    google = env.endpoints["google"]
    return {k: google[k] for k in ("service_account_key_file", "admin_subject", "root_url")}, None


def _google_drive_case(tmp_path):
    options, clients = _google_directory_case(tmp_path)
    return {**options, "workers": 4}, clients


def _microsoft_case(tmp_path):
    from sandbox.env import SandboxEnv

    env = SandboxEnv(tmp_path / "sandbox", google=False, aws=False).start()
    _STARTED.append(env)
    ms = env.endpoints["microsoft"]
    return {
        "tenant_id": ms["tenant_id"], "client_id": ms["client_id"], "client_secret_file": ms["client_secret_file"],
        "authority": ms["authority"].removesuffix("/" + ms["tenant_id"]), "graph_url": ms["graph_url"],
        "ca_bundle": ms["ca_bundle"],
    }, None


def _aws_case(kind):
    """The sandbox's moto server (AWS only), configured exactly as the sandbox's template writes it."""
    def case(tmp_path):
        import tomllib

        from sandbox.env import CONNECTOR_TEMPLATES, SandboxEnv

        env = SandboxEnv(tmp_path / "sandbox", google=False, microsoft=False).start()
        _STARTED.append(env)
        (options,) = tomllib.loads(CONNECTOR_TEMPLATES[kind](env))["connector"]
        return {k: v for k, v in options.items() if k not in ("id", "type", "schedule")}, None
    return case


CASES = {
    "aws_iam": _aws_case("aws_iam"),
    "aws_s3": _aws_case("aws_s3"),
    "entra_id": _microsoft_case,
    "m365_files": lambda tmp_path: ({**_microsoft_case(tmp_path)[0], "ru_per_minute": 1_000_000}, None),
    "google_directory": _google_directory_case,
    "google_drive": _google_drive_case,
    "local_files": _local_files_case,
}


def _snapshot(cls, config, clients, cursor=None):
    ctx = RunContext(
        run_id="r1", connector_id="contract", started=datetime.now(timezone.utc),
        organization=Organization("Example", ("example.co.jp",), "Asia/Tokyo"), cursor=cursor,
    )
    by_stream: dict[str, dict[str, str]] = {s: {} for s in STREAMS}
    duplicates = []
    for item in cls(config, clients).snapshot(ctx):
        assert isinstance(item, (Record, RawPage)), f"yielded {type(item).__name__}"
        if isinstance(item, Record):
            assert item.stream in cls.streams, f"record in undeclared stream {item.stream}"
            if item.key in by_stream[item.stream]:
                duplicates.append((item.stream, item.key))
            assert set(item.data) == set(field_names(item.stream)), f"{item.stream} fields differ from the model"
            by_stream[item.stream][item.key] = canonical_json(item.data)  # JSON-safe
    return ctx, by_stream, duplicates


@pytest.mark.parametrize("kind", sorted(REGISTRY))
def test_every_connector_keeps_the_contract(kind, tmp_path, request):
    request.addfinalizer(_stop_started)
    assert kind in CASES, f"connector {kind} has no contract case in tests/connectors/test_contract.py"
    cls = connector_class(kind)
    module = importlib.import_module(cls.__module__)
    assert cls.kind == kind and module.__name__ == f"connectors.{kind}", "one name everywhere"
    assert cls.streams and set(cls.streams) <= set(STREAMS)
    assert cls.permissions and all(isinstance(p, str) and p for p in cls.permissions)
    options, clients = CASES[kind](tmp_path)
    with pytest.raises(ValidationError):
        cls.Config.model_validate({**options, "no_such_option": 1})
    config = cls.Config.model_validate(options)
    with pytest.raises(ValidationError):  # frozen
        setattr(config, next(iter(options)), None)
    assert cls(config, clients).check().ok
    ctx, first, duplicates = _snapshot(cls, config, clients)
    assert duplicates == []
    assert any(first.values()), "a snapshot of the contract case yields records"
    assert not ctx.errors
    # a second run from the first run's cursor sees the same state
    _, second, _ = _snapshot(cls, config, clients, cursor=ctx.pending_cursor)
    assert second == first

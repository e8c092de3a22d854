"""Connectors for testing the runner: each misbehaves in one documented way."""

from __future__ import annotations

import time
from typing import Iterator

from connectors.base import CheckResult, Connector, ConnectorConfig, SourceError
from evidence.model import Principal, RawPage


class FakeConfig(ConnectorConfig):
    behaviour: str = "ok"        # ok | raise_midway | raise_first | report_error | slow
    records: int = 5


class FakeConnector(Connector):
    kind = "fake"
    Config = FakeConfig
    streams = ("principals",)
    permissions = ("nothing",)

    def check(self) -> CheckResult:
        return CheckResult().add("fake", True)

    def snapshot(self, ctx) -> Iterator:
        b = self.config.behaviour
        if b == "raise_first":
            raise SourceError("the source said 503 three times", where="users.list", status=503)
        ctx.identity = "fake-identity"
        for i in range(self.config.records):
            ctx.raise_if_cancelled(f"page {i}")
            ctx.count_call("users.list")
            yield RawPage("users.list", {"page": i}, i, {"users": [f"u{i}"]})
            yield Principal(id=f"u{i}", kind="user", email=f"u{i}@example.co.jp").record()
            if b == "raise_midway" and i == 2:
                raise SourceError("page token expired", where="users.list page 3")
            if b == "report_error" and i == 1:
                ctx.error("users/u1", "permission denied reading this user")
            if b == "slow":
                time.sleep(0.05)
        ctx.set_cursor({"token": f"t{self.config.records}"})

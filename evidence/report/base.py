"""What every part of a report shares: its format, the connector id of report bags, its errors."""

from __future__ import annotations

FORMAT = "shoseki-report/1"
#: Connector-Id and Connector-Type of report bags (their own chain in the ledger)
REPORT = "report"


class ReportInputError(ValueError):
    """The dates or options asked for make no report (the message says which and why)."""


class ReportError(RuntimeError):
    """The report could not be made from this vault (the message says why)."""

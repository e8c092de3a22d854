"""Findings: what needs attention in the sealed evidence, judged without calling any API.

``select_bundles`` picks the bag judged per connector as of a date, ``assess`` runs the rules
(:mod:`evidence.findings.rules`) over them, ``iter_accounts`` / ``iter_sharing`` stream the
tables a report adds. Types are in :mod:`evidence.findings.model`.
"""

from evidence.findings.assess import assess, settings_from_config
from evidence.findings.model import (
    ACCOUNT_COLUMNS, AUDIENCES, RULES, SEVERITIES, SHARING_COLUMNS, Accessor, Assessment, EvidenceRef, Finding,
    JudgedBundle, PrivilegedHolder, RegisterView, Rule, Settings,
)
from evidence.findings.select import JudgeError, select_bundles
from evidence.findings.tables import iter_accounts, iter_sharing

__all__ = [
    "ACCOUNT_COLUMNS", "AUDIENCES", "RULES", "SEVERITIES", "SHARING_COLUMNS", "Accessor", "Assessment", "EvidenceRef",
    "Finding", "JudgeError", "JudgedBundle", "PrivilegedHolder", "RegisterView", "Rule", "Settings", "assess",
    "iter_accounts", "iter_sharing", "select_bundles", "settings_from_config",
]

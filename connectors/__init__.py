"""The connector registry: config ``type`` → ``"module:Class"``, imported on first use.

Lazy on purpose: a connector whose optional dependency is broken fails alone, with a message,
instead of taking every other connector down at import time.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from connectors.base import Connector

REGISTRY: dict[str, str] = {
    "aws_iam": "connectors.aws_iam:AwsIamConnector",
    "aws_s3": "connectors.aws_s3:AwsS3Connector",
    "google_directory": "connectors.google_directory:GoogleDirectoryConnector",
    "google_drive": "connectors.google_drive:GoogleDriveConnector",
    "entra_id": "connectors.entra_id:EntraIdConnector",
    "local_files": "connectors.local_files:LocalFilesConnector",
    "m365_files": "connectors.m365_files:M365FilesConnector",
}


class UnknownConnectorType(LookupError):
    def __init__(self, kind: str, reason: str | None = None):
        self.kind = kind
        if reason is None:
            reason = f"unknown connector type '{kind}' (known: {', '.join(sorted(REGISTRY))})"
        super().__init__(reason)


@cache
def connector_class(kind: str) -> type["Connector"]:
    from connectors.base import validate_declaration

    target = REGISTRY.get(kind)
    if target is None:
        raise UnknownConnectorType(kind)
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownConnectorType(kind, f"connector type '{kind}' cannot be loaded: {exc}") from exc
    cls = getattr(module, class_name)
    problems = validate_declaration(cls)
    if problems or cls.kind != kind:
        raise UnknownConnectorType(kind, f"connector type '{kind}' is misdeclared: {'; '.join(problems) or f'kind is {cls.kind!r}'}")
    return cls

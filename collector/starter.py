"""``shoseki init``: a commented starter configuration, the same files as the repo's config/."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

STARTER = {
    "shoseki.toml": "shoseki.toml",
    "connectors/local-files.toml.example": "local-files.toml.example",
    "connectors/google-directory.toml.example": "google-directory.toml.example",
    "connectors/google-drive.toml.example": "google-drive.toml.example",
    "connectors/aws-iam.toml.example": "aws-iam.toml.example",
    "connectors/aws-s3.toml.example": "aws-s3.toml.example",
    "connectors/entra-id.toml.example": "entra-id.toml.example",
    "connectors/m365-files.toml.example": "m365-files.toml.example",
    # the organisation's context and the control catalogue override (`shoseki report`)
    "contractors.toml.example": "contractors.toml.example",
    "exceptions.toml.example": "exceptions.toml.example",
    "register.toml.example": "register.toml.example",
    "roster.csv.example": "roster.csv.example",
    "controls.toml.example": "controls.toml.example",
}


def starter_text(name: str) -> str:
    return (files("collector") / "templates" / STARTER[name]).read_text(encoding="utf-8")


def write_starter_config(directory: Path) -> list[Path]:
    targets = [directory / rel for rel in STARTER]
    for t in targets:
        if t.exists():
            raise FileExistsError(str(t))
    written = []
    for rel, target in zip(STARTER, targets):
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(starter_text(rel), encoding="utf-8")
        written.append(target)
    return written

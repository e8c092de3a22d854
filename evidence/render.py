"""Text an auditor reads inside a bag (README.txt, summary.html), rendered from templates."""

from __future__ import annotations

from functools import cache
from typing import Any

import jinja2


@cache
def jinja_env(autoescape: bool) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("evidence", "templates"),
        autoescape=autoescape,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )


def render_readme(context: dict[str, Any]) -> str:
    return jinja_env(False).get_template("README.txt.j2").render(**context)


def render_summary(context: dict[str, Any]) -> str:
    return jinja_env(True).get_template("summary.html.j2").render(**context)

"""The one place Jinja environments are made: the workspace's templates/ first, then the package's, with
StrictUndefined so that a missing variable is an error, never an empty string."""

from __future__ import annotations

import re
from pathlib import Path

import jinja2

from ..errors import RenderError
from ..workspace import PACKAGE_TEMPLATES


def environment(overrides: Path | None, *, report: bool = False) -> jinja2.Environment:
    """Templates from `overrides` (a workspace's templates/) before the package's.

    `report`: the report's flavour, HTML autoescaped and block tags trimmed, with the `md` and `fence`
    filters; else the notebook's, every character as written (the notebook must be byte-identical)."""
    loaders = [jinja2.FileSystemLoader(str(overrides))] if overrides else []
    loader = jinja2.ChoiceLoader([*loaders, jinja2.FileSystemLoader(str(PACKAGE_TEMPLATES))])
    if not report:
        return jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                  autoescape=False)
    env = jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             autoescape=jinja2.select_autoescape(["html.j2"], default_for_string=False),
                             trim_blocks=True, lstrip_blocks=True)
    env.filters["md"] = lambda text: str(text).replace("|", "\\|").replace("\n", " ")
    env.filters["fence"] = _fence
    return env


def _fence(text: str) -> str:
    """A Markdown code fence longer than any run of backticks in `text`."""
    return "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))


def render_template(env: jinja2.Environment, name: str, context: dict, where: str) -> str:
    """Render one template; any template error is one line naming `where` (an experiment, the report),
    the template file and its line."""
    try:
        return env.get_template(name).render(**context)
    except jinja2.TemplateError as e:
        file = getattr(e, "filename", None) or name
        line = getattr(e, "lineno", None)
        raise RenderError(f"{where}: template {file}{f' line {line}' if line else ''}: {e.message}") from None

"""Render experiments into Kaggle-ready folders: build/EXP/EXP.ipynb and build/EXP/kernel-metadata.json.

The notebook is self-contained: a markdown header stating the experiment, a cell that writes the resolved
settings as JSON data (`%%writefile run.json`, never code built by formatting), the training core inlined
one module per cell, and the call that trains. Templates (Jinja, StrictUndefined) come from the
workspace's templates/ first, then the package's. Rendering is all or nothing, and byte-identical for
the same inputs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jinja2
import nbformat

from . import __version__
from .bundle import bundle, core_hash
from .errors import KagglerunError, RenderError
from .experiments import Settings
from .workspace import PACKAGE_TEMPLATES, Workspace

METADATA_FILE = "kernel-metadata.json"
PLACEHOLDER_OWNER = "kagglerun"
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


def default_owner() -> str:
    """The Kaggle username from $KAGGLE_USERNAME or ~/.kaggle/kaggle.json, else a placeholder (push
    renders again with the authenticated user)."""
    if os.environ.get("KAGGLE_USERNAME"):
        return os.environ["KAGGLE_USERNAME"]
    config = Path(os.environ.get("KAGGLE_CONFIG_DIR", Path.home() / ".kaggle")) / "kaggle.json"
    try:
        return str(json.loads(config.read_text())["username"])
    except (OSError, ValueError, KeyError, TypeError):
        return PLACEHOLDER_OWNER


def _environment(ws: Workspace) -> jinja2.Environment:
    loader = jinja2.ChoiceLoader([jinja2.FileSystemLoader(str(ws.templates)), jinja2.FileSystemLoader(str(PACKAGE_TEMPLATES))])
    return jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              autoescape=False)


def _render_template(env: jinja2.Environment, name: str, context: dict[str, Any], experiment: str) -> str:
    try:
        return env.get_template(name).render(**context)
    except jinja2.TemplateError as e:
        where = f"{getattr(e, 'filename', None) or name}"
        line = getattr(e, "lineno", None)
        raise RenderError(f"{experiment}: template {where}{f' line {line}' if line else ''}: {e.message}") from None


def _rows(prefix: str, data: Any) -> list[tuple[str, str]]:
    """Flatten settings into (dotted key, JSON value) rows for the header table."""
    if isinstance(data, dict):
        return [row for k, v in data.items() for row in _rows(f"{prefix}.{k}" if prefix else k, v)]
    return [(prefix, json.dumps(data))]


def kernel_metadata(env: jinja2.Environment, s: Settings, owner: str) -> dict[str, Any]:
    context = {"kernel_id": f"{owner}/{s.slug}", "title": s.title, "code_file": f"{s.name}.ipynb",
               "kaggle": s.kaggle.model_dump()}
    text = _render_template(env, "kernel-metadata.json.j2", context, s.name)
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as e:
        raise RenderError(f"{s.name}: template kernel-metadata.json.j2 renders invalid JSON: {e}") from None
    for key in ("is_private", "enable_gpu", "enable_tpu", "enable_internet"):
        if not isinstance(meta.get(key), bool):
            raise RenderError(f"{s.name}: {METADATA_FILE}: {key} must be true or false")
    if len(meta.get("title") or "") < 5:
        raise RenderError(f"{s.name}: {METADATA_FILE}: title {meta.get('title')!r} is shorter than five characters")
    return meta


def notebook(env: jinja2.Environment, s: Settings) -> nbformat.NotebookNode:
    settings = s.as_dict()
    engine_hash = core_hash(s.engine)
    run_spec = {"experiment": s.name, "settings": settings, "settings_hash": s.hash, "core_hash": engine_hash,
                "kagglerun": __version__}
    context = {"name": s.name, "title": s.title, "description": s.description, "settings": settings,
               "rows": _rows("", settings), "settings_hash": s.hash, "core_hash": engine_hash,
               "version": __version__, "modules": [m.path for m in bundle(s.engine)]}
    cells = [nbformat.v4.new_markdown_cell(_render_template(env, "header.md.j2", context, s.name))]
    cells.append(nbformat.v4.new_code_cell("%%writefile run.json\n" + json.dumps(run_spec, indent=1, sort_keys=True)))
    for module in bundle(s.engine):
        cells.append(nbformat.v4.new_code_cell(f"# {module.path}: inlined by kagglerun (core {engine_hash})\n"
                                               + module.source.rstrip() + "\n"))
    cells.append(nbformat.v4.new_code_cell(_render_template(env, "main.py.j2", context, s.name).rstrip() + "\n"))
    for i, cell in enumerate(cells):
        cell["id"] = f"kagglerun-{i:02d}"  # fixed ids: the same inputs give byte-identical notebooks
        cell["source"] = cell["source"].rstrip("\n")
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"},
                   "kagglerun": {"experiment": s.name, "settings_hash": s.hash, "core_hash": engine_hash}}
    return nb


def check_notebook(nb: nbformat.NotebookNode, where: str) -> None:
    """The checks Kaggle's push makes on a notebook, and nbformat's schema."""
    try:
        nbformat.validate(nb)
    except nbformat.ValidationError as e:
        raise RenderError(f"{where}: invalid notebook: {e.message}") from None
    if not nb.metadata.get("kernelspec", {}).get("name"):
        raise RenderError(f"{where}: notebook has no kernelspec")
    if any(c.get("outputs") for c in nb.cells if c.cell_type == "code"):
        raise RenderError(f"{where}: notebook cells carry outputs")


def render_into(folder: Path, s: Settings, env: jinja2.Environment, owner: str) -> Path:
    """Write and validate one experiment's kernel folder."""
    from .kaggle_api import validate_kernel_folder

    folder.mkdir(parents=True, exist_ok=True)
    nb = notebook(env, s)
    check_notebook(nb, f"{s.name}.ipynb")
    (folder / f"{s.name}.ipynb").write_text(nbformat.writes(nb) + "\n")
    meta = kernel_metadata(env, s, owner)
    (folder / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    validate_kernel_folder(folder)
    return folder


def render_experiments(ws: Workspace, names: list[str], owner: str | None = None) -> list[Path]:
    """Render every named experiment into build/NAME/, all or nothing: on any error no folder changes."""
    return render_settings(ws, ws.store().load_many(names), owner)


def render_settings(ws: Workspace, settings: list[Settings], owner: str | None = None, quick: bool = False) -> list[Path]:
    """Render resolved settings into build/NAME/ (build/NAME.quick/ for a run with overrides), all or nothing."""
    owner = owner or default_owner()
    env = _environment(ws)
    ws.build.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".render-", dir=ws.build))
    try:
        for s in settings:
            try:
                render_into(staging / s.name, s, env, owner)
            except KagglerunError:
                raise
            except Exception as e:  # a template or validation bug: say which experiment
                raise RenderError(f"{s.name}: rendering failed: {type(e).__name__}: {e}") from None
        folders = []
        for s in settings:  # swap each finished folder into place
            final = ws.build / (s.name + (".quick" if quick else ""))
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging / s.name, final)
            folders.append(final)
        return folders
    finally:
        shutil.rmtree(staging, ignore_errors=True)

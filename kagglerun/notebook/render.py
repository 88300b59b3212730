"""Render experiments into Kaggle-ready folders: build/EXP/EXP.ipynb and build/EXP/kernel-metadata.json.

The notebook is self-contained: a markdown header stating the experiment, a cell that writes the resolved
settings as JSON data (`%%writefile run.json`, never code built by formatting), the training core written
as a package one module per cell (payload.py), a cell importing it, and the call that trains. Templates
(Jinja, StrictUndefined) come from the workspace's templates/ first, then the package's. Rendering is all
or nothing, and byte-identical for the same inputs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
import nbformat

from .. import __version__
from ..errors import CredentialsError, KagglerunError, RenderError
from ..experiments import Settings
from ..kaggle import load_credentials, validate_kernel_folder
from ..workspace import Workspace, real_folder
from .models import ModelChecker
from .packs import check_packs, pack_settings
from .payload import PAYLOAD_PACKAGE, core_hash, engine_modules, kernel_payload, payload_folders
from .templates import environment, render_template

METADATA_FILE = "kernel-metadata.json"
PLACEHOLDER_OWNER = "kagglerun"
KERNELSPEC = {"display_name": "Python 3", "language": "python", "name": "python3"}


@dataclass(frozen=True)
class Kernel:
    """One kernel to render: an experiment, or a pack (`settings` from `pack_settings`, `members` its experiments)."""

    settings: Settings
    members: tuple[Settings, ...] = ()
    models: tuple[tuple[str, str], ...] = ()  # the workspace models it trains: (name, source), set by render

    @property
    def experiments(self) -> tuple[Settings, ...]:
        return self.members or (self.settings,)

    @property
    def engine(self) -> str:
        return "scratch" if any(m.engine == "scratch" for m in (self.settings, *self.members)) else "torch"


def default_owner() -> str:
    """The Kaggle username of the credentials the client would use, else a placeholder (push renders again
    with the authenticated user)."""
    try:
        return load_credentials().username
    except CredentialsError:
        return PLACEHOLDER_OWNER


def _rows(prefix: str, data: Any) -> list[tuple[str, str]]:
    """Flatten settings into (dotted key, JSON value) rows for the header table."""
    if isinstance(data, dict):
        return [row for k, v in data.items() for row in _rows(f"{prefix}.{k}" if prefix else k, v)]
    return [(prefix, json.dumps(data))]


SLUG_MAX = 50  # Kaggle's kernel slugs: at most 50 characters of a-z, 0-9 and '-'
_SLUG = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")


def check_slug(s: Settings) -> None:
    """Refuse a kernel slug Kaggle would refuse or change: more than 50 characters, or others than a-z, 0-9
    and '-' (the default slug comes from the experiment's name, which may hold capitals or dots). The
    official client does not check it (kaggle_api_extended.py kernels_push only warns about the title)."""
    slug = s.slug
    if len(slug) > SLUG_MAX or not _SLUG.fullmatch(slug):
        how = f"is {len(slug)} characters long (at most {SLUG_MAX})" if len(slug) > SLUG_MAX else \
            "holds characters other than a-z, 0-9 and '-' (or starts or ends with '-')"
        source = "kaggle.slug" if s.kaggle.slug else "made from the name"
        raise RenderError(f"{s.name}: the Kaggle kernel slug {slug!r} ({source}) {how}; set kaggle.slug to 5-50 "
                          "characters of a-z, 0-9 and '-'")


def kernel_metadata(env: jinja2.Environment, s: Settings, owner: str) -> dict[str, Any]:
    check_slug(s)
    context = {"kernel_id": f"{owner}/{s.slug}", "title": s.title, "code_file": f"{s.name}.ipynb",
               "kaggle": s.kaggle.model_dump()}
    text = render_template(env, "kernel-metadata.json.j2", context, s.name)
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


def _run_spec(kernel: Kernel, engine_hash: str) -> dict[str, Any]:
    """run.json: what the core trains (core/train.py `main`): one experiment, or each member of a pack."""
    s = kernel.settings
    if not kernel.members:
        return {"experiment": s.name, "settings": s.as_dict(), "settings_hash": s.hash, "core_hash": engine_hash,
                "kagglerun": __version__}
    return {"experiment": s.name, "kagglerun": __version__, "runs": [
        {"experiment": m.name, "settings": m.as_dict(), "settings_hash": m.hash, "core_hash": engine_hash}
        for m in kernel.members]}


def _payload_cells(engine: str, engine_hash: str, models: dict[str, str]) -> list[nbformat.NotebookNode]:
    """The folders, one `%%writefile` cell per payload module (the workspace's models last), and the cell
    that imports the package."""
    folders = ", ".join(repr(f) for f in payload_folders(engine, bool(models)))
    cells = [nbformat.v4.new_code_cell(
        f"# kagglerun's training core (core {engine_hash}) follows as the package {PAYLOAD_PACKAGE}/, one file per\n"
        "# cell, written beside this run's outputs so that the code that made a result is kept with it.\n"
        "import os, shutil, sys\n"
        f"shutil.rmtree({PAYLOAD_PACKAGE!r}, ignore_errors=True)  # a fresh copy: no file of an earlier notebook stays\n"
        f"for folder in ({folders},):\n"
        "    os.makedirs(folder, exist_ok=True)\n"
        "sys.dont_write_bytecode = True  # no __pycache__ among the outputs")]
    for module in kernel_payload(engine, models):
        cells.append(nbformat.v4.new_code_cell(f"%%writefile {module.path}\n" + module.source.rstrip() + "\n"))
    imports = "\n".join(f"import {name}  # registers its engine" for name in engine_modules(engine))
    cells.append(nbformat.v4.new_code_cell(
        "# Import the training core written above.\n"
        "sys.path.insert(0, os.getcwd())\n"
        f"from {PAYLOAD_PACKAGE}.core.train import main\n{imports}"))
    return cells


def notebook(env: jinja2.Environment, kernel: Kernel) -> nbformat.NotebookNode:
    """The notebook of one experiment, or of a pack."""
    s, pack = kernel.settings, kernel.members
    settings = s.as_dict()
    models = dict(kernel.models)
    engine_hash = core_hash(kernel.engine, models)
    context = {"name": s.name, "title": s.title, "description": s.description, "settings": settings,
               "rows": _rows("", settings), "settings_hash": s.hash, "core_hash": engine_hash,
               "version": __version__, "modules": [m.origin for m in kernel_payload(kernel.engine, models)],
               "workspace_models": [f"models/{name}.py" for name in sorted(models)],
               "pack": [{"name": m.name, "description": m.description, "settings": m.as_dict(), "settings_hash": m.hash}
                        for m in pack]}
    cells = [nbformat.v4.new_markdown_cell(render_template(env, "header.md.j2", context, s.name))]
    cells.append(nbformat.v4.new_code_cell("%%writefile run.json\n"
                                           + json.dumps(_run_spec(kernel, engine_hash), indent=1, sort_keys=True)))
    cells += _payload_cells(kernel.engine, engine_hash, models)
    cells.append(nbformat.v4.new_code_cell(render_template(env, "main.py.j2", context, s.name).rstrip() + "\n"))
    for i, cell in enumerate(cells):
        cell["id"] = f"kagglerun-{i:02d}"  # fixed ids: the same inputs give byte-identical notebooks
        cell["source"] = cell["source"].rstrip("\n")
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"},
                   "kagglerun": {"experiment": s.name, "settings_hash": s.hash, "core_hash": engine_hash}}
    if pack:
        nb.metadata["kagglerun"]["pack"] = {m.name: m.hash for m in pack}
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


def render_into(folder: Path, kernel: Kernel, env: jinja2.Environment, owner: str) -> Path:
    """Write and validate one experiment's (or one pack's) kernel folder."""
    s = kernel.settings
    folder.mkdir(parents=True, exist_ok=True)
    nb = notebook(env, kernel)
    check_notebook(nb, f"{s.name}.ipynb")
    (folder / f"{s.name}.ipynb").write_text(nbformat.writes(nb) + "\n")
    meta = kernel_metadata(env, s, owner)
    (folder / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    validate_kernel_folder(folder)
    return folder


def render_experiments(ws: Workspace, names: list[str], owner: str | None = None,
                       packs: list[list[str]] | tuple[()] = ()) -> list[Path]:
    """Render every named experiment into build/NAME/ and each pack of names into build/pack_<a>_<b>/,
    all or nothing: on any error no folder changes. Folders come in that order, singles first."""
    check_packs(names, list(packs))
    store = ws.store()
    kernels = [Kernel(s) for s in store.load_many(names)]
    for group in packs:
        members = store.load_many(group)
        kernels.append(Kernel(pack_settings(members), tuple(members)))
    return render_kernels(ws, kernels, owner)


def render_packs(ws: Workspace, groups: list[list[Settings]], owner: str | None = None) -> list[Path]:
    """Render each group of experiments as one packed kernel, build/pack_<a>_<b>/, all or nothing."""
    return render_kernels(ws, [Kernel(pack_settings(g), tuple(g)) for g in groups], owner)


def render_kernels(ws: Workspace, kernels: list[Kernel], owner: str | None = None, quick: bool = False) -> list[Path]:
    """Render kernels into build/NAME/ (build/NAME.quick/ for a run with overrides), all or nothing."""
    checker = ModelChecker(ws.store())  # every model built once on the CPU before anything is written
    kernels = [dataclasses.replace(k, models=tuple(checker.sources(list(k.experiments)).items())) for k in kernels]
    owner = owner or default_owner()
    env = environment(ws.templates)
    real_folder(ws.build).mkdir(parents=True, exist_ok=True)
    for kernel in kernels:  # before anything is written: a file or a link where a folder goes
        real_folder(ws.build / (kernel.settings.name + (".quick" if quick else "")))
    staging = Path(tempfile.mkdtemp(prefix=".render-", dir=ws.build))
    try:
        for kernel in kernels:
            try:
                render_into(staging / kernel.settings.name, kernel, env, owner)
            except KagglerunError:
                raise
            except Exception as e:  # a template or validation bug: say which experiment
                raise RenderError(f"{kernel.settings.name}: rendering failed: {type(e).__name__}: {e}") from None
        folders = []
        for kernel in kernels:  # swap each finished folder into place
            name = kernel.settings.name
            final = ws.build / (name + (".quick" if quick else ""))
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging / name, final)
            folders.append(final)
        return folders
    finally:
        shutil.rmtree(staging, ignore_errors=True)

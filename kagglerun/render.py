"""Render experiments into Kaggle-ready folders: build/EXP/EXP.ipynb and build/EXP/kernel-metadata.json.

The notebook is self-contained: a markdown header stating the experiment, a cell that writes the resolved
settings as JSON data (`%%writefile run.json`, never code built by formatting), the training core inlined
one module per cell, and the call that trains. Templates (Jinja, StrictUndefined) come from the
workspace's templates/ first, then the package's. Rendering is all or nothing, and byte-identical for
the same inputs.
"""

from __future__ import annotations

import hashlib
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
    """The Kaggle username of the credentials the client would use, else a placeholder (push renders again
    with the authenticated user)."""
    from .errors import CredentialsError
    from .kaggle_api import load_credentials

    try:
        return load_credentials().username
    except CredentialsError:
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


def notebook(env: jinja2.Environment, s: Settings, pack: tuple[Settings, ...] = ()) -> nbformat.NotebookNode:
    """The notebook of one experiment, or of a pack (`s` from `pack_settings`, `pack` its members)."""
    settings = s.as_dict()
    engine = "scratch" if any(m.engine == "scratch" for m in (s, *pack)) else "torch"
    engine_hash = core_hash(engine)
    run_spec = {"experiment": s.name, "settings": settings, "settings_hash": s.hash, "core_hash": engine_hash,
                "kagglerun": __version__}
    if pack:  # the core trains each member into its own subfolder (core/pack.py)
        run_spec = {"experiment": s.name, "kagglerun": __version__, "runs": [
            {"experiment": m.name, "settings": m.as_dict(), "settings_hash": m.hash, "core_hash": engine_hash}
            for m in pack]}
    context = {"name": s.name, "title": s.title, "description": s.description, "settings": settings,
               "rows": _rows("", settings), "settings_hash": s.hash, "core_hash": engine_hash,
               "version": __version__, "modules": [m.path for m in bundle(engine)],
               "pack": [{"name": m.name, "description": m.description, "settings": m.as_dict(), "settings_hash": m.hash}
                        for m in pack]}
    cells = [nbformat.v4.new_markdown_cell(_render_template(env, "header.md.j2", context, s.name))]
    cells.append(nbformat.v4.new_code_cell("%%writefile run.json\n" + json.dumps(run_spec, indent=1, sort_keys=True)))
    for module in bundle(engine):
        cells.append(nbformat.v4.new_code_cell(f"# {module.path}: inlined by kagglerun (core {engine_hash})\n"
                                               + module.source.rstrip() + "\n"))
    cells.append(nbformat.v4.new_code_cell(_render_template(env, "main.py.j2", context, s.name).rstrip() + "\n"))
    for i, cell in enumerate(cells):
        cell["id"] = f"kagglerun-{i:02d}"  # fixed ids: the same inputs give byte-identical notebooks
        cell["source"] = cell["source"].rstrip("\n")
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata = {"kernelspec": dict(KERNELSPEC), "language_info": {"name": "python"},
                   "kagglerun": {"experiment": s.name, "settings_hash": s.hash, "core_hash": engine_hash}}
    if pack:
        nb.metadata["kagglerun"]["pack"] = {m.name: m.hash for m in pack}
    return nb


def pack_name(names: list[str]) -> str:
    """The kernel name of a pack: pack_<a>_<b>, shortened with a hash when long (a Kaggle slug has 50 characters)."""
    name = "pack_" + "_".join(names)
    if len(name) > 38:
        digest = hashlib.sha256("\0".join(names).encode()).hexdigest()[:8]
        name = f"pack_{names[0][:24].rstrip('_')}_{digest}"
    return name


def pack_settings(members: list[Settings]) -> Settings:
    """The pack's own settings, for its kernel metadata and header: the first member's, named for the pack,
    with the members' Kaggle sections merged (they must agree on the machine; inputs are joined)."""
    if len(members) < 2 or len({m.name for m in members}) != len(members):
        raise RenderError(f"a pack needs two or more different experiments, got {[m.name for m in members]}")
    first = members[0]
    for m in members[1:]:
        for key in ("gpu", "machine_shape", "private"):
            if getattr(m.kaggle, key) != getattr(first.kaggle, key):
                raise RenderError(f"{m.name}: kaggle.{key} differs from {first.name}'s; packed experiments share one machine")

    def joined(key: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(v for m in members for v in getattr(m.kaggle, key)))

    kaggle = first.kaggle.model_copy(update={
        "slug": None, "title": None, "internet": any(m.kaggle.internet for m in members),
        "dataset_sources": joined("dataset_sources"), "kernel_sources": joined("kernel_sources"),
        "competition_sources": joined("competition_sources")})
    names = [m.name for m in members]
    return first.model_copy(update={"name": pack_name(names), "kaggle": kaggle,
                                    "description": "packed: " + ", ".join(names) + " (one GPU each)"})


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


def render_into(folder: Path, s: Settings, env: jinja2.Environment, owner: str, pack: tuple[Settings, ...] = ()) -> Path:
    """Write and validate one experiment's (or one pack's) kernel folder."""
    from .kaggle_api import validate_kernel_folder

    folder.mkdir(parents=True, exist_ok=True)
    nb = notebook(env, s, pack)
    check_notebook(nb, f"{s.name}.ipynb")
    (folder / f"{s.name}.ipynb").write_text(nbformat.writes(nb) + "\n")
    meta = kernel_metadata(env, s, owner)
    (folder / METADATA_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    validate_kernel_folder(folder)
    return folder


def select_runs(ws: Workspace, patterns: tuple[str, ...] | list[str], all_: bool = False,
                pack_specs: tuple[str, ...] | list[str] = (), pack_all: bool = False) -> tuple[list[str], list[list[str]]]:
    """What `render` and `push` were asked for: (experiments alone, packs of experiments).

    Each pack spec is "a,b" (names or globs); `pack_all` pairs the selected experiments two by two in
    order (an odd one out goes alone). Experiments may be left unnamed when packs are given."""
    store = ws.store()
    packs = [store.select([p.strip() for p in spec.split(",") if p.strip()]) for spec in pack_specs]
    names = store.select(patterns, all_) if patterns or all_ or not packs else []
    if pack_all:
        paired = len(names) - len(names) % 2
        packs += [names[i:i + 2] for i in range(0, paired, 2)]
        names = names[paired:]
    return names, packs  # render_experiments checks them


def check_packs(names: list[str], packs: list[list[str]]) -> None:
    """An experiment goes into one kernel per push: alone or in one pack."""
    seen = set(names)
    for group in packs:
        twice = seen.intersection(group)
        if twice:
            raise RenderError(f"{', '.join(sorted(twice))}: named twice (alone or in another pack); "
                              "an experiment goes into one kernel at a time")
        seen.update(group)


def render_experiments(ws: Workspace, names: list[str], owner: str | None = None,
                       packs: list[list[str]] = ()) -> list[Path]:
    """Render every named experiment into build/NAME/ and each pack of names into build/pack_<a>_<b>/,
    all or nothing: on any error no folder changes. Folders come in that order, singles first."""
    check_packs(names, list(packs))
    store = ws.store()
    groups = [store.load_many(g) for g in packs]
    return render_settings(ws, store.load_many(names) + [pack_settings(g) for g in groups], owner,
                           packs=[()] * len(names) + [tuple(g) for g in groups])


def render_packs(ws: Workspace, groups: list[list[Settings]], owner: str | None = None) -> list[Path]:
    """Render each group of experiments as one packed kernel, build/pack_<a>_<b>/, all or nothing."""
    return render_settings(ws, [pack_settings(g) for g in groups], owner, packs=[tuple(g) for g in groups])


def render_settings(ws: Workspace, settings: list[Settings], owner: str | None = None, quick: bool = False,
                    packs: list[tuple[Settings, ...]] | None = None) -> list[Path]:
    """Render resolved settings into build/NAME/ (build/NAME.quick/ for a run with overrides), all or nothing.
    `packs[i]`, when given, lists the members that settings[i] (from `pack_settings`) packs."""
    packs = packs or [()] * len(settings)
    owner = owner or default_owner()
    env = _environment(ws)
    ws.build.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".render-", dir=ws.build))
    try:
        for s, pack in zip(settings, packs):
            try:
                render_into(staging / s.name, s, env, owner, pack)
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

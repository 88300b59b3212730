"""The workspace: the folder holding experiments/, models/, templates/, results/ and build/."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import WorkspaceError
from .experiments.store import ExperimentStore

PACKAGE_TEMPLATES = Path(__file__).parent / "templates"  # the package's templates; a workspace's own override them
LINKED_SUFFIX = ".pt"  # what keep_copy links rather than copies: checkpoints (contract.save_checkpoint)
PREVIOUS_DIR = ".previous"  # results/.previous/EXP-<time>/: runs moved aside, never deleted


@dataclass(frozen=True)
class Workspace:
    root: Path
    # Experiments made on the command line (`--set`) or by a search: name -> overrides of its file
    points: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, hash=False, compare=False)

    def with_points(self, points: Mapping[str, Mapping[str, Any]]) -> Workspace:
        """This workspace knowing the experiments `points` too (name -> overrides of its file)."""
        return dataclasses.replace(self, points={**self.points, **points})

    @property
    def experiments(self) -> Path:
        return self.root / "experiments"

    @property
    def templates(self) -> Path:
        """A workspace's own templates override the package's, file by file."""
        return self.root / "templates"

    @property
    def models(self) -> Path:
        """A workspace's own models, models/NAME.py, each defining build(in_channels, image_size, num_classes, **args)."""
        return self.root / "models"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def build(self) -> Path:
        return self.root / "build"

    @property
    def data(self) -> Path:
        """Local data sets (cifar-10-batches-py/, MNIST IDX files) for local runs and the emulator."""
        return Path(os.environ.get("KAGGLERUN_DATA", self.root / "data"))

    def result_dir(self, name: str) -> Path:
        return self.results / name

    def build_dir(self, name: str) -> Path:
        return self.build / name

    def store(self) -> ExperimentStore:
        return ExperimentStore(self.experiments, self.models, self.points)

    def previous_path(self, name: str, suffix: str = "") -> Path:
        """A new, unused path results/.previous/NAME-<UTC time>[-suffix] (its folder made)."""
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        folder = real_folder(self.results / PREVIOUS_DIR)
        folder.mkdir(parents=True, exist_ok=True)
        base = f"{name}-{stamp}" + (f"-{suffix}" if suffix else "")
        target, n = folder / base, 1
        while target.exists():
            n += 1
            target = folder / f"{base}-{n}"
        return target

    def move_aside(self, name: str, suffix: str = "") -> Path | None:
        """Move results/NAME to results/.previous/NAME-<UTC time>[-suffix]; None when there is none."""
        current = real_folder(self.result_dir(name))
        if not current.exists():
            return None
        target = self.previous_path(name, suffix)
        os.replace(current, target)
        return target

    def keep_copy(self, name: str) -> Path:
        """results/NAME as it is now, copied into results/.previous/NAME-<time>/ (checkpoints hard-linked)."""
        target = self.previous_path(name)
        link_tree(self.result_dir(name), target)
        return target


def _link_or_copy(src: str, dst: str) -> None:
    """Checkpoints, the large files, are hard-linked: the core only ever replaces them (write, then rename),
    so a link never sees a change. Everything else is copied: a notebook writes some files in place."""
    if src.endswith(LINKED_SUFFIX):
        try:
            os.link(src, dst)
            return
        except OSError:
            pass
    shutil.copy2(src, dst)


def link_tree(src: Path, dst: Path) -> None:
    """Copy the folder `src` to the new `dst` (checkpoints hard-linked) whole or not at all: built beside
    it, then renamed."""
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}.copy-", dir=dst.parent))
    try:
        shutil.copytree(src, staging / "x", symlinks=True, copy_function=_link_or_copy)
        os.replace(staging / "x", dst)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def real_folder(path: Path) -> Path:
    """`path`, checked to be a folder (or nothing yet) and not a symlink: kagglerun moves, replaces and
    deletes inside results/EXP and build/EXP, which must not reach through a link or clobber a file."""
    if path.is_symlink():
        raise WorkspaceError(f"{path} is a symlink (to {os.readlink(path)}), not a folder: kagglerun writes runs "
                             "only into real folders; move it aside")
    if path.exists() and not path.is_dir():
        raise WorkspaceError(f"{path} is a file, not a folder: move it aside")
    return path


def find_workspace(start: Path | None = None) -> Workspace:
    """The nearest folder at or above `start` (default: $KAGGLERUN_WORKSPACE or the current folder)
    that holds an `experiments/` folder."""
    if start is None and os.environ.get("KAGGLERUN_WORKSPACE"):
        start = Path(os.environ["KAGGLERUN_WORKSPACE"])
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "experiments").is_dir():
            return Workspace(folder)
    raise WorkspaceError(f"no experiments/ folder in {here} or above it: run kagglerun inside a workspace")

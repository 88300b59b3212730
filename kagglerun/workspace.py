"""The workspace: the folder holding experiments/, templates/, results/ and build/."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import WorkspaceError
from .experiments.store import ExperimentStore

PACKAGE_TEMPLATES = Path(__file__).parent / "templates"  # the package's templates; a workspace's own override them


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
        return ExperimentStore(self.experiments, self.points)


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

"""The `[search]` table of an experiment file, validated:

    [search]
    trials = 6
    gpu_hours = 2.0
    metric = "val_acc"      # or "test_acc"
    rungs = [2, 8]          # epochs of each rung; the last is the full run
    keep = 0.5              # fraction of a rung's trials continued to the next
    max_running = 2         # sessions at once (Kaggle allows two GPU sessions)
    seed = 0                # of Optuna's sampler
    [search.space]
    "training.lr" = { log = [1e-4, 1e-1] }
    "training.weight_decay" = { uniform = [0.0, 0.01] }
    "model.width" = { choice = [0.25, 0.5] }
    "training.batch_size" = { int = [32, 128] }
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import ExperimentError

KINDS = ("log", "uniform", "int", "choice")


class Param(BaseModel):
    """One searched key: exactly one of a log-uniform or uniform range, an integer range, or choices."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    log: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None
    int_: tuple[int, int] | None = Field(None, alias="int")
    choice: tuple[Any, ...] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Param:
        given = [k for k in KINDS if self.range(k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(KINDS)}")
        kind = given[0]
        bounds = self.range(kind)
        assert bounds is not None
        if kind == "choice":
            if not bounds:
                raise ValueError("choice: empty list")
        elif not bounds[0] < bounds[1]:
            raise ValueError(f"{kind}: the low end must be below the high end")
        elif kind == "log" and bounds[0] <= 0:
            raise ValueError("log: the range must be positive")
        return self

    def range(self, kind: str) -> tuple | None:
        return self.int_ if kind == "int" else getattr(self, kind)

    @property
    def kind(self) -> str:
        return next(k for k in KINDS if self.range(k) is not None)


class SearchSpec(BaseModel):
    """The `[search]` table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trials: int = Field(ge=1, le=1000)
    gpu_hours: float = Field(gt=0.0)
    metric: Literal["val_acc", "test_acc"] = "val_acc"
    rungs: tuple[int, ...] = Field(min_length=1)
    keep: float = Field(0.5, gt=0.0, le=1.0)
    max_running: int = Field(2, ge=1)
    seed: int = Field(0, ge=0)
    space: dict[str, Param] = Field(min_length=1)

    @model_validator(mode="after")
    def _rungs_grow(self) -> SearchSpec:
        if any(r < 1 for r in self.rungs) or list(self.rungs) != sorted(set(self.rungs)):
            raise ValueError("rungs: epochs must be positive and increasing, e.g. [2, 8]")
        return self


def parse_spec(table: Any, source: str) -> SearchSpec:
    """The validated table; an error is one line naming the file and the key."""
    try:
        return SearchSpec.model_validate(table)
    except ValidationError as e:
        err = e.errors()[0]
        loc = [str(p) for p in err["loc"] if not str(p).startswith("function-after")]
        key = ".".join(["search", *loc])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        if err["type"] == "missing":
            msg = "required key is missing"
        raise ExperimentError(f"{source}: {key}: {msg}") from None

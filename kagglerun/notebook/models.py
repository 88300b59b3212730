"""The workspace models a notebook carries, each checked before anything is rendered or pushed: render
builds the network once on the CPU and runs a dummy batch of two images through it, so that a missing
file, a file without `build`, a `build` that raises or returns no module, or a wrong output shape is one
line naming the file, here and not on Kaggle. torchvision models are checked the same way."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import ExperimentError
from ..experiments import Settings
from ..experiments.models import ModelRef
from ..experiments.store import ExperimentStore

STAND_IN_SHAPE = (3, 32, 10)  # where only the data's files can tell (imagefolder, csv)


def dummy_shape(s: Settings) -> tuple[int, int, int]:
    """(channels, image size, classes) the check builds the model for: the data set's (resized to
    `data.image_size`), or a plausible stand-in where only its files can tell; the run itself builds the
    model for the real data again, with the same checks, before training."""
    from ..core.data import expected_shape

    shape = expected_shape(s.as_dict())
    if shape is not None:
        return shape
    c, size, k = STAND_IN_SHAPE
    if s.data.image_shape:  # a pixel table's [C, H, W]
        c, size = s.data.image_shape[0], s.data.image_shape[-1]
    return c, s.data.image_size or size, k


def load_model_file(path: Path) -> ModuleType:
    """Import a workspace model file (under a private name, so it shadows nothing)."""
    if not path.is_file():
        raise ExperimentError(f"{path}: model file is missing")
    name = f"_kagglerun_workspace_model_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        raise ExperimentError(f"{path}: cannot be imported: {type(e).__name__}: {e}") from None
    finally:
        sys.modules.pop(name, None)
    return module


class ModelChecker:
    """Checks each (model, arguments, input shape) once per render."""

    def __init__(self, store: ExperimentStore):
        self.store = store
        self.checked: set[str] = set()

    def check(self, s: Settings) -> ModelRef:
        """The model `s` names, built once on the CPU and run on a dummy batch; any problem is one line."""
        ref = self.store.model(s)
        if ref.kind == "builtin":
            return ref
        c, size, k = dummy_shape(s)
        key = json.dumps([ref.name, ref.source_hash, s.model.args, c, size, k], sort_keys=True, default=str)
        if key in self.checked:
            return ref
        from ..core.models import ModelError, build_model, check_output

        model: dict[str, Any] = {**s.as_dict()["model"], "pretrained": False}  # weights are the kernel's to find
        try:
            if ref.kind == "workspace":
                assert ref.path is not None
                build_model(model, c, size, k, module=load_model_file(ref.path), where=str(ref.path))
            else:
                check_output(build_model(model, c, size, k), ref.name, c, size, k)
        except ModelError as e:
            raise ExperimentError(f"{e} (experiment {s.name}, {self.store.path(s.name)})") from None
        self.checked.add(key)
        return ref

    def sources(self, experiments: list[Settings]) -> dict[str, str]:
        """{name: source} of the workspace models these experiments train, each checked."""
        found: dict[str, str] = {}
        for s in experiments:
            ref = self.check(s)
            if ref.kind == "workspace":
                found[ref.name] = ref.source
        return found

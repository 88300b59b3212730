"""How much GPU time a run will take, for `push`'s quota line and a search's budget.

Per epoch: the time measured by an earlier run of the same model on the same data (any experiment's
results/EXP/summary.json; runs on a CPU count only for experiments that ask for no GPU), else the model's
cost: the floating-point operations of one forward pass (torch.utils.flop_counter on one batch, on the
CPU), three times that for training, over the training and test images, at an assumed sustained T4
throughput. Plus a session's start-up. A pack's members run side by side: the pack takes its longest.
"""

from __future__ import annotations

import functools
import json
import statistics
from pathlib import Path
from typing import Any

from ..core.contract import SETTINGS_FILE, SUMMARY_FILE
from ..experiments import Settings
from ..experiments.models import ModelRef
from ..workspace import Workspace

STARTUP_SECONDS = 90.0  # a Kaggle session's start: container, imports, the data set loaded onto the GPU
T4_FLOPS = 6e12  # assumed sustained mixed-precision throughput of one T4 on these small convolutions (fp16 peak: 65 TFLOP/s)
TRAIN_FACTOR = 3.0  # a training step (forward and backward) costs about three forward passes
EPOCH_OVERHEAD_SECONDS = 0.5  # per epoch: augmentation, evaluation set-up, writing the outputs
# (train, test) images of each data set; digits: scikit-learn's 1,797 split 80/20. Files of one's own
# (imagefolder, csv), unknown until read, are assumed CIFAR-sized: 50,000 and 10,000 images, 3 x 32 x 32.
DATASET_SIZES = {"cifar10": (50_000, 10_000), "cifar100": (50_000, 10_000), "mnist": (60_000, 10_000),
                 "fashion_mnist": (60_000, 10_000), "kmnist": (60_000, 10_000), "svhn": (73_257, 26_032),
                 "digits": (1_442, 355)}
UNKNOWN_SIZE = (50_000, 10_000)
UNKNOWN_SHAPE = (3, 32, 10)


def _images(s: Settings) -> tuple[int, int]:
    """(images trained on, images evaluated) per epoch: a validation split is taken from the training images."""
    d = s.data
    train, test = (d.synthetic_train, d.synthetic_test) if d.dataset == "synthetic" else \
        DATASET_SIZES.get(d.dataset, UNKNOWN_SIZE)
    train, test = min(train, d.train_limit or train), min(test, d.test_limit or test)
    val = int(train * getattr(d, "val_split", 0.0))
    return train - val, test + val


def _shape(s: Settings) -> tuple[int, int, int]:
    from ..core.data import expected_shape

    return expected_shape(s.as_dict()) or UNKNOWN_SHAPE


def _cost_key(settings: dict[str, Any]) -> str:
    """What makes two runs' epochs take the same time: the model, the data and the batch size."""
    d, t = settings.get("data", {}), settings.get("training", {})
    return json.dumps([settings.get("engine"), settings.get("model"), d.get("dataset"), d.get("path"),
                       d.get("synthetic_like"), d.get("synthetic_train"), d.get("train_limit"), d.get("test_limit"),
                       d.get("image_size"), d.get("val_split"), t.get("batch_size")], sort_keys=True)


def measured_epoch_seconds(results: Path, s: Settings) -> float | None:
    """The median seconds per epoch of earlier runs of the same model on the same data, if any."""
    key = _cost_key(s.as_dict())
    times = []
    for summary_path in Path(results).glob(f"*/{SUMMARY_FILE}"):
        try:
            summary = json.loads(summary_path.read_text())
            settings = json.loads((summary_path.parent / SETTINGS_FILE).read_text())
            per_epoch = float(summary["total_seconds"]) / int(summary["epochs_done"])
        except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError):
            continue
        on_cpu = str(summary.get("device") or "").startswith("cpu")
        if _cost_key(settings) == key and per_epoch > 0 and (not on_cpu or not s.kaggle.gpu):
            times.append(per_epoch)
    return statistics.median(times) if times else None


@functools.lru_cache(maxsize=64)
def _forward_flops(model_json: str, channels: int, size: int, classes: int, batch: int, model_file: str = "",
                   model_hash: str = "") -> float:
    """FLOPs of one forward pass of `batch` images (the scratch engine trains the same networks); `model_file`:
    the workspace model's file (`model_hash`, its content's hash, keeps the cache honest when it is edited)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from ..core.models import build_model
    from ..notebook.models import load_model_file

    model_settings = {**json.loads(model_json), "pretrained": False}  # the cost is the same without weights
    module = load_model_file(Path(model_file)) if model_file else None
    model = build_model(model_settings, channels, size, classes, module=module)
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(batch, channels, size, size))
    return float(counter.get_total_flops())


def flop_epoch_seconds(s: Settings, model: ModelRef | None = None) -> float:
    """Seconds per epoch from the model's cost at the assumed T4 throughput (`model`: what its name resolved
    to in the workspace, for a workspace model)."""
    channels, size, classes = _shape(s)
    path = model.path if model is not None and model.kind == "workspace" and model.path else None
    per_image = _forward_flops(json.dumps(s.as_dict()["model"], sort_keys=True), channels, size, classes, 2,
                               str(path or ""), model.source_hash if path and model else "") / 2
    train, evaluated = _images(s)
    return (TRAIN_FACTOR * train + evaluated) * per_image / T4_FLOPS + EPOCH_OVERHEAD_SECONDS


def epoch_seconds(ws: Workspace, s: Settings) -> float:
    measured = measured_epoch_seconds(ws.results, s)
    return measured if measured is not None else flop_epoch_seconds(s, ws.store().model(s))


def run_seconds(ws: Workspace, s: Settings, epochs: int | None = None) -> float:
    """A session that trains `epochs` (default: all of the experiment's) epochs, start-up included."""
    return STARTUP_SECONDS + epoch_seconds(ws, s) * (s.training.epochs if epochs is None else epochs)

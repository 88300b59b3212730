"""Per-class results: at a run's end, the best checkpoint evaluated on the test set as a confusion matrix and
per-class accuracy, written into the output contract as confusion.json (see contract.py).

Part of the training core: standard library and torch only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from .contract import CHECKPOINT_BEST, CONFUSION_FILE, atomic_write_json, load_checkpoint
from .engine import Data, Engine

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def class_names(data: Data) -> list[str]:
    """The data set's class names: its own where it carries them, CIFAR-10's, digits for MNIST and the
    digits set, else "class 0", "class 1", …"""
    own = getattr(data, "class_names", None)
    if own and len(own) == data.num_classes:
        return [str(c) for c in own]
    if data.name == "cifar10" and data.num_classes == len(CIFAR10_CLASSES):
        return list(CIFAR10_CLASSES)
    if data.name in ("mnist", "digits"):
        return [str(i) for i in range(data.num_classes)]
    return [f"class {i}" for i in range(data.num_classes)]


def confusion_matrix(labels: torch.Tensor, predicted: torch.Tensor, num_classes: int) -> list[list[int]]:
    """Counts: rows the true class, columns the predicted one."""
    flat = labels.long().cpu() * num_classes + predicted.long().cpu()
    counts = torch.bincount(flat, minlength=num_classes * num_classes)[: num_classes * num_classes]
    return counts.view(num_classes, num_classes).tolist()


def per_class(matrix: list[list[int]]) -> list[float | None]:
    """Each class's accuracy in %: its diagonal count over its row (None for a class absent from the test set)."""
    return [100.0 * row[i] / sum(row) if sum(row) else None for i, row in enumerate(matrix)]


def write_confusion(out: Path, engine: Engine, data: Data) -> dict[str, Any] | None:
    """Evaluate the best checkpoint's weights on the test set and write confusion.json; None (and nothing
    written) when there is no best checkpoint yet, or for an engine that cannot predict (a registered engine
    written before per-class results, a test double). The engine's weights are left as the checkpoint's."""
    path = out / CHECKPOINT_BEST
    if not path.is_file() or not (hasattr(engine, "predict") and hasattr(engine, "load_weights")):
        return None
    best = load_checkpoint(path)
    engine.load_weights(best["weights"])
    predicted = engine.predict()
    matrix = confusion_matrix(data.test_y, predicted, data.num_classes)
    total = sum(map(sum, matrix))
    result = {
        "epoch": best["epoch"], "split": "test", "classes": class_names(data), "matrix": matrix,
        "per_class_acc": per_class(matrix),
        "accuracy": 100.0 * sum(matrix[i][i] for i in range(len(matrix))) / total if total else None,
    }
    atomic_write_json(out / CONFUSION_FILE, result)
    return result

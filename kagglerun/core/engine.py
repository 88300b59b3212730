"""The engine interface: what the epoch loop in `train.py` asks of a training backend (torch or scratch).

Part of the training core: standard library and torch only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass
class Data:
    """A data set held as uint8 images, ready for device-side batching.

    train_x, test_x: uint8 tensors [N, C, H, W] (CPU); train_y, test_y: int64 tensors [N].
    mean, std: per-channel normalisation applied after augmentation, on images scaled to [0, 1].
    val_x, val_y: the validation set held out of train (data.val_split), or None.
    class_names: one name per class, as the data set calls them.
    """

    name: str
    train_x: Any
    train_y: Any
    test_x: Any
    test_y: Any
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    val_x: Any = None
    val_y: Any = None
    class_names: tuple[str, ...] = ()

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])

    @property
    def size(self) -> int:
        return int(self.train_x.shape[-1])


class Engine(Protocol):
    """A training backend. Epochs are 1-based; shuffling and augmentation of epoch e are drawn from a
    generator seeded with (settings seed, e), so a resumed run sees exactly the batches it would have seen."""

    name: str  # "torch" or "scratch"
    device: str  # human-readable, e.g. "cuda (Tesla T4)" or "cpu"
    precision: str  # "fp32", "fp16" or "bf16"

    def param_count(self) -> int: ...

    def train_epoch(self, epoch: int, progress: Callable[[int, int], None] | None = None) -> tuple[float, float]:
        """Train one epoch; return (mean per-sample loss, accuracy in %). `progress(done, total)` per batch."""
        ...

    def evaluate(self, split: str = "test") -> tuple[float, float]:
        """The test (or "val") set in eval mode: (mean per-sample plain cross-entropy, accuracy in %)."""
        ...

    def current_lr(self) -> float:
        """The learning rate the next optimizer step uses."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: weights, optimizer, schedule, scaler, RNG (picklable by torch.save)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def weights(self) -> dict[str, Any]:
        """The model weights alone (for the best checkpoint)."""
        ...


ENGINES: dict[str, Callable[[dict[str, Any], Data], Engine]] = {}


def register_engine(name: str):
    """Class decorator: make an engine available under `engine = "<name>"` in experiment files."""

    def add(cls):
        ENGINES[name] = cls
        return cls

    return add


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch `epoch`'s shuffling and augmentation generator."""
    return (seed * 1_000_003 + epoch) % (2**63 - 1)

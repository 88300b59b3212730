"""The scratch engine: trains an experiment with this package's autograd, behind the torch core's Engine interface.

Batches are drawn exactly as the torch engine draws them on the CPU (same permutation, same augmentation
from a generator seeded by `epoch_seed`), then handed over as channels-last float32 arrays.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from ..core.augment import augment_batch
from ..core.engine import Data, epoch_seed, register_engine
from .core import ScratchConfig, eval_mode, no_grad, use_cupy
from .functions import softmax_cross_entropy
from .models import build_model, param_count
from .optimizers import SGD, Adam

SCRATCH_EVAL_BATCH = 256  # evaluation batch floor: larger ones only cost host memory in NumPy


def unsupported(settings: dict[str, Any]) -> str | None:
    """One line naming the first setting this engine cannot honour (the torch engine can), or None."""
    t = settings["training"]
    lacking = {"optimizer": t["optimizer"] == "adamw", "nesterov": t.get("nesterov", False),
               "lr_schedule": t["lr_schedule"] == "onecycle", "warmup_epochs": bool(t.get("warmup_epochs")),
               "label_smoothing": bool(t.get("label_smoothing")), "grad_clip_norm": t.get("grad_clip_norm") is not None}
    for key, used in lacking.items():
        if used:
            return f"training.{key}: {t[key]!r} is not available with engine = 'scratch' (use engine = 'torch')"
    return None


def lr_at(t: dict[str, Any], done: int) -> float:
    """The learning rate after `done` finished epochs, as torch's CosineAnnealingLR / StepLR give it."""
    if t["lr_schedule"] == "cosine":
        return t["lr"] * 0.5 * (1 + math.cos(math.pi * done / t["epochs"]))
    if t["lr_schedule"] == "step":
        return t["lr"] * t["gamma"] ** (done // t["step_size"])
    return t["lr"]


@register_engine("scratch")
class ScratchEngine:
    """Trains one experiment with the from-scratch framework: NumPy on the CPU, CuPy on a GPU when installed."""

    name = "scratch"
    precision = "fp32"

    def __init__(self, settings: dict[str, Any], data: Data):
        t = settings["training"]
        refused = unsupported(settings)
        if refused:
            raise ValueError(refused)
        self.t, self.data_settings = t, settings["data"]
        on_gpu = use_cupy(t["device"] != "cpu")
        if t["device"] == "cuda" and not on_gpu:
            raise RuntimeError("training.device: 'cuda' asked for, but CuPy or a CUDA device is missing")
        self.xp = ScratchConfig.xp
        self.device = "cuda (cupy)" if on_gpu else "cpu (numpy)"
        ScratchConfig.rng = np.random.default_rng(t["seed"])  # the initial weights
        self.model = build_model(settings["model"], data.channels, data.size, data.num_classes)
        self.params = param_count(self.model)
        self.opt: Adam | SGD
        if t["optimizer"] == "adam":
            self.opt = Adam(self.model.parameters(), lr=t["lr"], betas=tuple(t["betas"]), weight_decay=t["weight_decay"])
        else:
            self.opt = SGD(self.model.parameters(), lr=t["lr"], momentum=t["momentum"], weight_decay=t["weight_decay"])
        self.train_x, self.train_y = data.train_x, data.train_y
        self.test_x, self.test_y = data.test_x, data.test_y
        self.val_x, self.val_y = data.val_x, data.val_y
        self.mean = torch.tensor(data.mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(data.std, dtype=torch.float32).view(1, -1, 1, 1)

    def param_count(self) -> int:
        return self.params

    def _batch(self, x_uint8, g: torch.Generator | None):
        """uint8 [B, C, H, W] -> normalised float32 [B, H, W, C] on the engine's device."""
        x = x_uint8.float().div_(255)
        if g is not None:
            x = augment_batch(x, g, self.data_settings)
        x = ((x - self.mean) / self.std).permute(0, 2, 3, 1).contiguous()
        return self.xp.asarray(x.numpy())

    def train_epoch(self, epoch: int, progress: Callable[[int, int], None] | None = None) -> tuple[float, float]:
        g = torch.Generator().manual_seed(epoch_seed(self.t["seed"], epoch))
        # Dropout masks of epoch e come from their own generator, so a run resumed at e draws the same ones.
        ScratchConfig.rng = np.random.default_rng(epoch_seed(self.t["seed"], epoch))
        self.opt.lr = lr_at(self.t, epoch - 1)
        n = int(self.train_x.shape[0])
        bs = self.t["batch_size"]
        order = torch.randperm(n, generator=g)
        steps = math.ceil(n / bs)
        loss_sum, correct = 0.0, 0
        for step in range(steps):
            idx = order[step * bs : (step + 1) * bs]
            x = self._batch(self.train_x[idx], g)
            y = self.xp.asarray(self.train_y[idx].numpy())
            logits = self.model(x)
            loss = softmax_cross_entropy(logits, y)
            self.model.cleargrads()
            loss.backward()
            self.opt.step()
            loss_sum += float(loss.data) * len(y)
            correct += int((logits.data.argmax(axis=1) == y).sum())
            del logits, loss  # free this step's graph before the next one is built
            if progress is not None:
                progress(step + 1, steps)
        self.opt.lr = lr_at(self.t, epoch)  # what the next epoch uses, as torch's scheduler reports it
        return loss_sum / n, 100.0 * correct / n

    def evaluate(self, split: str = "test") -> tuple[float, float]:
        images, labels = (self.val_x, self.val_y) if split == "val" else (self.test_x, self.test_y)
        if images is None or labels is None:
            raise RuntimeError(f"no {split} set (data.val_split is not set)")
        n = int(images.shape[0])
        bs = max(self.t["batch_size"], SCRATCH_EVAL_BATCH)
        loss_sum, correct = 0.0, 0
        with no_grad(), eval_mode():
            for start in range(0, n, bs):
                x = self._batch(images[start : start + bs], None)
                y = self.xp.asarray(labels[start : start + bs].numpy())
                logits = self.model(x)
                loss_sum += float(softmax_cross_entropy(logits, y).data) * len(y)
                correct += int((logits.data.argmax(axis=1) == y).sum())
        return loss_sum / n, 100.0 * correct / n

    def current_lr(self) -> float:
        return float(self.opt.lr)

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "rng": ScratchConfig.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        ScratchConfig.rng.bit_generator.state = state["rng"]

    def weights(self) -> dict[str, Any]:
        return self.model.state_dict()

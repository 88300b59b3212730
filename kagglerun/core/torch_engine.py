"""The PyTorch engine: data held on the device, batched augmentation there, mixed precision, no host sync
inside a step. Part of the training core: torch only."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from .augment import augment_batch, augments
from .engine import Data, epoch_seed, register_engine
from .models import build_model, count_params

_EPOCH_CHUNK_CPU = 2048  # images augmented per call on a CPU (augment_batch works through them in slices)
_EPOCH_CHUNK_GPU = 8192  # and on a GPU, in one piece (CIFAR-10: about 480 MB of scratch memory, kept)


def pick_device(wanted: str) -> torch.device:
    if wanted == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("training.device: 'cuda' asked for, but no CUDA device is available")
    if wanted == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda")


def pick_precision(wanted: str, device: torch.device) -> str:
    """fp16 with a gradient scaler on pre-Ampere GPUs (a T4), bf16 on Ampere and later, fp32 on the CPU."""
    if device.type != "cuda":
        return "fp32"  # CPU autocast is slower than fp32 for these convolutions
    if wanted != "auto":
        return wanted
    return "bf16" if torch.cuda.get_device_capability(device)[0] >= 8 else "fp16"


def make_optimizer(params: Any, t: dict[str, Any], extra: dict[str, Any] | None = None) -> torch.optim.Optimizer:
    """training.optimizer as torch builds it: Adam, AdamW (decoupled weight decay) or SGD (with nesterov)."""
    extra = extra or {}
    if t["optimizer"] in ("adam", "adamw"):
        cls = torch.optim.AdamW if t["optimizer"] == "adamw" else torch.optim.Adam
        return cls(params, lr=t["lr"], betas=tuple(t["betas"]), weight_decay=t["weight_decay"], **extra)
    return torch.optim.SGD(params, lr=t["lr"], momentum=t["momentum"], weight_decay=t["weight_decay"],
                           nesterov=t.get("nesterov", False), **extra)


def make_schedule(opt: torch.optim.Optimizer, t: dict[str, Any],
                  steps_per_epoch: int) -> tuple[torch.optim.lr_scheduler.LRScheduler | None, bool]:
    """training.lr_schedule as a torch scheduler, and whether it steps after every batch (else every epoch).

    cosine: CosineAnnealingLR(T_max=epochs) per epoch, as the seed; with warmup_epochs, per step, a linear
    warmup from lr / warmup steps to lr, then a cosine to 0 at the last step. onecycle: OneCycleLR per step
    with max_lr = lr, its rising phase warmup_epochs long (else torch's 30 %). step: StepLR per epoch."""
    schedule, epochs = t["lr_schedule"], t["epochs"]
    warm = round(t.get("warmup_epochs", 0.0) * steps_per_epoch)
    total = epochs * steps_per_epoch
    if schedule == "cosine" and warm:
        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return 0.5 * (1 + math.cos(math.pi * min(step - warm, total - warm) / (total - warm)))

        return torch.optim.lr_scheduler.LambdaLR(opt, factor), True
    if schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs), False
    if schedule == "onecycle":
        pct = t["warmup_epochs"] / epochs if t.get("warmup_epochs") else 0.3
        cycle_momentum = t["optimizer"] != "sgd" or t["momentum"] > 0
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=t["lr"], total_steps=total, pct_start=pct,
                                                   cycle_momentum=cycle_momentum), True
    if schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=t["step_size"], gamma=t["gamma"]), False
    return None, False


@register_engine("torch")
class TorchEngine:
    """Trains one experiment with PyTorch on one device."""

    name = "torch"

    def __init__(self, settings: dict[str, Any], data: Data):
        t = settings["training"]
        self.settings, self.data_settings, self.t = settings, settings["data"], t
        dev = pick_device(t["device"])
        self.dev = dev
        self.device = f"cuda ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else "cpu"
        self.precision = pick_precision(t["precision"], dev)
        torch.manual_seed(t["seed"])
        if dev.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
        self.memory_format = torch.channels_last if (t["channels_last"] and dev.type == "cuda") else torch.contiguous_format
        self.model = build_model(settings["model"], data.channels, data.size, data.num_classes)
        self.model = self.model.to(device=dev, memory_format=self.memory_format)  # type: ignore[call-overload]
        self.params = count_params(self.model)
        self.forward = torch.compile(self.model) if t["compile"] else self.model
        # The whole data set lives on the device as uint8 (CIFAR-10: 150 MB); batches are sliced there.
        self.train_x, self.train_y = data.train_x.to(dev), data.train_y.to(dev)
        self.test_x, self.test_y = data.test_x.to(dev), data.test_y.to(dev)
        self.mean, self.std = data.mean, data.std
        # (x / 255 - mean) / std as one multiply-add; made once here, since copying constants to a GPU in
        # every step would make the host wait for it
        self.norm_scale = torch.tensor([1 / s for s in data.std], device=dev).view(1, -1, 1, 1)
        self.norm_shift = torch.tensor([-m / s for m, s in zip(data.mean, data.std, strict=True)], device=dev).view(1, -1, 1, 1)
        self.norm_scale_u8 = self.norm_scale / 255
        self.augments = augments(self.data_settings)
        self.epoch_x: torch.Tensor | None = None  # the augmented epoch (_augmented_epoch), allocated once
        # fused: one kernel for all parameters, and with fp16 the gradient scaler hands it the inf check as
        # a tensor instead of reading it on the host every step
        fused = {"fused": True} if dev.type == "cuda" else {}
        self.val_x = data.val_x.to(dev) if data.val_x is not None else None
        self.val_y = data.val_y.to(dev) if data.val_y is not None else None
        self.steps_per_epoch = math.ceil(self.train_x.shape[0] / t["batch_size"])
        self.opt = make_optimizer(self.model.parameters(), t, fused)
        self.sched, self.sched_per_step = make_schedule(self.opt, t, self.steps_per_epoch)
        self.label_smoothing = float(t.get("label_smoothing", 0.0))
        self.grad_clip_norm = t.get("grad_clip_norm")
        self.amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16")

    def param_count(self) -> int:
        return self.params

    def _batch(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """A normalised float batch from uint8 images."""
        x = x_uint8.float().mul_(self.norm_scale_u8)
        return x.add_(self.norm_shift).contiguous(memory_format=self.memory_format)

    def _augmented_epoch(self, order: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """The epoch's training images in `order`, augmented and normalised before its first step, into one
        float buffer on the device (CIFAR-10: 614 MB): a step then only slices it. Augmenting the whole epoch
        at once turns some hundred small operations per step into as many per chunk of thousands of images,
        which on a GPU is what keeps the host from falling behind a small model. Every image still gets its
        own random parameters, from the same distributions, drawn from `g` only."""
        n = order.shape[0]
        if self.epoch_x is None:
            self.epoch_x = torch.empty(self.train_x.shape, device=self.dev, dtype=torch.float32)
        chunk = _EPOCH_CHUNK_GPU if self.dev.type == "cuda" else _EPOCH_CHUNK_CPU
        for start in range(0, n, chunk):
            idx = order[start : start + chunk]
            augment_batch(self.train_x.index_select(0, idx), g, self.data_settings,
                          out=self.epoch_x[start : start + idx.shape[0]], normalise=(self.norm_scale, self.norm_shift))
        return self.epoch_x

    def _autocast(self):
        return torch.autocast(self.dev.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None)

    def train_epoch(self, epoch: int, progress: Callable[[int, int], None] | None = None) -> tuple[float, float]:
        self.model.train()
        g = torch.Generator(device=self.dev).manual_seed(epoch_seed(self.t["seed"], epoch))
        n = self.train_x.shape[0]
        bs = self.t["batch_size"]
        order = torch.randperm(n, generator=g, device=self.dev)
        steps = math.ceil(n / bs)
        # Sums stay on the device: reading them every step would synchronise the host with the GPU.
        loss_sum = torch.zeros((), device=self.dev)
        correct = torch.zeros((), device=self.dev, dtype=torch.int64)
        augmented = self._augmented_epoch(order, g) if self.augments else None
        for step in range(steps):
            idx = order[step * bs : (step + 1) * bs]
            if augmented is None:
                x = self._batch(self.train_x.index_select(0, idx))
            else:
                x = augmented[step * bs : (step + 1) * bs].contiguous(memory_format=self.memory_format)
            y = self.train_y.index_select(0, idx)
            with self._autocast():
                logits = self.forward(x)
                loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if self.grad_clip_norm is not None:
                self.scaler.unscale_(self.opt)  # clip the true gradients (a no-op without fp16's scaler)
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip_norm)
            self.scaler.step(self.opt)
            self.scaler.update()
            if self.sched_per_step and self.sched is not None:
                self.sched.step()
            loss_sum += loss.detach().float() * y.shape[0]
            correct += (logits.detach().argmax(1) == y).sum()
            if progress is not None:
                progress(step + 1, steps)
        if self.sched is not None and not self.sched_per_step:
            self.sched.step()
        return float(loss_sum) / n, 100.0 * float(correct) / n

    @torch.no_grad()
    def evaluate(self, split: str = "test") -> tuple[float, float]:
        self.model.eval()
        images, labels = (self.val_x, self.val_y) if split == "val" else (self.test_x, self.test_y)
        if images is None or labels is None:
            raise RuntimeError(f"no {split} set (data.val_split is not set)")
        n = images.shape[0]
        bs = max(self.t["batch_size"], 512)
        loss_sum = torch.zeros((), device=self.dev)
        correct = torch.zeros((), device=self.dev, dtype=torch.int64)
        for start in range(0, n, bs):
            x = self._batch(images[start : start + bs])
            y = labels[start : start + bs]
            with self._autocast():
                logits = self.forward(x)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
        return float(loss_sum) / n, 100.0 * float(correct) / n

    def current_lr(self) -> float:
        return float(self.opt.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict() if self.sched is not None else None,
            "scaler": self.scaler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.dev.type == "cuda" else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        if self.sched is not None and state.get("scheduler") is not None:
            self.sched.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
        if self.dev.type == "cuda" and state.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    def weights(self) -> dict[str, Any]:
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}

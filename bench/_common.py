"""Shared by the bench scripts: settings as an experiment file would resolve them, synthetic data, timing."""

from __future__ import annotations

import os
import platform
import sys
import time
from typing import Any

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from kagglerun.core.data import synthetic  # noqa: E402
from kagglerun.core.engine import Data  # noqa: E402
from kagglerun.experiments import Settings  # noqa: E402


def settings(model: dict[str, Any], data: dict[str, Any] | None = None, **training: Any) -> dict[str, Any]:
    """Validated settings (unknown keys are errors, as in an experiment file), as the notebook gets them."""
    raw = {"name": "bench", "model": model, "data": {"dataset": "synthetic", **(data or {})},
           "training": {"epochs": 1, **training}}
    return Settings.model_validate(raw).as_dict()


def synthetic_data(like: str, n_train: int, n_test: int) -> Data:
    train_x, train_y, test_x, test_y = synthetic(like, n_train, n_test)
    mean = (0.5, 0.5, 0.5) if like == "cifar10" else (0.1307,)
    std = (0.5, 0.5, 0.5) if like == "cifar10" else (0.3081,)
    return Data("synthetic", train_x, train_y, test_x, test_y, 10, mean, std)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def machine(device: str) -> str:
    if device.startswith("cuda"):
        return f"cuda ({torch.cuda.get_device_name()})"
    return f"cpu ({platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads)"

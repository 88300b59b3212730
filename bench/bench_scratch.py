"""Training step time of the scratch engine against torch on the CPU: same C5L3, same batch, same data shape.

Usage: python bench/bench_scratch.py [--runs 5] [--batch 64] [--widths 1.0 0.25]
One step = forward, cross-entropy, backward, Adam update, on CIFAR-shaped synthetic data (3x32x32).
Prints the median, min and max of `--runs` timed steps per engine (after one warm-up step each; the
engines alternate step by step) and the ratio of the medians, scratch / torch.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch

from kagglerun.core.models import build_model
from kagglerun.scratch.functions import softmax_cross_entropy
from kagglerun.scratch.models import build_model as build_scratch_model
from kagglerun.scratch.optimizers import Adam


def model_settings(width: float) -> dict:
    return {"name": "c5l3", "batchnorm": True, "dropout": "linear", "conv_dropout": 0.3, "linear_dropout": 0.5,
            "width": width}


def time_interleaved(steps: dict, runs: int) -> dict[str, list[float]]:
    """Alternate the engines step by step, so both see the same background load on a shared machine."""
    for step in steps.values():
        step()  # warm-up: first-touch allocations, BLAS thread start
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(runs):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return times


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def torch_step_fn(width: float, x: np.ndarray, y: np.ndarray):
    model = build_model(model_settings(width), 3, 32, 10).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-4, weight_decay=1e-6)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        loss = torch.nn.functional.cross_entropy(model(xt), yt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def scratch_step_fn(width: float, x: np.ndarray, y: np.ndarray):
    model = build_scratch_model(model_settings(width), 3, 32, 10)
    opt = Adam(model.parameters(), lr=3e-4, weight_decay=1e-6)
    x_nhwc = np.ascontiguousarray(x.transpose(0, 2, 3, 1))  # the engine's channels-last layout

    def step():
        loss = softmax_cross_entropy(model(x_nhwc), y)
        model.cleargrads()
        loss.backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--widths", type=float, nargs="+", default=[1.0, 0.25])
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((args.batch, 3, 32, 32)).astype(np.float32)
    y = rng.integers(0, 10, args.batch)
    print(f"machine: {cpu_name()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__} ({torch.get_num_threads()} threads), numpy {np.__version__}")
    print(f"C5L3 (BatchNorm, linear dropout), batch {args.batch}, 3x32x32, Adam; {args.runs} timed steps each")
    print(f"{'width':>6} {'engine':>8} {'median s':>9} {'min s':>7} {'max s':>7} {'ratio':>6}")
    for width in args.widths:
        times = time_interleaved({"torch": torch_step_fn(width, x, y), "scratch": scratch_step_fn(width, x, y)},
                                 args.runs)
        medians = {}
        for name in ("torch", "scratch"):
            medians[name] = statistics.median(times[name])
            ratio = f"{medians[name] / medians['torch']:.2f}x"
            print(f"{width:>6} {name:>8} {medians[name]:>9.3f} {min(times[name]):>7.3f} {max(times[name]):>7.3f} "
                  f"{ratio:>6}")


if __name__ == "__main__":
    main()

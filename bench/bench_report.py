"""Time `build_report` on 200 synthetic experiments of 150 epochs (goal: under 5 s on a 2-core machine).

    .venv/bin/python bench/bench_report.py [--runs 5] [--experiments 200] [--epochs 150]

Results: 20 report groups of 10 experiments; in each group one setting has three seeds (pooled into one
column), so there are 200 per-experiment figures, 20 overlays and 20 tables. Each build writes into a fresh
folder; the first, untimed build warms matplotlib's font cache. Prints wall time (median, min, max) and
median CPU time (this process and its workers) per mode: figures drawn in this process (build_report's
default, workers=1) and in a forked pool of one process per CPU (workers=None); the modes alternate run by run.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kagglerun.core.contract import SUMMARY_KEYS, atomic_write_json, write_history  # noqa: E402
from kagglerun.experiments import Settings  # noqa: E402
from kagglerun.report import build_report  # noqa: E402

MODELS = ("c5l3", "vgg16", "resnet18", "resnet50")


def write_results(results: Path, experiments: int, epochs: int) -> None:
    rng = random.Random(0)
    for i in range(experiments):
        group, slot = divmod(i, 10)
        config, seed = (0, slot) if slot < 3 else (slot - 2, 0)  # slots 0-2: one config, three seeds
        settings = Settings.model_validate({
            "name": f"exp_{i:03d}",
            "model": {"name": MODELS[config % 4], "batchnorm": config % 2 == 0},
            "data": {"dataset": "cifar10", "color_jitter": config >= 4},
            "training": {"epochs": epochs, "seed": seed, "lr": 3e-4 * (1 + config % 3)},
            "report": {"group": f"Group {group + 1}", "order": slot},
        }).as_dict()
        ceiling = rng.uniform(80, 93)
        rows = [{"epoch": e, "train_loss": 2 * math.exp(-e / 30) + rng.uniform(0, 0.02),
                 "train_acc": min(99.9, ceiling + 5 - 30 * math.exp(-e / 15)),
                 "test_loss": 0.4 + 1.5 * math.exp(-e / 20) + e / 1000 + rng.uniform(0, 0.02),
                 "test_acc": ceiling - 30 * math.exp(-e / 15) + rng.uniform(-0.5, 0.5),
                 "lr": 3e-4, "seconds": 30.0} for e in range(1, epochs + 1)]
        folder = results / settings["name"]
        write_history(folder / "history.csv", rows)
        atomic_write_json(folder / "settings.json", settings)
        best = max(rows, key=lambda r: r["test_acc"])
        summary = dict.fromkeys(SUMMARY_KEYS)
        summary.update({"experiment": settings["name"], "state": "complete", "epochs_done": epochs,
                        "epochs_total": epochs, "best_test_acc": best["test_acc"], "best_epoch": best["epoch"],
                        "final_test_acc": rows[-1]["test_acc"], "params": 7_280_000,
                        "total_seconds": 30.0 * epochs, "device": "cuda (Tesla T4)"})
        atomic_write_json(folder / "summary.json", summary)


def timed(results: Path, out: Path, workers: int | None) -> tuple[float, float]:
    """Wall seconds, and CPU seconds of this process and its (reaped) worker processes together."""
    before, start = os.times(), time.perf_counter()
    build_report(results, out, workers=workers)
    wall, after = time.perf_counter() - start, os.times()
    cpu = sum(getattr(after, f) - getattr(before, f) for f in ("user", "system", "children_user", "children_system"))
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--experiments", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=150)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        results = Path(tmp) / "results"
        start = time.perf_counter()
        write_results(results, args.experiments, args.epochs)
        print(f"wrote {args.experiments} experiments x {args.epochs} epochs in {time.perf_counter() - start:.1f} s")
        timed(results, Path(tmp) / "warm-up", 1)
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.processor() or platform.platform()}, "
              f"Python {platform.python_version()}")
        print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())} (other work on the machine "
              "inflates wall time; CPU time is steadier)")
        print(f"{'mode':<22}{'runs':>5}{'median s':>10}{'min s':>8}{'max s':>8}{'median CPU s':>14}")
        modes = {"default (workers=1)": 1, f"pool (workers=None: {os.cpu_count()})": None}
        samples: dict[str, list[tuple[float, float]]] = {label: [] for label in modes}
        for i in range(args.runs):  # modes alternate, so a change in the machine's load hits both alike
            for label, workers in modes.items():
                samples[label].append(timed(results, Path(tmp) / f"out-{workers}-{i}", workers))
        medians = {}
        for label, pairs in samples.items():
            walls, cpus = zip(*pairs)
            medians[label] = statistics.median(walls)
            print(f"{label:<22}{args.runs:>5}{medians[label]:>10.2f}{min(walls):>8.2f}{max(walls):>8.2f}"
                  f"{statistics.median(cpus):>14.2f}")
        serial, pool = medians.values()
        print(f"speed-up of the pool (default median / pool median): {serial / pool:.2f}x")
        size = (Path(tmp) / "warm-up" / "report.html").stat().st_size
        print(f"report.html: {size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()

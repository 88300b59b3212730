"""Seconds per epoch of one experiment on one process against `training.devices` processes (data-parallel),
through the real epoch loop (train.run: the output contract after each epoch, as in a notebook), on synthetic
CIFAR-shaped data with the seed's augmentation. The first epoch warms up; the table shows the later ones.

    python bench/bench_devices.py --device cuda                 # every GPU ("all") against one
    python bench/bench_devices.py --device cpu --devices 2      # two gloo processes on the CPU (no speed-up
                                                                # expected where the cores are shared)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from _common import machine, settings

from kagglerun.core import torch_engine  # noqa: F401  (registers the torch engine)
from kagglerun.core.contract import read_history
from kagglerun.core.train import run

MODELS = {"c5l3": {"name": "c5l3", "batchnorm": True, "dropout": "linear"},
          "resnet18": {"name": "resnet18", "batchnorm": True}}


def epoch_seconds(model: str, devices: int | str, args: argparse.Namespace) -> list[float]:
    data = {"synthetic_like": "cifar10", "synthetic_train": args.images, "synthetic_test": args.images // 5}
    s = settings(MODELS[model], data, epochs=args.epochs, batch_size=args.batch, device=args.device,
                 devices=devices, optimizer="adam", weight_decay=1e-6)
    with tempfile.TemporaryDirectory() as out:
        run(s, out, log=lambda _: None)
        return [row["seconds"] for row in read_history(Path(out) / "history.csv")][1:]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--devices", default="all", help='processes against one: a number, or "all" (every GPU)')
    ap.add_argument("--models", default="c5l3,resnet18")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--images", type=int, default=None, help="training images (default: 50,000 cuda, 1,024 cpu)")
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    args.images = args.images or (50_000 if args.device == "cuda" else 1_024)
    devices = args.devices if args.devices == "all" else int(args.devices)
    print(f"# {machine(args.device)}; {args.images:,} images, batch {args.batch}, epochs 2-{args.epochs} timed")
    print(f"| model | 1 process s/epoch | devices = {devices} s/epoch | speed-up |")
    print("|---|---|---|---|")
    for model in args.models.split(","):
        one = statistics.mean(epoch_seconds(model, 1, args))
        many = statistics.mean(epoch_seconds(model, devices, args))
        print(f"| {model} | {one:.2f} | {many:.2f} | {one / many:.2f}x |")


if __name__ == "__main__":
    main()

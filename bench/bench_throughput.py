"""Images per second per epoch through TorchEngine on synthetic CIFAR-shaped data, for C5L3 and ResNet18 at
the seed's batch size and at a large batch; then the projected epoch and run time of every seed experiment
on this device (each measured with its own model at batch 64, the seed's augmentation included).

    python bench/bench_throughput.py                    # CPU: 1 step each, large batch 128, grid at batch 16
    python bench/bench_throughput.py --device cuda      # GPU: 50 steps, large batch 512

A projection is 50,000 (MNIST: 60,000) training images at the measured training rate plus 10,000 test
images at the measured evaluation rate, times the experiment's epochs.
"""

from __future__ import annotations

import argparse

import torch
from _common import machine, settings, synthetic_data, timed

from kagglerun.core.torch_engine import TorchEngine

# (experiment, model settings, data shape, epochs, colour jitter): the seed grid (README.md, "The seed study")
SEED_GRID = [
    ("bsln_1", {"name": "c5l3", "dropout": "all"}, "cifar10", 150, False),
    ("bsln_2", {"name": "c5l3", "dropout": "all"}, "cifar10", 150, False),
    ("bsln_3", {"name": "c5l3", "dropout": "linear", "batchnorm": True}, "cifar10", 150, True),
    ("bsln_4", {"name": "c5l3", "batchnorm": True}, "cifar10", 150, True),
    ("bsln_5", {"name": "c5l3", "dropout": "linear", "batchnorm": True}, "cifar10", 150, False),
    ("bsln_6", {"name": "c5l3", "dropout": "linear", "batchnorm": True}, "cifar10", 256, True),
    ("vgg16", {"name": "vgg16", "batchnorm": True}, "cifar10", 150, True),
    ("res18", {"name": "resnet18", "batchnorm": True}, "cifar10", 150, True),
    ("res50", {"name": "resnet50", "batchnorm": True}, "cifar10", 150, True),
    ("mnist_bsln", {"name": "c5l3", "dropout": "linear", "batchnorm": True}, "mnist", 100, False),
    ("mnist_res18", {"name": "resnet18", "batchnorm": True}, "mnist", 150, False),
]


def measure(model: dict, like: str, batch: int, steps: int, eval_images: int, jitter: bool, device: str,
            compile_: bool) -> tuple[float, float]:
    """(training images/s, evaluation images/s): one warm-up epoch, then one timed epoch of `steps` steps."""
    data_aug = {"synthetic_like": like, "color_jitter": jitter, "translate": 0.0 if like == "mnist" else 0.1}
    s = settings(model, data_aug, batch_size=batch, device=device.split(":")[0], compile=compile_,
                 optimizer="adam", weight_decay=1e-6)
    engine = TorchEngine(s, synthetic_data(like, steps * batch, eval_images))
    engine.train_epoch(1)
    engine.evaluate()
    train = timed(lambda: engine.train_epoch(2), device)
    test = timed(engine.evaluate, device)
    return steps * batch / train, eval_images / test


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--large", type=int, default=None, help="the large batch (default: 512 cuda, 128 cpu)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default: 50 cuda, 1 cpu)")
    ap.add_argument("--grid-batch", type=int, default=None,
                    help="batch for the per-experiment projection (default: 64, the seed's, on cuda; 16 on cpu, where "
                         "images/s hardly depends on the batch and 64 would take minutes)")
    ap.add_argument("--eval-images", type=int, default=None, help="test images timed (default: 10000 cuda, 128 cpu)")
    ap.add_argument("--no-grid", action="store_true", help="skip the per-experiment projection")
    ap.add_argument("--compile", action="store_true", help="torch.compile the models")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    large = args.large or (512 if cuda else 128)
    steps = args.steps or (50 if cuda else 1)
    grid_batch = args.grid_batch or (64 if cuda else 16)
    eval_images = args.eval_images or (10000 if cuda else 128)
    print(f"# bench_throughput: {machine(args.device)}, torch {torch.__version__}, {steps} timed steps per "
          f"measurement after a warm-up epoch, synthetic CIFAR-shaped data, seed augmentation + colour jitter")
    print(f"{'model':<10} {'batch':>6} {'train img/s':>12} {'eval img/s':>11} {'epoch s':>9}")
    for name, model in (("c5l3", {"name": "c5l3", "batchnorm": True}), ("resnet18", {"name": "resnet18", "batchnorm": True})):
        for batch in (64, large):
            tr, ev = measure(model, "cifar10", batch, steps, eval_images, True, args.device, args.compile)
            print(f"{name:<10} {batch:>6} {tr:>12,.0f} {ev:>11,.0f} {50000 / tr + 10000 / ev:>9.1f}")
    if args.no_grid:
        return
    print(f"\nprojected on this device, measured at batch {grid_batch} (the seed's is 64):")
    print(f"{'experiment':<12} {'train img/s':>12} {'epoch s':>9} {'epochs':>7} {'run h':>7}")
    total = 0.0
    cache: dict[str, tuple[float, float]] = {}
    for exp, model, like, epochs, jitter in SEED_GRID:
        key = repr((model, like, jitter))
        if key not in cache:
            cache[key] = measure(dict(model), like, grid_batch, steps, eval_images, jitter, args.device, args.compile)
        tr, ev = cache[key]
        epoch = (60000 if like == "mnist" else 50000) / tr + 10000 / ev
        total += epoch * epochs
        print(f"{exp:<12} {tr:>12,.0f} {epoch:>9.1f} {epochs:>7} {epoch * epochs / 3600:>7.2f}")
    print(f"whole grid, one after another on this device: {total / 3600:.2f} h")


if __name__ == "__main__":
    main()

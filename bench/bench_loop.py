"""Training-loop overhead: TorchEngine.train_epoch's step time against a minimal hand-written torch loop on
the same model, batch size, precision and memory format, measured side by side (several runs, median).

The hand loop trains on one batch already normalised on the device: forward, loss, backward, step. The
engine does everything an epoch needs: shuffle, slice the uint8 batch on the device, normalise, keep the
loss and accuracy sums on the device. Augmentation is off for the ratio (it is measured by
bench_augment.py); a second line shows the engine with the seed's augmentation for reference.

    python bench/bench_loop.py                                   # CPU: narrow C5L3 (width 0.25)
    python bench/bench_loop.py --device cuda --width 1 --steps 200
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F
from _common import machine, settings, synthetic_data, timed

from kagglerun.core.models import build_model
from kagglerun.core.torch_engine import TorchEngine


def hand_loop(engine: TorchEngine, s: dict, steps: int):
    """The same model, optimizer, precision and memory format, stripped to the bare loop."""
    torch.manual_seed(0)
    dev = engine.dev
    model = build_model(s["model"], 3, 32, 10).to(dev, memory_format=engine.memory_format)
    opt = torch.optim.Adam(model.parameters(), lr=3e-4, **({"fused": True} if dev.type == "cuda" else {}))
    scaler = torch.amp.GradScaler("cuda", enabled=engine.precision == "fp16")
    x = torch.randn(s["training"]["batch_size"], 3, 32, 32, device=dev).contiguous(memory_format=engine.memory_format)
    y = torch.randint(0, 10, (s["training"]["batch_size"],), device=dev)
    amp = engine.amp_dtype

    def run():
        model.train()
        for _ in range(steps):
            with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="c5l3")
    ap.add_argument("--width", type=float, default=None, help="channel multiplier (default: 1 on cuda, 0.25 on cpu)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=None, help="steps per timed run (default: 200 cuda, 12 cpu)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a shared machine)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    width = args.width if args.width is not None else (1.0 if cuda else 0.25)
    steps = args.steps or (200 if cuda else 12)
    model = {"name": args.model, "batchnorm": True, "width": width}
    off = settings(model, {"augment": False}, batch_size=args.batch, device="cuda" if cuda else "cpu")
    seed_aug = settings(model, {"color_jitter": True}, batch_size=args.batch, device="cuda" if cuda else "cpu")
    data = synthetic_data("cifar10", steps * args.batch, 64)
    engine, engine_aug = TorchEngine(off, data), TorchEngine(seed_aug, data)
    bare = hand_loop(engine, off, steps)
    for warm in (lambda: engine.train_epoch(1), lambda: engine_aug.train_epoch(1), bare):
        warm()
    print(f"# bench_loop: {machine(args.device)}, torch {torch.__version__}, {args.model} width {width}, "
          f"batch {args.batch}, {engine.precision}, {steps} steps per run, {args.runs} runs")
    ratios, aug_ratios, t_bare = [], [], []
    for run in range(args.runs):  # interleaved, so a busy machine slows both sides alike
        b = timed(bare, args.device)
        e = timed(lambda: engine.train_epoch(run + 2), args.device)
        a = timed(lambda: engine_aug.train_epoch(run + 2), args.device)
        t_bare.append(b)
        ratios.append(e / b)
        aug_ratios.append(a / b)
    ms = 1000 * statistics.median(t_bare) / steps
    print(f"hand-written loop: {ms:.2f} ms/step (median)")
    print(f"engine / hand loop, no augmentation:     median {statistics.median(ratios):.3f}x "
          f"(runs {min(ratios):.3f}..{max(ratios):.3f}x)")
    print(f"engine / hand loop, seed's augmentation: median {statistics.median(aug_ratios):.3f}x "
          f"(runs {min(aug_ratios):.3f}..{max(aug_ratios):.3f}x)")


if __name__ == "__main__":
    main()

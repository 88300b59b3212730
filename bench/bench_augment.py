"""Augmentation throughput: kagglerun's batched augmentation against the seed's per-image torchvision/PIL
pipeline, measured side by side in one run (several runs, median ratio).

The per-image side is the seed's transform as its DataLoader ran it: one PIL image at a time through
RandomRotation(15) -> RandomHorizontalFlip -> RandomAffine(0, translate=(0.1, 0.1)) [-> ColorJitter(0.2,
0.2, 0.2, 0.1)] -> ToTensor -> Normalize, then stacked into a batch. The batched side takes uint8 batches
on --device through `augment_batch` with the same normalisation, into one float buffer, as the engine does
at the start of each epoch (in chunks of 2,048 images on a CPU, 8,192 on a GPU); smaller batches show what
one call per training step would get. Both on synthetic CIFAR-shaped images.

    python bench/bench_augment.py                   # CPU, one thread each side (the PIL pipeline uses one)
    python bench/bench_augment.py --device cuda     # batched side on the GPU (per-image side stays on the CPU)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from kagglerun.core.augment import augment_batch  # noqa: E402
from kagglerun.core.torch_engine import _EPOCH_CHUNK_CPU, _EPOCH_CHUNK_GPU  # noqa: E402

SEED_AUG = {"augment": True, "rotation": 15.0, "hflip": True, "translate": 0.1,
            "brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.1}
MEAN = STD = (0.5, 0.5, 0.5)


def per_image_pipeline(jitter: bool):
    import torchvision.transforms as T

    steps = [T.RandomRotation(15), T.RandomHorizontalFlip(), T.RandomAffine(0, translate=(0.1, 0.1))]
    if jitter:
        steps.append(T.ColorJitter(0.2, 0.2, 0.2, 0.1))
    return T.Compose(steps + [T.ToTensor(), T.Normalize(MEAN, STD)])


def time_per_image(images, transform) -> float:
    """Images per second through the per-image pipeline, collated into one batch."""
    start = time.perf_counter()
    torch.stack([transform(im) for im in images])
    return len(images) / (time.perf_counter() - start)


def time_batched(x: torch.Tensor, out: torch.Tensor, batch: int, jitter: bool, g: torch.Generator) -> float:
    """Images per second through augment_batch with normalisation into `out`, batch by batch."""
    d = dict(SEED_AUG, color_jitter=jitter)
    scale = torch.tensor([1 / s for s in STD], device=x.device).view(1, -1, 1, 1)
    shift = torch.tensor([-m / s for m, s in zip(MEAN, STD)], device=x.device).view(1, -1, 1, 1)
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    for i in range(0, x.shape[0], batch):
        augment_batch(x[i : i + batch], g, d, out=out[i : i + batch], normalise=(scale, shift))
    sync()
    return x.shape[0] / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", default=None, help="batch sizes for the batched side (default 64,512 and the "
                    "engine's epoch chunk)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--per-image", type=int, default=384, help="images per run through the per-image pipeline")
    ap.add_argument("--batched", type=int, default=None,
                    help="images per run through the batched pipeline (default 4,096 on a CPU, 16,384 on a GPU)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (the PIL pipeline uses one)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from PIL import Image

    g = torch.Generator().manual_seed(0)
    args.batched = args.batched or (16384 if args.device.startswith("cuda") else 4096)
    data = torch.randint(0, 256, (args.batched, 3, 32, 32), dtype=torch.uint8, generator=g)
    images = [Image.fromarray(a.permute(1, 2, 0).numpy()) for a in data[: args.per_image]]
    x = data.to(args.device)
    out = torch.empty(x.shape, device=x.device)
    dev_g = torch.Generator(device=args.device).manual_seed(0)
    chunk = _EPOCH_CHUNK_GPU if args.device.startswith("cuda") else _EPOCH_CHUNK_CPU
    batches = [int(b) for b in args.batches.split(",")] if args.batches else [64, 512, chunk]
    name = torch.cuda.get_device_name() if args.device == "cuda" else (platform.processor() or platform.machine())
    print(f"# bench_augment: {args.device} ({name}), {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{args.threads} torch thread(s), {args.runs} runs")
    for jitter in (False, True):
        label = "base + ColorJitter" if jitter else "base (rotate, flip, translate)"
        transform = per_image_pipeline(jitter)
        for b in batches:  # warm up (allocator, cuDNN, lazy init)
            time_batched(x[: 2 * b], out, b, jitter, dev_g)
        time_per_image(images[:32], transform)
        per, fast, ratios = [], {b: [] for b in batches}, {b: [] for b in batches}
        for _ in range(args.runs):  # interleaved, so a busy machine slows both sides alike
            p = time_per_image(images, transform)
            per.append(p)
            for b in batches:
                f = time_batched(x, out, b, jitter, dev_g)
                fast[b].append(f)
                ratios[b].append(f / p)
        print(f"{label}: per-image {statistics.median(per):,.0f} img/s (median; runs {min(per):,.0f}..{max(per):,.0f})")
        for b in batches:
            r = ratios[b]
            what = f"epoch chunk {b:>5}" if b == chunk else f"batch {b:>5}"
            print(f"  batched, {what}: {statistics.median(fast[b]):>9,.0f} img/s   ratio median "
                  f"{statistics.median(r):5.1f}x  (runs {min(r):.1f}..{max(r):.1f}x)")


if __name__ == "__main__":
    main()

"""Data sets as uint8 tensors: CIFAR-10 and MNIST from their official files, scikit-learn digits, synthetic.

Where a data set is looked for, in order: attached inputs (Kaggle's /kaggle/input, or $KAGGLERUN_INPUT,
searched through, so both of Kaggle's layouts are found: /kaggle/input/datasets/OWNER/SLUG and
/kaggle/input/notebooks/OWNER/SLUG as Kaggle mounts sources now, /kaggle/input/SLUG as it did before), a local data
folder ($KAGGLERUN_DATA, ./data, ~/.cache/kagglerun/data), then a download through
torchvision when the kernel has internet. Part of the training core: standard library and torch only.
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path
from typing import Any

import torch

from .engine import Data

CIFAR10_DIR = "cifar-10-batches-py"
MNIST_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


class DataNotFound(FileNotFoundError):
    """A data set is in none of the places looked at; the message lists them."""


def input_root() -> Path:
    return Path(os.environ.get("KAGGLERUN_INPUT", "/kaggle/input"))


def data_roots() -> list[Path]:
    roots = [Path(os.environ["KAGGLERUN_DATA"])] if os.environ.get("KAGGLERUN_DATA") else []
    return roots + [Path("data"), Path.home() / ".cache" / "kagglerun" / "data"]


def _find(marker: str, roots: list[Path]) -> Path | None:
    """The first folder under `roots` (searched recursively) holding a file named `marker` (or marker.gz)."""
    for root in roots:
        if not root.is_dir():
            continue
        for name in (marker, marker + ".gz"):
            direct = root / name
            if direct.is_file():
                return root
            for hit in sorted(root.rglob(name)):
                return hit.parent
    return None


def read_cifar10(folder: Path) -> tuple[torch.Tensor, ...]:
    """The official python pickles: data_batch_1..5 and test_batch, each {b'data': N x 3072 uint8, b'labels'}."""

    def batch(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        with open(folder / name, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        x = torch.as_tensor(d[b"data"]).to(torch.uint8).reshape(-1, 3, 32, 32)
        y = torch.tensor(list(d[b"labels"]), dtype=torch.int64)
        return x, y

    parts = [batch(f"data_batch_{i}") for i in range(1, 6) if (folder / f"data_batch_{i}").is_file()]
    if not parts:
        raise DataNotFound(f"cifar10: no data_batch_* files in {folder}")
    test_x, test_y = batch("test_batch")
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), test_x, test_y


def read_idx(path: Path) -> torch.Tensor:
    """One IDX file (the MNIST format): magic, dimensions as big-endian int32, then uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = torch.frombuffer(bytearray(raw[4 + 4 * ndim :]), dtype=torch.uint8)
    return data.view(*dims)


def read_mnist(folder: Path) -> tuple[torch.Tensor, ...]:
    def one(key: str) -> torch.Tensor:
        plain = folder / MNIST_FILES[key]
        return read_idx(plain if plain.is_file() else plain.with_name(plain.name + ".gz"))

    train_x, test_x = one("train_x").unsqueeze(1), one("test_x").unsqueeze(1)
    return train_x, one("train_y").long(), test_x, one("test_y").long()


def load_digits_28() -> tuple[torch.Tensor, ...]:
    """scikit-learn's 1,797 8x8 handwritten digits, resized to 28x28; a fixed stratified 80/20 split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    x = torch.nn.functional.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
    x = (x.clamp(0, 1) * 255).round().to(torch.uint8)
    y = torch.tensor(digits.target, dtype=torch.int64)
    g = torch.Generator().manual_seed(20240229)
    test_mask = torch.zeros(len(y), dtype=torch.bool)
    for c in range(10):
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        test_mask[idx[: len(idx) // 5]] = True
    return x[~test_mask], y[~test_mask], x[test_mask], y[test_mask]


def synthetic(like: str, n_train: int, n_test: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Learnable random images of CIFAR-10 or MNIST shape: a fixed template per class plus noise."""
    c, s = (3, 32) if like == "cifar10" else (1, 28)
    g = torch.Generator().manual_seed(seed)
    templates = torch.rand(10, c, s, s, generator=g) * 255

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, 10, (n,), generator=g)
        noise = torch.randn(n, c, s, s, generator=g) * 60
        return (templates[y] + noise).clamp(0, 255).to(torch.uint8), y

    return (*make(n_train), *make(n_test))


def _download(dataset: str, root: Path) -> Path:
    import torchvision

    root.mkdir(parents=True, exist_ok=True)
    if dataset == "cifar10":
        torchvision.datasets.CIFAR10(str(root), train=True, download=True)
        return root / CIFAR10_DIR
    torchvision.datasets.MNIST(str(root), train=True, download=True)
    torchvision.datasets.MNIST(str(root), train=False, download=True)
    return root / "MNIST" / "raw"


def load_data(settings: dict[str, Any]) -> Data:
    """The data set an experiment names, limited and described as `Data`."""
    d = settings["data"]
    name = d["dataset"]
    if name == "digits":
        arrays = load_digits_28()
    elif name == "synthetic":
        arrays = synthetic(d["synthetic_like"], d["synthetic_train"], d["synthetic_test"])
    else:
        marker = "data_batch_1" if name == "cifar10" else MNIST_FILES["train_x"]
        searched = [input_root(), *data_roots()]
        folder = _find(marker, searched)
        if folder is None and settings["kaggle"]["internet"]:
            folder = _download(name, data_roots()[-1])
        if folder is None:
            looked = ", ".join(str(p) for p in searched)
            raise DataNotFound(
                f"data set {name!r} not found: looked for {marker} under {looked}; attach it as a Kaggle data set "
                f"(kaggle.dataset_sources), put it in a data folder, or set kaggle.internet = true to download it"
            )
        arrays = read_cifar10(folder) if name == "cifar10" else read_mnist(folder)
    train_x, train_y, test_x, test_y = arrays
    if d["train_limit"]:
        train_x, train_y = train_x[: d["train_limit"]], train_y[: d["train_limit"]]
    if d["test_limit"]:
        test_x, test_y = test_x[: d["test_limit"]], test_y[: d["test_limit"]]
    channels = int(train_x.shape[1])
    mean, std = tuple(d["mean"]), tuple(d["std"])
    if len(mean) != channels:  # e.g. a 3-channel normalisation on a 1-channel set: use its first value
        mean, std = (mean[0],) * channels, (std[0],) * channels
    return Data(name, train_x.contiguous(), train_y, test_x.contiguous(), test_y, 10, mean, std)

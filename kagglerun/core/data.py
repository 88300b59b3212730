"""Data sets as uint8 tensors: CIFAR-10/100, MNIST, Fashion-MNIST, KMNIST and SVHN from their official files,
a user's own images (one folder per class) or pixel table (CSV), scikit-learn digits, synthetic.

Where a data set is looked for, in order: attached inputs (Kaggle's /kaggle/input, or $KAGGLERUN_INPUT),
a local data folder ($KAGGLERUN_DATA, ./data, ~/.cache/kagglerun/data), then a download through
torchvision when the kernel has internet. Classes and channels always come from the data. A file that
cannot be read is a `DataError` naming it. Part of the training core: standard library and torch only
(PIL, scipy, pandas and scikit-learn lazily, for the formats that need them).
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .engine import Data

CIFAR10_DIR = "cifar-10-batches-py"
CIFAR100_DIR = "cifar-100-python"
MNIST_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")
TEST_SPLIT_SEED = 20240229  # the holdout test set of imagefolder and csv data: the same for every training.seed
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
DIGITS = tuple(str(i) for i in range(10))
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot")
KMNIST_CLASSES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
IDX_CLASSES = {"mnist": DIGITS, "fashion_mnist": FASHION_CLASSES, "kmnist": KMNIST_CLASSES}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

Arrays = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, tuple[str, ...]]


class DataNotFound(FileNotFoundError):
    """A data set is in none of the places looked at; the message lists them."""


class DataError(ValueError):
    """A data file is corrupt, unreadable or not what its settings say; the message names it."""


@contextmanager
def reading(path: Path | str) -> Iterator[None]:
    """Turn whatever reading `path` raises into one DataError line naming it."""
    try:
        yield
    except (DataError, DataNotFound):
        raise
    except Exception as e:  # pickle, gzip, PIL, scipy and pandas each raise their own types
        detail = (str(e).strip().splitlines() or [""])[0][:200]
        raise DataError(f"{path}: unreadable ({type(e).__name__}: {detail})") from None


def input_root() -> Path:
    return Path(os.environ.get("KAGGLERUN_INPUT", "/kaggle/input"))


def data_roots() -> list[Path]:
    roots = [Path(os.environ["KAGGLERUN_DATA"])] if os.environ.get("KAGGLERUN_DATA") else []
    return roots + [Path("data"), Path.home() / ".cache" / "kagglerun" / "data"]


def _find(marker: str, roots: list[Path], accept: Callable[[Path], bool] = lambda _: True) -> Path | None:
    """The first folder under `roots` (searched recursively) holding a file named `marker` (or marker.gz)
    that `accept`s."""
    for root in roots:
        if not root.is_dir():
            continue
        for name in (marker, marker + ".gz"):
            direct = root / name
            if direct.is_file() and accept(direct):
                return root
            for hit in sorted(root.rglob(name)):
                if hit.is_file() and accept(hit):
                    return hit.parent
    return None


def _idx_accept(name: str) -> Callable[[Path], bool]:
    """MNIST, Fashion-MNIST and KMNIST share file names: told apart by the folders they are in."""
    others = [n for n in ("fashion", "kmnist") if n != name.split("_")[0]]

    def accept(path: Path) -> bool:
        text = str(path).lower()
        return all(o not in text for o in others) and (name == "mnist" or name.split("_")[0] in text)

    return accept


def _unpickle(path: Path) -> dict[bytes, Any]:
    with reading(path):
        with open(path, "rb") as f:
            d = pickle.load(f, encoding="bytes")
        if not isinstance(d, dict) or not {b"data", b"label_names", b"fine_label_names"} & set(d):
            raise ValueError("not a CIFAR python pickle")
        return d


def _cifar_images(path: Path, d: dict[bytes, Any], label_key: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    with reading(path):
        x = torch.as_tensor(d[b"data"]).to(torch.uint8).reshape(-1, 3, 32, 32)
        y = torch.tensor(list(d[label_key]), dtype=torch.int64)
        if len(x) != len(y):
            raise ValueError(f"{len(x)} images but {len(y)} labels")
        return x, y


def _names(raw: Any) -> tuple[str, ...]:
    return tuple(n.decode() if isinstance(n, bytes) else str(n) for n in raw)


def read_cifar10(folder: Path) -> Arrays:
    """The official python pickles: data_batch_1..5 and test_batch, each {b'data': N x 3072 uint8, b'labels'}."""

    def batch(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        return _cifar_images(folder / name, _unpickle(folder / name), b"labels")

    parts = [batch(f"data_batch_{i}") for i in range(1, 6) if (folder / f"data_batch_{i}").is_file()]
    if not parts:
        raise DataNotFound(f"cifar10: no data_batch_* files in {folder}")
    test_x, test_y = batch("test_batch")
    names: tuple[str, ...] = CIFAR10_CLASSES
    if (folder / "batches.meta").is_file():
        names = _names(_unpickle(folder / "batches.meta").get(b"label_names", names))
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts]), test_x, test_y, names


def read_cifar100(folder: Path) -> Arrays:
    """The official python pickles: train and test, {b'data': N x 3072 uint8, b'fine_labels'}, and meta
    with b'fine_label_names'."""
    train_x, train_y = _cifar_images(folder / "train", _unpickle(folder / "train"), b"fine_labels")
    test_x, test_y = _cifar_images(folder / "test", _unpickle(folder / "test"), b"fine_labels")
    names: tuple[str, ...] = ()
    if (folder / "meta").is_file():
        names = _names(_unpickle(folder / "meta").get(b"fine_label_names", ()))
    return train_x, train_y, test_x, test_y, names


def read_idx(path: Path) -> torch.Tensor:
    """One IDX file (the MNIST format): magic, dimensions as big-endian int32, then uint8 data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with reading(path), opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4:
        raise DataError(f"{path}: not an unsigned-byte IDX file (only {len(raw)} bytes)")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08 or len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    expected = 1
    for dim in dims:
        expected *= dim
    if len(raw) - 4 - 4 * ndim != expected:
        raise DataError(f"{path}: truncated IDX file ({len(raw) - 4 - 4 * ndim} bytes of data, {expected} expected)")
    data = torch.frombuffer(bytearray(raw[4 + 4 * ndim :]), dtype=torch.uint8)
    return data.view(*dims)


def read_mnist(folder: Path, names: tuple[str, ...] = DIGITS) -> Arrays:
    """MNIST's four IDX files (plain or .gz); Fashion-MNIST and KMNIST come in the same files."""

    def one(key: str) -> torch.Tensor:
        plain = folder / MNIST_FILES[key]
        return read_idx(plain if plain.is_file() else plain.with_name(plain.name + ".gz"))

    train_x, test_x = one("train_x").unsqueeze(1), one("test_x").unsqueeze(1)
    return train_x, one("train_y").long(), test_x, one("test_y").long(), names


def read_svhn(folder: Path) -> Arrays:
    """SVHN's cropped digits: train_32x32.mat and test_32x32.mat, X [32, 32, 3, N] uint8 and y [N, 1], where
    label 10 is the digit 0."""
    from scipy.io import loadmat

    def one(name: str) -> tuple[torch.Tensor, torch.Tensor]:
        path = folder / name
        with reading(path):
            mat = loadmat(str(path))
            x = torch.as_tensor(mat["X"]).to(torch.uint8).permute(3, 2, 0, 1).contiguous()
            y = torch.as_tensor(mat["y"].astype("int64")).flatten() % 10
            if len(x) != len(y):
                raise ValueError(f"{len(x)} images but {len(y)} labels")
        return x, y

    return (*one(SVHN_FILES[0]), *one(SVHN_FILES[1]), DIGITS)


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
    for c in range(int(y.max()) + 1):
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


def stratified_split(y: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (kept, held out), each in their original order: `fraction` of every class held out (rounded,
    but never a class's last member), drawn by a generator seeded with `seed`."""
    g = torch.Generator().manual_seed(seed)
    held = torch.zeros(len(y), dtype=torch.bool)
    for c in torch.unique(y).tolist():
        idx = (y == c).nonzero().flatten()
        k = min(int(round(len(idx) * fraction)), len(idx) - 1)
        held[idx[torch.randperm(len(idx), generator=g)[:k]]] = True
    return (~held).nonzero().flatten(), held.nonzero().flatten()


def find_path(path: str) -> Path:
    """data.path: an absolute path as is; a relative one under the attached inputs (or one or two folders
    down, where Kaggle mounts each data set) and the data folders, else relative to the working folder."""
    p = Path(path)
    if p.is_absolute():
        if p.exists():
            return p
        raise DataNotFound(f"data.path: {p} does not exist")
    looked = []
    for root in [input_root(), *data_roots()]:
        looked.append(str(root / p))
        if (root / p).exists():
            return root / p
        if root.is_dir():
            for pattern in (f"*/{path}", f"*/*/{path}"):
                for hit in sorted(root.glob(pattern)):
                    return hit
    if p.exists():
        return p
    raise DataNotFound(f"data.path: {path!r} not found; looked in {', '.join(looked)} and the working folder; "
                       "attach it as a Kaggle data set (kaggle.dataset_sources) or put it in a data folder")


def _class_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _read_image_folder(folder: Path, classes: list[str], size: int | None) -> tuple[list[torch.Tensor], list[int], bool]:
    """Every image under folder/<class>/ (searched recursively): uint8 [C, H, W] tensors, RGB unless every
    image is grayscale (then one channel), resized to size x size when given."""
    from PIL import Image

    images, labels, gray = [], [], True
    for label, name in enumerate(classes):
        class_dir = folder / name
        if not class_dir.is_dir():
            continue
        for path in sorted(class_dir.rglob("*")):
            if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            with reading(path), Image.open(path) as opened:
                opened.load()
                is_gray = opened.mode in ("1", "L", "I", "I;16", "F")
                im = opened.convert("L" if is_gray else "RGB")
                if size is not None and im.size != (size, size):
                    im = im.resize((size, size), Image.Resampling.BILINEAR)
                x = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8)
                x = x.view(im.size[1], im.size[0], -1).permute(2, 0, 1).contiguous()
            gray = gray and is_gray
            images.append(x)
            labels.append(label)
    return images, labels, gray


def read_image_folder(root: Path, size: int | None, test_split: float) -> Arrays:
    """An ImageFolder layout: root/<class>/*.png, or root/train/<class>/ and root/test/<class>/."""
    if not root.is_dir():
        raise DataError(f"{root}: data.path of an imagefolder must be a folder (one sub-folder per class)")
    split = (root / "train").is_dir() and (root / "test").is_dir()
    classes = [p.name for p in _class_folders(root / "train" if split else root)]
    if not classes:
        raise DataError(f"{root}: no class folders (an imagefolder holds one sub-folder of images per class)")
    parts = [(root / "train", "train"), (root / "test", "test")] if split else [(root, "all")]
    read = {}
    for folder, part in parts:
        if split:
            extra = sorted({p.name for p in _class_folders(folder)} - set(classes))
            if extra:
                raise DataError(f"{folder}: classes {extra} are not in {root / 'train'}")
        images, labels, gray = _read_image_folder(folder, classes, size)
        if not images:
            raise DataError(f"{folder}: no image files ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
        read[part] = (images, labels, gray)
    gray = all(g for _, _, g in read.values())
    sizes = {tuple(x.shape[1:]) for images, _, _ in read.values() for x in images}
    if len(sizes) > 1 or any(h != w for h, w in sizes):
        shown = ", ".join(f"{h}x{w}" for h, w in sorted(sizes)[:4])
        raise DataError(f"{root}: images of sizes {shown}: set data.image_size to resize them to one square size")

    def stack(part: str) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels, _ = read[part]
        x = torch.stack([im if gray or im.shape[0] == 3 else im.expand(3, -1, -1) for im in images])
        return x, torch.tensor(labels, dtype=torch.int64)

    if split:
        return (*stack("train"), *stack("test"), tuple(classes))
    x, y = stack("all")
    keep, held = stratified_split(y, test_split, TEST_SPLIT_SEED)
    return x[keep], y[keep], x[held], y[held], tuple(classes)


def _read_csv(path: Path, label_column: str, shape: tuple[int, int, int],
              labelled: bool = True) -> tuple[torch.Tensor, Any] | None:
    """One pixel table: a label column and C*H*W pixel columns (0-255, or 0-1 floats). Returns (images,
    raw labels); None when `labelled` is False and the file has no label column (a competition's test.csv)."""
    import pandas as pd

    with reading(path):
        frame = pd.read_csv(path)
    if label_column not in frame.columns:
        if not labelled:
            return None
        shown = ", ".join(map(str, list(frame.columns)[:5]))
        raise DataError(f"{path}: no column {label_column!r} (data.label_column); its columns: {shown}, ...")
    pixels = frame.drop(columns=[label_column])
    c, h, w = shape
    if pixels.shape[1] != c * h * w:
        raise DataError(f"{path}: {pixels.shape[1]} pixel columns, but data.image_shape {list(shape)} needs {c * h * w}")
    with reading(path):
        values = torch.as_tensor(pixels.to_numpy(dtype="float64"))
    if values.isnan().any():
        raise DataError(f"{path}: empty or non-numeric pixel values")
    if values.numel() and values.max() <= 1.0 and pixels.dtypes.map(lambda t: t.kind == "f").any():
        values = values * 255
    if values.numel() and (values.min() < 0 or values.max() > 255):
        raise DataError(f"{path}: pixel values outside 0-255")
    return values.round().to(torch.uint8).view(-1, c, h, w), frame[label_column].to_numpy()


def read_csv_data(path: Path, label_column: str, shape: tuple[int, int, int], test_split: float) -> Arrays:
    """A pixel table (Kaggle's digit-recognizer): a file (test: a stratified holdout), or a folder with
    train.csv and test.csv (used as the test set when it has the label column, else a holdout)."""
    train_file = path / "train.csv" if path.is_dir() else path
    if not train_file.is_file():
        raise DataError(f"{path}: no train.csv (data.path of a csv data set is a .csv file or a folder with train.csv)")
    train = _read_csv(train_file, label_column, shape)
    assert train is not None
    test = _read_csv(path / "test.csv", label_column, shape, labelled=False) \
        if path.is_dir() and (path / "test.csv").is_file() else None
    raw = list(train[1]) + (list(test[1]) if test is not None else [])
    try:  # numbers in numeric order, names in alphabetical order
        values = sorted(set(raw))
    except TypeError:
        values = sorted(set(raw), key=str)
    index = {v: i for i, v in enumerate(values)}
    names = tuple(str(v) for v in values)
    train_x, train_y = train[0], torch.tensor([index[v] for v in train[1]], dtype=torch.int64)
    if test is not None:
        return train_x, train_y, test[0], torch.tensor([index[v] for v in test[1]], dtype=torch.int64), names
    keep, held = stratified_split(train_y, test_split, TEST_SPLIT_SEED)
    return train_x[keep], train_y[keep], train_x[held], train_y[held], names


OFFICIAL: dict[str, tuple[str, Callable[[Path], bool], Callable[[Path], Arrays]]] = {
    # data set: (the file that marks its folder, which hits count, the reader)
    "cifar10": ("data_batch_1", lambda _: True, read_cifar10),
    "cifar100": ("train", lambda p: (p.parent / "meta").is_file() and (p.parent / "test").is_file(), read_cifar100),
    "mnist": (MNIST_FILES["train_x"], _idx_accept("mnist"), read_mnist),
    "fashion_mnist": (MNIST_FILES["train_x"], _idx_accept("fashion_mnist"), lambda f: read_mnist(f, FASHION_CLASSES)),
    "kmnist": (MNIST_FILES["train_x"], _idx_accept("kmnist"), lambda f: read_mnist(f, KMNIST_CLASSES)),
    "svhn": (SVHN_FILES[0], lambda _: True, read_svhn),
}


def _download(dataset: str, root: Path) -> Path | None:
    import torchvision

    root.mkdir(parents=True, exist_ok=True)
    ds = torchvision.datasets
    if dataset == "svhn":
        for split in ("train", "test"):
            ds.SVHN(str(root / "SVHN"), split=split, download=True)
    else:
        cls = {"cifar10": ds.CIFAR10, "cifar100": ds.CIFAR100, "mnist": ds.MNIST, "fashion_mnist": ds.FashionMNIST,
               "kmnist": ds.KMNIST}[dataset]
        for train in (True, False):
            cls(str(root), train=train, download=True)
    marker, accept, _ = OFFICIAL[dataset]
    return _find(marker, [root], accept)


def _official(name: str, internet: bool) -> Arrays:
    marker, accept, reader = OFFICIAL[name]
    searched = [input_root(), *data_roots()]
    folder = _find(marker, searched, accept)
    if folder is None and internet:
        folder = _download(name, data_roots()[-1])
    if folder is None:
        looked = ", ".join(str(p) for p in searched)
        raise DataNotFound(
            f"data set {name!r} not found: looked for {marker} under {looked}; attach it as a Kaggle data set "
            f"(kaggle.dataset_sources), put it in a data folder, or set kaggle.internet = true to download it"
        )
    return reader(folder)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 images [N, C, H, W] to size x size (bilinear, antialiased when shrinking), still uint8."""
    if x.shape[-2:] == (size, size):
        return x
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.uint8)
    for start in range(0, x.shape[0], 1024):  # a float copy of a chunk at a time
        chunk = x[start : start + 1024].float()
        chunk = torch.nn.functional.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False,
                                                antialias=size < max(x.shape[-2:]))
        out[start : start + 1024] = chunk.clamp_(0, 255).round_().to(torch.uint8)
    return out


def _per_channel(key: str, values: tuple[float, ...], channels: int) -> tuple[float, ...]:
    """data.mean / data.std for `channels`: as given, or one value (or several equal ones, as the 3-channel
    default is) for every channel."""
    if len(values) == channels:
        return values
    if len(set(values)) == 1:
        return (values[0],) * channels
    raise DataError(f"data.{key}: {len(values)} values {list(values)} for a data set of {channels} channel(s)")


KNOWN_SHAPES = {"cifar10": (3, 32, 10), "cifar100": (3, 32, 100), "svhn": (3, 32, 10), "mnist": (1, 28, 10),
                "fashion_mnist": (1, 28, 10), "kmnist": (1, 28, 10), "digits": (1, 28, 10)}


def expected_shape(settings: dict[str, Any]) -> tuple[int, int, int] | None:
    """(channels, size, classes) of the data an experiment names, without reading it; None where only the
    files can tell (imagefolder, csv). For checks that build a model before any data is at hand."""
    d = settings["data"]
    name = d["dataset"]
    if name == "synthetic":
        shape = (3, 32, 10) if d["synthetic_like"] == "cifar10" else (1, 28, 10)
    elif name in KNOWN_SHAPES:
        shape = KNOWN_SHAPES[name]
    else:
        return None
    return shape[0], d.get("image_size") or shape[1], shape[2]


def load_data(settings: dict[str, Any]) -> Data:
    """The data set an experiment names, limited, resized, split and described as `Data`."""
    d = settings["data"]
    name = d["dataset"]
    names: tuple[str, ...] = ()
    if name == "digits":
        train_x, train_y, test_x, test_y = load_digits_28()
        names = DIGITS
    elif name == "synthetic":
        train_x, train_y, test_x, test_y = synthetic(d["synthetic_like"], d["synthetic_train"], d["synthetic_test"])
    elif name == "imagefolder":
        train_x, train_y, test_x, test_y, names = read_image_folder(find_path(d["path"]), d.get("image_size"),
                                                                    d.get("test_split", 0.2))
    elif name == "csv":
        train_x, train_y, test_x, test_y, names = read_csv_data(find_path(d["path"]), d.get("label_column", "label"),
                                                                tuple(d["image_shape"]), d.get("test_split", 0.2))
    else:
        train_x, train_y, test_x, test_y, names = _official(name, settings["kaggle"]["internet"])
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DataError(f"data set {name!r}: train images {list(train_x.shape[1:])}, test {list(test_x.shape[1:])}")
    if d["train_limit"]:
        train_x, train_y = train_x[: d["train_limit"]], train_y[: d["train_limit"]]
    if d["test_limit"]:
        test_x, test_y = test_x[: d["test_limit"]], test_y[: d["test_limit"]]
    if d.get("image_size"):
        train_x, test_x = resize(train_x, d["image_size"]), resize(test_x, d["image_size"])
    if train_x.shape[-2] != train_x.shape[-1]:
        raise DataError(f"data set {name!r}: images are {train_x.shape[-2]}x{train_x.shape[-1]}, the models want "
                        "square ones: set data.image_size")
    num_classes = max(len(names), int(max(train_y.max(), test_y.max())) + 1 if len(test_y) else int(train_y.max()) + 1)
    if not names:
        names = tuple(str(i) for i in range(num_classes))
    val_x = val_y = None
    if d.get("val_split"):
        keep, held = stratified_split(train_y, d["val_split"], settings["training"]["seed"])
        if not len(held):
            raise DataError(f"data.val_split: {d['val_split']} of {len(train_y)} training images holds out none")
        val_x, val_y = train_x[held].contiguous(), train_y[held]
        train_x, train_y = train_x[keep], train_y[keep]
    channels = int(train_x.shape[1])
    mean, std = _per_channel("mean", tuple(d["mean"]), channels), _per_channel("std", tuple(d["std"]), channels)
    return Data(name, train_x.contiguous(), train_y, test_x.contiguous(), test_y, num_classes, mean, std,
                val_x=val_x, val_y=val_y, class_names=names)

"""Data readers on tiny files in the official CIFAR-10 pickle and MNIST IDX formats, written here."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from kagglerun.core.data import DataNotFound, load_data, load_digits_28, read_idx, synthetic


def settings(dataset, internet=False, **data):
    d = {"dataset": dataset, "synthetic_like": "cifar10", "synthetic_train": 64, "synthetic_test": 16,
         "train_limit": None, "test_limit": None, "mean": [0.5], "std": [0.5], **data}
    return {"data": d, "kaggle": {"internet": internet}}


def write_cifar(folder, n=4):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        with open(folder / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [b"x.png"] * n}, f)
        batches[name] = (data, labels)
    return batches


def write_idx(path, array, gz=False):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_mnist(folder, gz=False):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    suffix = ".gz" if gz else ""
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28)),
              "train-labels-idx1-ubyte": rng.integers(0, 10, (6,)),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (3, 28, 28)),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, (3,))}
    for name, array in arrays.items():
        write_idx(folder / (name + suffix), array, gz)
    return arrays


def test_cifar10_found_in_an_attached_input(tmp_path, monkeypatch):
    batches = write_cifar(tmp_path / "input" / "cifar10-python" / "cifar-10-batches-py")
    monkeypatch.setenv("KAGGLERUN_INPUT", str(tmp_path / "input"))
    monkeypatch.setenv("KAGGLERUN_DATA", str(tmp_path / "nothing"))
    data = load_data(settings("cifar10", mean=[0.5] * 3, std=[0.5] * 3))
    assert data.train_x.shape == (20, 3, 32, 32) and data.train_x.dtype == torch.uint8
    assert data.test_x.shape == (4, 3, 32, 32) and data.channels == 3 and data.size == 32
    first = batches["data_batch_1"]
    assert torch.equal(data.train_x[0].flatten(), torch.from_numpy(first[0][0]))  # row-major CHW, as documented
    assert data.train_y[:4].tolist() == first[1]
    assert data.test_y.tolist() == batches["test_batch"][1]


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_found_in_a_local_data_folder(tmp_path, monkeypatch, gz):
    arrays = write_mnist(tmp_path / "data" / "MNIST" / "raw", gz)
    monkeypatch.setenv("KAGGLERUN_INPUT", str(tmp_path / "no-input"))
    monkeypatch.setenv("KAGGLERUN_DATA", str(tmp_path / "data"))
    data = load_data(settings("mnist", test_limit=2))
    assert data.train_x.shape == (6, 1, 28, 28) and data.test_x.shape == (2, 1, 28, 28)
    assert torch.equal(data.train_x[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"].astype(np.uint8)))
    assert data.train_y.tolist() == arrays["train-labels-idx1-ubyte"].tolist()


def test_idx_rejects_a_foreign_file(tmp_path):
    (tmp_path / "x").write_bytes(b"\x00\x00\x0d\x01" + b"\x00" * 8)
    with pytest.raises(ValueError, match="not an unsigned-byte IDX file"):
        read_idx(tmp_path / "x")


def test_a_missing_data_set_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLERUN_INPUT", str(tmp_path / "input"))
    monkeypatch.setenv("KAGGLERUN_DATA", str(tmp_path / "data"))
    with pytest.raises(DataNotFound) as err:
        load_data(settings("cifar10"))
    message = str(err.value)
    assert "data_batch_1" in message and str(tmp_path / "input") in message and str(tmp_path / "data") in message
    assert "internet" in message


def test_digits_and_synthetic():
    train_x, train_y, test_x, test_y = load_digits_28()
    assert train_x.shape[1:] == (1, 28, 28) and len(train_x) + len(test_x) == 1797
    assert set(test_y.tolist()) == set(range(10))
    a = synthetic("cifar10", 8, 4)
    b = synthetic("cifar10", 8, 4)
    assert a[0].shape == (8, 3, 32, 32) and torch.equal(a[0], b[0])
    data = load_data(settings("synthetic", train_limit=5))
    assert data.train_x.shape[0] == 5 and data.mean == (0.5, 0.5, 0.5)

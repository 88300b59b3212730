"""More data sets from tiny files in their official formats, written here: CIFAR-100 (python pickles),
Fashion-MNIST and KMNIST (IDX, gzipped), SVHN (.mat), an ImageFolder of PNGs and a pixel CSV. Each loads with
the classes and channels of its data, a model built for it has that many outputs, and a corrupt file is one
line naming it."""

from __future__ import annotations

import gzip
import json
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from kagglerun.core import torch_engine
from kagglerun.core.data import TEST_SPLIT_SEED, DataError, DataNotFound, load_data, stratified_split
from kagglerun.errors import ExperimentError
from kagglerun.experiments import Settings
from kagglerun.experiments.settings import validate_settings


def settings(dataset, **data):
    return Settings.model_validate_json(json.dumps({
        "name": "ds", "model": {"name": "c5l3", "width": 0.0625},
        "data": {"dataset": dataset, **data}, "training": {"epochs": 1, "device": "cpu"},
    })).as_dict()


@pytest.fixture
def roots(tmp_path, monkeypatch):
    """An empty inputs folder and data folder, and nothing else looked at."""
    monkeypatch.setenv("KAGGLERUN_INPUT", str(tmp_path / "input"))
    monkeypatch.setenv("KAGGLERUN_DATA", str(tmp_path / "data"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "input").mkdir()
    (tmp_path / "data").mkdir()
    return tmp_path


def head_outputs(s, data):
    engine = torch_engine.TorchEngine(s, data)
    engine.model.eval()
    with torch.no_grad():
        return engine.model(torch.zeros(2, data.channels, data.size, data.size)).shape


def write_cifar100(folder, n_train=12, n_test=5):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    arrays = {}
    for name, n in (("train", n_train), ("test", n_test)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, size=n)]
        with open(folder / name, "wb") as f:
            pickle.dump({b"filenames": [b"x.png"] * n, b"batch_label": name.encode(), b"fine_labels": fine,
                         b"coarse_labels": [v // 5 for v in fine], b"data": data}, f)
        arrays[name] = (data, fine)
    names = [f"class_{i}".encode() for i in range(100)]
    with open(folder / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": names, b"coarse_label_names": [b"c"] * 20}, f)
    return arrays


def write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def write_idx_set(folder, seed):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (8, 28, 28)),
              "train-labels-idx1-ubyte": rng.integers(0, 10, (8,)),
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (4, 28, 28)),
              "t10k-labels-idx1-ubyte": rng.integers(0, 10, (4,))}
    for name, array in arrays.items():
        write_idx(folder / (name + ".gz"), array)
    return arrays


def test_cifar100_fine_labels_and_names(roots):
    arrays = write_cifar100(roots / "input" / "cifar100" / "cifar-100-python")
    s = settings("cifar100")
    data = load_data(s)
    assert data.train_x.shape == (12, 3, 32, 32) and data.test_x.shape == (5, 3, 32, 32)
    assert data.num_classes == 100 and data.class_names[:2] == ("class_0", "class_1") and data.channels == 3
    assert data.train_y.tolist() == arrays["train"][1] and data.test_y.tolist() == arrays["test"][1]
    assert torch.equal(data.train_x[3].flatten(), torch.from_numpy(arrays["train"][0][3]))
    assert head_outputs(s, data) == (2, 100)


@pytest.mark.parametrize(("dataset", "folder", "first"), [
    ("fashion_mnist", "FashionMNIST/raw", "T-shirt/top"), ("kmnist", "KMNIST/raw", "o"), ("mnist", "MNIST/raw", "0")])
def test_fashion_mnist_kmnist_and_mnist_share_file_names_and_are_told_apart(roots, dataset, folder, first):
    written = {name: write_idx_set(roots / "data" / path, seed) for seed, (name, path) in enumerate(
        [("fashion_mnist", "FashionMNIST/raw"), ("kmnist", "KMNIST/raw"), ("mnist", "MNIST/raw")])}
    s = settings(dataset, mean=[0.5], std=[0.5])
    data = load_data(s)
    arrays = written[dataset]
    assert data.channels == 1 and data.num_classes == 10 and data.class_names[0] == first
    assert torch.equal(data.train_x[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"].astype(np.uint8)))
    assert data.test_y.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert data.mean == (0.5,)
    assert head_outputs(s, data) == (2, 10)


def test_svhn_mat_files_with_label_10_as_digit_0(roots):
    from scipy.io import savemat

    rng = np.random.default_rng(3)
    folder = roots / "input" / "svhn"
    folder.mkdir()
    written = {}
    for name, n in (("train_32x32.mat", 9), ("test_32x32.mat", 4)):
        x = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = rng.integers(1, 11, (n, 1)).astype(np.uint8)
        y[0] = 10
        savemat(folder / name, {"X": x, "y": y})
        written[name] = (x, y)
    s = settings("svhn")
    data = load_data(s)
    x, y = written["train_32x32.mat"]
    assert data.train_x.shape == (9, 3, 32, 32) and data.test_x.shape == (4, 3, 32, 32)
    assert data.train_y[0] == 0 and data.train_y.tolist() == [int(v) % 10 for v in y.flatten()]
    assert torch.equal(data.train_x[2], torch.from_numpy(x[:, :, :, 2]).permute(2, 0, 1))  # HWC N -> N CHW
    assert data.num_classes == 10 and head_outputs(s, data) == (2, 10)


def write_png_folder(root, classes, per_class, size=(12, 12), mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(root / c / f"{i}.png")


def test_imagefolder_with_train_and_test_found_under_an_input(roots):
    base = roots / "input" / "my-pets" / "pets"
    write_png_folder(base / "train", ["cat", "dog", "eel"], 4)
    write_png_folder(base / "test", ["cat", "dog", "eel"], 2, seed=1)
    s = settings("imagefolder", path="pets")
    data = load_data(s)
    assert data.class_names == ("cat", "dog", "eel") and data.num_classes == 3
    assert data.train_x.shape == (12, 3, 12, 12) and data.train_x.dtype == torch.uint8
    assert data.test_y.tolist() == [0, 0, 1, 1, 2, 2]
    first = np.array(Image.open(base / "train" / "cat" / "0.png"))
    assert torch.equal(data.train_x[0], torch.from_numpy(first).permute(2, 0, 1))
    assert head_outputs(s, data) == (2, 3)


def test_imagefolder_without_split_holds_out_a_stratified_test_set_and_resizes(roots):
    root = roots / "data" / "letters"
    write_png_folder(root, ["a", "b"], 10, size=(20, 20), mode="L")
    (root / "b" / "9.png").unlink()
    Image.fromarray(np.zeros((15, 25), dtype=np.uint8), "L").save(root / "b" / "odd.png")  # another size
    with pytest.raises(DataError, match="set data.image_size"):
        load_data(settings("imagefolder", path=str(root)))
    s = settings("imagefolder", path="letters", image_size=16, test_split=0.3)
    data = load_data(s)
    assert data.channels == 1 and data.size == 16 and data.mean == (0.5,)  # grayscale PNGs: one channel
    assert data.test_y.tolist() == [0, 0, 0, 1, 1, 1] and data.train_y.bincount().tolist() == [7, 7]
    assert torch.equal(load_data(s).test_x, data.test_x)  # the holdout is fixed
    assert head_outputs(s, data) == (2, 2)


def test_pixel_csv_like_the_digit_recognizer(roots):
    folder = roots / "input" / "digit-recognizer"
    folder.mkdir()
    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 256, (20, 64))
    labels = np.repeat([3, 5, 7, 9], 5)
    header = "label," + ",".join(f"pixel{i}" for i in range(64))
    rows = [",".join(map(str, [lab, *p])) for lab, p in zip(labels, pixels, strict=True)]
    (folder / "train.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    (folder / "test.csv").write_text(",".join(f"pixel{i}" for i in range(64)) + "\n" + "0," * 63 + "0\n")  # unlabelled
    s = settings("csv", path="digit-recognizer", image_shape=[1, 8, 8], test_split=0.2)
    data = load_data(s)
    assert data.class_names == ("3", "5", "7", "9") and data.num_classes == 4
    assert len(data.test_y) == 4 and data.test_y.bincount().tolist() == [1, 1, 1, 1]  # a stratified holdout
    assert data.train_x.shape == (16, 1, 8, 8)
    keep, _ = stratified_split(torch.tensor(labels), 0.2, TEST_SPLIT_SEED)  # the holdout is the same every time
    assert torch.equal(data.train_x[3].flatten(), torch.from_numpy(pixels[int(keep[3])].astype(np.uint8)))
    assert head_outputs(s, data) == (2, 4)
    with pytest.raises(DataError, match=r"train.csv: 64 pixel columns, but data.image_shape \[1, 5, 5\] needs 25"):
        load_data(settings("csv", path="digit-recognizer", image_shape=[1, 5, 5]))
    with pytest.raises(DataError, match="train.csv: no column 'digit'"):
        load_data(settings("csv", path="digit-recognizer/train.csv", image_shape=[1, 8, 8], label_column="digit"))


def one_line(err):
    message = str(err.value)
    assert "\n" not in message
    return message


def test_corrupt_files_are_one_line_naming_them(roots):
    folder = roots / "input" / "c100" / "cifar-100-python"
    write_cifar100(folder)
    (folder / "train").write_bytes((folder / "train").read_bytes()[:500])  # truncated
    with pytest.raises(DataError) as err:
        load_data(settings("cifar100"))
    assert one_line(err).startswith(f"{folder / 'train'}: unreadable")

    idx = roots / "data" / "FashionMNIST" / "raw"
    write_idx_set(idx, 0)
    (idx / "t10k-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError) as err:
        load_data(settings("fashion_mnist"))
    assert one_line(err).startswith(f"{idx / 't10k-images-idx3-ubyte.gz'}: unreadable")

    svhn = roots / "input" / "svhn"
    svhn.mkdir()
    (svhn / "train_32x32.mat").write_bytes(b"MATLAB 5.0 MAT-file, but not really")
    with pytest.raises(DataError) as err:
        load_data(settings("svhn"))
    assert one_line(err).startswith(f"{svhn / 'train_32x32.mat'}: unreadable")

    pets = roots / "data" / "pets"
    write_png_folder(pets, ["cat", "dog"], 2)
    (pets / "dog" / "1.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError) as err:
        load_data(settings("imagefolder", path="pets"))
    assert one_line(err).startswith(f"{pets / 'dog' / '1.png'}: unreadable")


def test_missing_paths_and_settings_that_need_one(roots):
    with pytest.raises(DataNotFound) as err:
        load_data(settings("imagefolder", path="nowhere"))
    assert "'nowhere' not found" in one_line(err) and str(roots / "input" / "nowhere") in str(err.value)
    with pytest.raises(ExperimentError, match="^x.toml: data.path: "):
        validate_settings({"name": "x", "model": {"name": "c5l3"}, "data": {"dataset": "imagefolder"},
                           "training": {"epochs": 1}}, "x.toml")
    with pytest.raises(ExperimentError, match="^x.toml: data.image_shape: "):
        validate_settings({"name": "x", "model": {"name": "c5l3"}, "data": {"dataset": "csv", "path": "a.csv"},
                           "training": {"epochs": 1}}, "x.toml")


def test_normalisation_follows_the_channels_and_image_size_resizes_any_set(roots):
    write_idx_set(roots / "data" / "MNIST" / "raw", 0)
    data = load_data(settings("mnist", image_size=32))  # the (0.5, 0.5, 0.5) default on one channel
    assert data.train_x.shape == (8, 1, 32, 32) and data.train_x.dtype == torch.uint8 and data.mean == (0.5,)
    with pytest.raises(DataError, match=r"data.mean: 3 values .* 1 channel"):
        load_data(settings("mnist", mean=[0.1, 0.2, 0.3], std=[0.5, 0.5, 0.5]))


def test_stratified_split_is_stratified_and_seeded():
    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    keep, held = stratified_split(y, 0.2, seed=1)
    assert y[held].bincount().tolist() == [10, 6, 4] and len(keep) + len(held) == 100
    assert not set(keep.tolist()) & set(held.tolist())
    again, other = stratified_split(y, 0.2, seed=1), stratified_split(y, 0.2, seed=2)
    assert torch.equal(again[1], held) and not torch.equal(other[1], held)


def test_the_expected_shape_matches_what_loads(roots):
    from kagglerun.core.data import expected_shape

    write_cifar100(roots / "input" / "c" / "cifar-100-python")
    s = settings("cifar100", image_size=40)
    data = load_data(s)
    assert expected_shape(s) == (data.channels, data.size, data.num_classes) == (3, 40, 100)
    assert expected_shape(settings("imagefolder", path="x")) is None
    with pytest.raises(DataError, match="square"):
        folder = roots / "data" / "wide"
        folder.mkdir()
        header = "label," + ",".join(f"p{i}" for i in range(12))
        (folder / "train.csv").write_text(header + "\n" + "\n".join(f"{k % 2}," + ",".join(["7"] * 12) for k in range(6)))
        load_data(settings("csv", path="wide", image_shape=[1, 3, 4]))

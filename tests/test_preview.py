"""`kagglerun preview EXP`: originals beside augmented versions, drawn with the experiment's own settings by the
training code, for every data set kagglerun reads (CIFAR-10 and MNIST from tiny files in their official formats,
written here); the report shows the picture once it exists."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from test_data import write_cifar, write_mnist
from test_datasets import write_cifar100, write_png_folder
from test_report import write_run

from kagglerun.cli import main
from kagglerun.experiments import Settings
from kagglerun.report import build_report
from kagglerun.report.load import preview_path
from kagglerun.report.preview import write_preview

DATA = {
    "cifar10": {"color_jitter": True},
    "mnist": {"mean": (0.1307,), "std": (0.3081,), "hflip": False},
    "digits": {"mean": (0.3,), "std": (0.3,), "hflip": False},
    "synthetic": {"synthetic_like": "cifar10", "synthetic_train": 40, "synthetic_test": 10},
}


def settings(dataset: str, **data) -> dict:
    return Settings.model_validate({
        "name": f"p_{dataset}", "model": {"name": "c5l3"},
        "data": {"dataset": dataset, "rotation": 20.0, "translate": 0.15, **DATA.get(dataset, {}), **data},
        "training": {"epochs": 1, "seed": 3},
    }).as_dict()


@pytest.mark.parametrize("dataset", [*DATA, "cifar100", "imagefolder"])
def test_the_augmented_versions_differ_from_the_original_and_from_each_other(tmp_path, dataset, monkeypatch):
    data_dir = tmp_path / "data"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    extra = {}
    if dataset == "cifar10":
        write_cifar(data_dir / "cifar-10-batches-py", n=8)
    elif dataset == "mnist":
        write_mnist(data_dir)
    elif dataset == "cifar100":
        write_cifar100(data_dir / "cifar-100-python")
    elif dataset == "imagefolder":  # the user's own images, one folder per class
        write_png_folder(data_dir / "pets", ["cat", "dog", "eel"], 4, size=(32, 32))
        extra = {"path": "pets", "color_jitter": True}
    drawn = write_preview(settings(dataset, **extra), tmp_path / "p.png", images=3, versions=4, data_dir=data_dir,
                          input_dir=tmp_path / "no-input")
    with Image.open(drawn.path) as image:
        assert image.format == "PNG" and image.width > 300
    assert drawn.augments and drawn.originals.shape[0] == 3 and drawn.augmented.shape[:2] == (3, 4)
    channels = 1 if dataset in ("mnist", "digits") else 3
    assert drawn.originals.shape[1] == channels
    for i in range(3):
        versions = drawn.augmented[i]
        assert all(not np.allclose(v, drawn.originals[i]) for v in versions)
        assert all(not np.allclose(versions[a], versions[b]) for a in range(4) for b in range(a + 1, 4))


def test_the_same_code_and_generator_as_training(tmp_path):
    """The preview's first image is what augment_batch makes of it with the generator of epoch 1."""
    import torch

    from kagglerun.core.augment import augment_batch
    from kagglerun.core.data import load_data
    from kagglerun.core.engine import epoch_seed

    s = settings("digits")
    drawn = write_preview(s, tmp_path / "p.png", images=2, versions=3)
    data = load_data(s)
    first = data.train_x[(data.train_y == 0).nonzero()[0]]
    second = data.train_x[(data.train_y == 1).nonzero()[0]]
    g = torch.Generator().manual_seed(epoch_seed(3, 1))
    expected = augment_batch(torch.cat([first.repeat(3, 1, 1, 1), second.repeat(3, 1, 1, 1)]), g, s["data"])
    assert np.allclose(drawn.augmented.reshape(6, *expected.shape[1:]), expected.clamp(0, 1).numpy())


def test_without_augmentation_the_versions_equal_the_original(tmp_path):
    drawn = write_preview(settings("digits", augment=False), tmp_path / "p.png", images=1, versions=2)
    assert not drawn.augments and np.allclose(drawn.augmented[0][0], drawn.originals[0])


def test_the_cli_writes_it_where_the_report_shows_it(workspace):
    result = CliRunner().invoke(main, ["preview", "tiny", "-n", "2", "--versions", "3"])
    assert result.exit_code == 0, result.output
    path = preview_path(workspace.results, "tiny")
    assert path.is_file() and str(path) in result.output.replace("\n", "")
    write_run(workspace.results, workspace.store().load("tiny").as_dict(), 60.0, 2)
    report = build_report(workspace.results)
    assert (report.out_dir / "figures" / "preview-tiny.png").read_bytes() == path.read_bytes()
    assert "](figures/preview-tiny.png)" in report.markdown.read_text()
    assert 'alt="tiny: augmentation preview"' in report.html.read_text()


@pytest.mark.parametrize(("args", "words"), [
    (["preview", "nope"], "unknown experiment 'nope'"),
    (["preview", "needs_mnist"], "data set 'mnist' not found"),
])
def test_wrong_input_is_one_line(workspace, args, words, monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLERUN_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("KAGGLERUN_INPUT", str(tmp_path / "empty"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    # no download: the test never reaches for the network
    (workspace.experiments / "needs_mnist.toml").write_text('extends = "mnist_base"\n[kaggle]\ninternet = false\n')
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], result.output

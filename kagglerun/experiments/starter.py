'''`kagglerun init [DIR]`: a new workspace: experiments/ with a base file and an example experiment,
models/ with an example model, and a .gitignore for what should not be committed. The example trains at
once (`kagglerun run example --epochs 1`): scikit-learn's digits need no download.'''

from __future__ import annotations

import os
from pathlib import Path

from ..errors import WorkspaceError

BASE = '''\
# Settings shared by the experiments that extend this file ("extends = \\"digits\\""). Every key, its type,
# default and meaning: `kagglerun keys`. The resolved settings of one experiment: `kagglerun show NAME`.

[data]
dataset = "digits"   # scikit-learn's 8x8 digits resized to 28x28 (1,442 train / 355 test): no download
augment = true
rotation = 10.0
hflip = false        # a mirrored digit is another symbol
translate = 0.1
mean = [0.3053]
std = [0.3244]

[training]
optimizer = "adam"
lr = 1e-3
epochs = 5
batch_size = 64
seed = 0

[kaggle]
gpu = true
internet = false
'''

EXAMPLE = '''\
description = "The example model of models/small_cnn.py on scikit-learn's digits"
extends = "digits"   # experiments/bases/digits.toml

[model]
name = "small_cnn"          # models/small_cnn.py; or "torchvision:resnet18", or a built-in such as "c5l3"
args = { channels = 16 }    # keyword arguments of its build()

[report]
group = "Examples"
label = "small CNN"
'''

MODEL = '''\
"""An example model: two convolution blocks, each halving the image, and a linear head.

kagglerun calls build(in_channels, image_size, num_classes, **model.args) and trains the module it returns;
the file is copied into the notebook as it is, so it may import only the standard library and torch (and
torchvision). render builds it once on the CPU and checks its output on a dummy batch.
"""

from torch import nn


def build(in_channels: int, image_size: int, num_classes: int, channels: int = 16) -> nn.Module:
    side = image_size // 4  # after two 2x2 poolings
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.BatchNorm2d(2 * channels), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * channels * side * side, num_classes),
    )
'''

GITIGNORE = '''\
# rendered notebooks: made again by `kagglerun render`
build/
# checkpoints are large; history, summaries, curves and the ledger are worth committing
results/**/checkpoint_*.pt
results/**/*.ipynb
results/.previous/
# local data sets and inputs
data/
input/
'''

FILES = {
    "experiments/bases/digits.toml": BASE,
    "experiments/example.toml": EXAMPLE,
    "models/small_cnn.py": MODEL,
    ".gitignore": GITIGNORE,
}


def init_workspace(folder: Path) -> list[Path]:
    """Write a new workspace into `folder` (made if missing); refuses a folder that already has
    experiments/ or models/ files, so nothing on disk is overwritten. Returns the files written."""
    folder = Path(folder)
    taken = [folder / rel for rel in FILES if (folder / rel).exists()]
    for sub in ("experiments", "models"):
        if (folder / sub).is_dir() and any((folder / sub).iterdir()):
            taken.append(folder / sub)
    if taken:
        raise WorkspaceError(f"{taken[0]}: already exists; kagglerun init makes a new workspace and overwrites nothing")
    written = []
    for rel, text in FILES.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
        written.append(path)
    return written

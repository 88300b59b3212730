"""`kagglerun preview EXP`: a picture of N images of the experiment's data set, each original beside several
augmented versions drawn with the experiment's own settings by the code that trains (core/augment.py's
`augment_batch`, with the generator of its first epoch), from the data set as core/data.py loads it."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.augment import augment_batch, augments
from ..core.data import DataError, DataNotFound, load_data
from ..core.engine import epoch_seed
from ..core.per_class import class_names
from ..errors import WorkspaceError
from .figures import literal, new_figure
from .files import write


@dataclass(frozen=True)
class Preview:
    """What `write_preview` drew: the file, the originals [N, C, H, W] and the augmented [N, K, C, H, W]
    (floats in [0, 1]), and whether the settings augment at all."""

    path: Path
    originals: np.ndarray
    augmented: np.ndarray
    augments: bool


def _pick(labels: torch.Tensor, n: int, num_classes: int) -> list[int]:
    """n training images, one per class in turn (the first of each), so the picture shows the classes."""
    chosen: list[int] = []
    for i in range(n):
        wanted = (labels == i % num_classes).nonzero().flatten().tolist()
        index = next((j for j in wanted if j not in chosen), None)
        if index is None:  # a class short of images: the next unused one
            index = next(j for j in range(len(labels)) if j not in chosen)
        chosen.append(index)
    return chosen


DATA_ENV, INPUT_ENV = "KAGGLERUN_DATA", "KAGGLERUN_INPUT"  # what core/data.py reads (notebook/execute.py sets them)


@contextlib.contextmanager
def _data_env(data_dir: Path | None, input_dir: Path | None) -> Iterator[None]:
    """Where core/data.py looks, as for a local run (notebook/run.py): the workspace's data and input folders."""
    saved = {k: os.environ.get(k) for k in (DATA_ENV, INPUT_ENV)}
    for key, value in ((DATA_ENV, data_dir), (INPUT_ENV, input_dir)):
        if value is not None:
            os.environ[key] = str(value)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def write_preview(settings: dict[str, Any], out: Path, images: int = 4, versions: int = 5, *,
                  data_dir: Path | None = None, input_dir: Path | None = None) -> Preview:
    """Draw `images` originals, each beside `versions` augmented copies, into the PNG `out`; the data set is
    looked for in `data_dir` and `input_dir` first (else where core/data.py looks). A data set found nowhere
    is a WorkspaceError naming the experiment and the places looked at."""
    with _data_env(data_dir, input_dir):
        try:
            data = load_data(settings)
        except (DataNotFound, DataError) as e:
            raise WorkspaceError(f"preview {settings['name']}: {e}") from None
        except (OSError, RuntimeError) as e:  # kaggle.internet: torchvision's download failed (no network here?)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise WorkspaceError(f"preview {settings['name']}: data set {settings['data']['dataset']!r} not found "
                                 f"locally, and downloading it failed: {first}") from None
    images = min(images, len(data.train_y))
    index = _pick(data.train_y, images, data.num_classes)
    originals = data.train_x[index]  # uint8 [N, C, H, W]
    g = torch.Generator().manual_seed(epoch_seed(settings["training"]["seed"], 1))
    drawn = augment_batch(originals.repeat_interleave(versions, 0), g, settings["data"])
    augmented = drawn.clamp(0, 1).view(images, versions, *originals.shape[1:]).numpy()
    plain = originals.float().div(255).numpy()
    names = class_names(data)
    fig = new_figure(1.3 * (versions + 1), 1.35 * images + 0.5, dpi=100)
    axes = np.atleast_2d(fig.subplots(images, versions + 1, squeeze=False))
    grey = data.channels == 1
    for i in range(images):
        row = [plain[i], *augmented[i]]
        for j, image in enumerate(row):
            ax = axes[i, j]
            pixels = image[0] if grey else np.transpose(image, (1, 2, 0))
            ax.imshow(pixels, cmap="gray" if grey else None, vmin=0.0, vmax=1.0, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title("original" if j == 0 else f"augmented {j}", fontsize=8)
        axes[i, 0].set_ylabel(literal(names[int(data.train_y[index[i]])]), fontsize=8)
    d = settings["data"]
    what = "no augmentation (data.augment and data.color_jitter are off)" if not augments(d) else ", ".join(
        part for part in (
            f"rotation ±{d['rotation']:g}°" if d["augment"] and d["rotation"] else "",
            "horizontal flip" if d["augment"] and d["hflip"] else "",
            f"translate {d['translate']:g}" if d["augment"] and d["translate"] else "",
            f"colour jitter ({d['brightness']:g}, {d['contrast']:g}, {d['saturation']:g}, {d['hue']:g})"
            if d["color_jitter"] else "") if part)
    fig.suptitle(literal(f"{settings['name']}: {data.name}, {what}"), fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    out.parent.mkdir(parents=True, exist_ok=True)
    write(out, buf.getvalue())
    return Preview(out, plain, augmented, augments(d))

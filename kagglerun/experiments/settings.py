"""The settings model: one typed, frozen object per experiment that rejects unknown keys and wrong types."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..core.contract import settings_hash
from ..errors import ExperimentError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class ModelSettings(_Section):
    """The network: architecture, normalisation and regularisation."""

    name: Literal["c5l3", "vgg16", "resnet18", "resnet50"]
    batchnorm: bool = False
    dropout: Literal["none", "linear", "all"] = "none"  # where dropout layers go
    conv_dropout: float = Field(0.3, ge=0.0, lt=1.0)  # rate after the conv blocks (dropout = "all")
    linear_dropout: float = Field(0.5, ge=0.0, lt=1.0)  # rate after hidden linear layers
    width: float = Field(1.0, gt=0.0, le=4.0)  # multiplies every channel count, for small runs


class DataSettings(_Section):
    """The data set, its augmentation and its normalisation."""

    # Official files (attached input, data folder, or a download with internet), or a user's own:
    # "imagefolder" (data.path: one sub-folder per class) and "csv" (data.path: a pixel table).
    dataset: Literal["cifar10", "cifar100", "mnist", "fashion_mnist", "kmnist", "svhn", "digits", "synthetic",
                     "imagefolder", "csv"]
    path: str | None = None  # imagefolder / csv: a folder or file; relative ones are looked up in inputs and data
    label_column: str = "label"  # csv: the column holding the class
    image_shape: tuple[int, int, int] | None = None  # csv: [C, H, W] of the pixel columns
    image_size: int | None = Field(None, ge=4, le=1024)  # resize every image to image_size x image_size
    test_split: float = Field(0.2, gt=0.0, lt=1.0)  # imagefolder / csv without a test set: stratified holdout
    val_split: float = Field(0.0, ge=0.0, lt=1.0)  # stratified fraction of train held out for validation
    synthetic_like: Literal["cifar10", "mnist"] = "cifar10"  # shape of the synthetic tensors
    synthetic_train: int = Field(2048, ge=1)
    synthetic_test: int = Field(512, ge=1)
    train_limit: int | None = Field(None, ge=1)  # use only the first N training images
    test_limit: int | None = Field(None, ge=1)
    # The seed's base augmentation: RandomRotation, RandomHorizontalFlip, RandomAffine(translate).
    augment: bool = True
    rotation: float = Field(15.0, ge=0.0, le=180.0)  # degrees
    hflip: bool = True
    translate: float = Field(0.1, ge=0.0, lt=0.5)  # fraction of width and height
    # The seed's "extra" augmentation: ColorJitter(0.2, 0.2, 0.2, 0.1).
    color_jitter: bool = False
    brightness: float = Field(0.2, ge=0.0, le=1.0)
    contrast: float = Field(0.2, ge=0.0, le=1.0)
    saturation: float = Field(0.2, ge=0.0, le=1.0)
    hue: float = Field(0.1, ge=0.0, le=0.5)
    mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    std: tuple[float, ...] = (0.5, 0.5, 0.5)

    @model_validator(mode="after")
    def _std_positive(self) -> DataSettings:
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be positive")
        if len(self.mean) != len(self.std):
            raise ValueError("mean and std must have the same length")
        return self


class TrainingSettings(_Section):
    """Optimisation: optimizer, schedule, length, precision and where it runs."""

    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(3e-4, gt=0.0, le=10.0)
    weight_decay: float = Field(0.0, ge=0.0, le=1.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)  # SGD only
    nesterov: bool = False  # SGD only
    betas: tuple[float, float] = (0.9, 0.999)  # Adam and AdamW only
    # cosine: CosineAnnealingLR per epoch, or with warmup_epochs a linear warmup then cosine, per step;
    # onecycle: OneCycleLR per step up to lr (its warm phase warmup_epochs long, else 30 % of the run)
    lr_schedule: Literal["none", "cosine", "step", "onecycle"] = "none"
    warmup_epochs: float = Field(0.0, ge=0.0)  # cosine and onecycle only
    step_size: int = Field(30, ge=1)  # epochs between decays (lr_schedule = "step")
    gamma: float = Field(0.1, gt=0.0, le=1.0)
    epochs: int = Field(ge=1, le=10_000)
    batch_size: int = Field(64, ge=1, le=65_536)
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)  # of the training loss (test loss stays plain)
    grad_clip_norm: float | None = Field(None, gt=0.0)  # clip the global gradient norm to this
    early_stopping_patience: int | None = Field(None, ge=1)  # epochs without a better val acc (needs val_split)
    seed: int = Field(0, ge=0)
    device: Literal["auto", "cuda", "cpu"] = "auto"
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"  # auto: fp16 on T4, bf16 on Ampere+
    channels_last: bool = True
    compile: bool = False  # torch.compile
    time_budget_minutes: float = Field(690.0, gt=0.0)  # stop cleanly, with a checkpoint, before Kaggle's 12 h


class KaggleSettings(_Section):
    """How the kernel is pushed to Kaggle."""

    slug: str | None = None  # defaults to "kagglerun-<experiment>" with '_' as '-'
    title: str | None = None  # defaults to the slug with '-' as ' '; must slugify to the slug
    owner: str | None = None  # Kaggle user; defaults to the credentials' username
    gpu: bool = True
    machine_shape: str = "NvidiaTeslaT4"
    internet: bool = False
    dataset_sources: tuple[str, ...] = ()
    kernel_sources: tuple[str, ...] = ()
    competition_sources: tuple[str, ...] = ()
    private: bool = True

    @model_validator(mode="after")
    def _slug_shape(self) -> KaggleSettings:
        if self.slug is not None and not re.fullmatch(r"[a-z0-9][a-z0-9-]{3,48}[a-z0-9]", self.slug):
            raise ValueError("slug must be 5-50 characters of a-z, 0-9 and '-'")
        return self


class ReportSettings(_Section):
    """Where the experiment appears in the comparison report."""

    group: str = ""  # experiments with the same group share a table and an overlay plot
    also: tuple[str, ...] = ()  # further groups whose tables show this experiment too
    label: str = ""  # the column title in the group's table (defaults to the experiment name)
    order: int = 0  # column order inside the group


class Settings(_Section):
    """One experiment, fully resolved (after `extends`)."""

    name: str
    description: str = ""
    engine: Literal["torch", "scratch"] = "torch"
    model: ModelSettings
    data: DataSettings
    training: TrainingSettings
    kaggle: KaggleSettings = KaggleSettings()
    report: ReportSettings = ReportSettings()

    @property
    def slug(self) -> str:
        return self.kaggle.slug or "kagglerun-" + self.name.replace("_", "-")

    @property
    def title(self) -> str:
        return self.kaggle.title or self.slug.replace("-", " ")

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain JSON data: what the notebook receives."""
        return json.loads(self.model_dump_json())

    @property
    def hash(self) -> str:
        return settings_hash(self.as_dict())

    def with_overrides(self, **dotted: Any) -> Settings:
        """A copy with `section.key` values replaced, validated again (for quick local runs)."""
        data = self.as_dict()
        for key, value in dotted.items():
            section, _, field = key.partition(".")
            data[section][field] = value
        return validate_settings(data, f"overrides for {self.name}")


def combination_problems(s: Settings) -> list[tuple[str, str]]:
    """Keys whose value is valid alone but not with the others: (dotted key, what is wrong), in file order."""
    d, t = s.data, s.training
    problems: list[tuple[str, str]] = []
    if d.dataset in ("imagefolder", "csv") and not d.path:
        problems.append(("data.path", f"dataset {d.dataset!r} needs data.path (a folder or file of your data)"))
    if d.dataset == "csv" and d.image_shape is None:
        problems.append(("data.image_shape", "dataset 'csv' needs data.image_shape = [C, H, W]"))
    if d.image_shape is not None and min(d.image_shape) < 1:
        problems.append(("data.image_shape", f"every dimension must be at least 1, got {list(d.image_shape)}"))
    if t.nesterov and (t.optimizer != "sgd" or t.momentum <= 0):
        problems.append(("training.nesterov", "needs optimizer = 'sgd' and momentum > 0"))
    if t.warmup_epochs and t.lr_schedule not in ("cosine", "onecycle"):
        problems.append(("training.warmup_epochs", f"only with lr_schedule 'cosine' or 'onecycle', not {t.lr_schedule!r}"))
    if t.warmup_epochs >= t.epochs:
        problems.append(("training.warmup_epochs", f"must be less than training.epochs ({t.epochs})"))
    if t.early_stopping_patience is not None and not d.val_split:
        problems.append(("training.early_stopping_patience", "needs data.val_split > 0 (it watches validation accuracy)"))
    if s.engine == "scratch":
        lacking = {"training.optimizer": t.optimizer == "adamw", "training.nesterov": t.nesterov,
                   "training.lr_schedule": t.lr_schedule == "onecycle", "training.warmup_epochs": bool(t.warmup_epochs),
                   "training.label_smoothing": bool(t.label_smoothing), "training.grad_clip_norm": t.grad_clip_norm is not None}
        for key, used in lacking.items():
            if used:
                value = getattr(t, key.split(".")[1])
                problems.append((key, f"{value!r} is not available with engine = 'scratch' (use engine = 'torch')"))
    return problems


def validate_settings(data: dict[str, Any], source: str) -> Settings:
    try:
        # JSON mode keeps strict typing (no "150" for 150) while accepting arrays as tuples and ints as floats.
        settings = Settings.model_validate_json(json.dumps(data, default=str))
    except ValidationError as e:
        err = e.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif err["type"] == "literal_error":
            msg = f"{msg}, got {err.get('input')!r}"
        more = f" (and {len(e.errors()) - 1} more)" if len(e.errors()) > 1 else ""
        raise ExperimentError(f"{source}: {key}: {msg}{more}") from None
    problems = combination_problems(settings)
    if problems:
        key, msg = problems[0]
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ExperimentError(f"{source}: {key}: {msg}{more}")
    return settings

"""The settings model: one typed, frozen object per experiment that rejects unknown keys and wrong types.

Every key carries its meaning as a Field description: `kagglerun keys` lists them from this model itself."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..core.contract import full_settings_hash, settings_hash
from ..errors import ExperimentError

BUILTIN_MODELS = ("c5l3", "vgg16", "resnet18", "resnet50")
SCRATCH_MODELS = ("c5l3", "resnet18")  # what the from-scratch engine builds
TORCHVISION_PREFIX = "torchvision:"
MODEL_NAME_PATTERN = r"^(torchvision:)?[A-Za-z_][A-Za-z0-9_]*$"


def _d(text: str, **kw: Any) -> Any:
    """A Field with its one line of meaning (shorthand for the many fields below)."""
    return Field(description=text, **kw)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class ModelSettings(_Section):
    """The network: architecture, normalisation and regularisation."""

    name: str = Field(pattern=MODEL_NAME_PATTERN, json_schema_extra={"allowed": "NAME or torchvision:NAME"}, description=(
        "the network: a workspace model (models/NAME.py, wins over a built-in of that name), "
        "'torchvision:NAME' (any torchvision classifier) or a built-in: " + ", ".join(BUILTIN_MODELS)))
    args: dict[str, Any] = Field(default_factory=dict, description=(
        "keyword arguments for a workspace model's build() or torchvision's constructor (a TOML table)"))
    pretrained: bool = _d("torchvision models: load ImageNet weights (an attached input, else a download)",
                          default=False)
    batchnorm: bool = _d("built-in models: BatchNorm after each conv", default=False)
    dropout: Literal["none", "linear", "all"] = _d("built-in models: where dropout layers go", default="none")
    conv_dropout: float = _d("rate after the conv blocks (dropout = 'all')", default=0.3, ge=0.0, lt=1.0)
    linear_dropout: float = _d("rate after hidden linear layers", default=0.5, ge=0.0, lt=1.0)
    width: float = _d("built-in models: multiplies every channel count, for small runs", default=1.0, gt=0.0, le=4.0)


class DataSettings(_Section):
    """The data set, its augmentation and its normalisation."""

    # Official files (attached input, data folder, or a download with internet), or a user's own:
    # "imagefolder" (data.path: one sub-folder per class) and "csv" (data.path: a pixel table).
    dataset: Literal["cifar10", "cifar100", "mnist", "fashion_mnist", "kmnist", "svhn", "digits", "synthetic",
                     "imagefolder", "csv"] = _d("the data set: official files, your own (imagefolder, csv) or generated")
    path: str | None = _d("imagefolder / csv: a folder or file; relative ones are looked up in inputs and data",
                          default=None)
    label_column: str = _d("csv: the column holding the class", default="label")
    image_shape: tuple[int, int, int] | None = _d("csv: [C, H, W] of the pixel columns", default=None)
    image_size: int | None = _d("resize every image to image_size x image_size", default=None, ge=4, le=1024)
    test_split: float = _d("imagefolder / csv without a test set: stratified holdout", default=0.2, gt=0.0, lt=1.0)
    val_split: float = _d("stratified fraction of train held out for validation (chooses the best epoch)",
                          default=0.0, ge=0.0, lt=1.0)
    synthetic_like: Literal["cifar10", "mnist"] = _d("shape of the synthetic tensors", default="cifar10")
    synthetic_train: int = _d("synthetic training images", default=2048, ge=1)
    synthetic_test: int = _d("synthetic test images", default=512, ge=1)
    train_limit: int | None = _d("use only the first N training images", default=None, ge=1)
    test_limit: int | None = _d("use only the first N test images", default=None, ge=1)
    # The seed's base augmentation: RandomRotation, RandomHorizontalFlip, RandomAffine(translate).
    augment: bool = _d("the seed's base augmentation (rotation, flip, shift) on training images", default=True)
    rotation: float = _d("largest random rotation, in degrees", default=15.0, ge=0.0, le=180.0)
    hflip: bool = _d("random horizontal flips", default=True)
    translate: float = _d("largest random shift, as a fraction of width and height", default=0.1, ge=0.0, lt=0.5)
    # The seed's "extra" augmentation: ColorJitter(0.2, 0.2, 0.2, 0.1).
    color_jitter: bool = _d("the seed's extra augmentation: colour jitter", default=False)
    brightness: float = _d("colour jitter: brightness factor range", default=0.2, ge=0.0, le=1.0)
    contrast: float = _d("colour jitter: contrast factor range", default=0.2, ge=0.0, le=1.0)
    saturation: float = _d("colour jitter: saturation factor range", default=0.2, ge=0.0, le=1.0)
    hue: float = _d("colour jitter: hue shift range", default=0.1, ge=0.0, le=0.5)
    mean: tuple[float, ...] = _d("per-channel normalisation mean (one value serves every channel)",
                                 default=(0.5, 0.5, 0.5))
    std: tuple[float, ...] = _d("per-channel normalisation standard deviation, positive", default=(0.5, 0.5, 0.5))

    @model_validator(mode="after")
    def _std_positive(self) -> DataSettings:
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be positive")
        if len(self.mean) != len(self.std):
            raise ValueError("mean and std must have the same length")
        return self


class TrainingSettings(_Section):
    """Optimisation: optimizer, schedule, length, precision and where it runs."""

    optimizer: Literal["adam", "adamw", "sgd"] = _d("the optimizer", default="adam")
    lr: float = _d("learning rate (onecycle: its peak)", default=3e-4, gt=0.0, le=10.0)
    weight_decay: float = _d("weight decay (L2 for adam and sgd, decoupled for adamw)", default=0.0, ge=0.0, le=1.0)
    momentum: float = _d("SGD only: momentum", default=0.9, ge=0.0, lt=1.0)
    nesterov: bool = _d("SGD only: Nesterov momentum", default=False)
    betas: tuple[float, float] = _d("Adam and AdamW only: beta1, beta2", default=(0.9, 0.999))
    # cosine: CosineAnnealingLR per epoch, or with warmup_epochs a linear warmup then cosine, per step;
    # onecycle: OneCycleLR per step up to lr (its warm phase warmup_epochs long, else 30 % of the run)
    lr_schedule: Literal["none", "cosine", "step", "onecycle"] = _d(
        "learning-rate schedule: cosine (with warmup_epochs: linear warmup, per step), step, onecycle", default="none")
    warmup_epochs: float = _d("cosine and onecycle only: epochs of linear warmup", default=0.0, ge=0.0)
    step_size: int = _d("epochs between decays (lr_schedule = 'step')", default=30, ge=1)
    gamma: float = _d("decay factor (lr_schedule = 'step')", default=0.1, gt=0.0, le=1.0)
    epochs: int = _d("epochs to train (raising it continues a finished run)", ge=1, le=10_000)
    batch_size: int = _d("training batch size", default=64, ge=1, le=65_536)
    label_smoothing: float = _d("of the training loss (test loss stays plain)", default=0.0, ge=0.0, lt=1.0)
    grad_clip_norm: float | None = _d("clip the global gradient norm to this", default=None, gt=0.0)
    early_stopping_patience: int | None = _d("epochs without a better val acc before stopping (needs val_split)",
                                             default=None, ge=1)
    seed: int = _d("seeds weights, shuffling, augmentation and the splits", default=0, ge=0)
    device: Literal["auto", "cuda", "cpu"] = _d("where to train; auto: a GPU when there is one", default="auto")
    devices: int | Literal["all"] = _d(
        "processes training this experiment data-parallel, one per GPU ('all': every GPU); the effective batch "
        "stays batch_size, each process taking batch_size / devices; with device = 'cpu', gloo processes",
        default=1)
    precision: Literal["auto", "fp32", "fp16", "bf16"] = _d("auto: fp16 on T4, bf16 on Ampere+, fp32 on a CPU",
                                                            default="auto")
    channels_last: bool = _d("channels-last memory format on a GPU", default=True)
    compile: bool = _d("torch.compile the model", default=False)
    time_budget_minutes: float = _d("stop cleanly, with a checkpoint, before Kaggle's 12 h", default=690.0, gt=0.0)

    @field_validator("devices", mode="before")
    @classmethod
    def _devices_shape(cls, value: Any) -> Any:
        if value != "all" and (not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 64):
            raise ValueError(f"must be a number of processes from 1 to 64, or \"all\"; got {value!r}")
        return value


class KaggleSettings(_Section):
    """How the kernel is pushed to Kaggle."""

    slug: str | None = _d("defaults to 'kagglerun-<experiment>' with '_' as '-'", default=None)
    title: str | None = _d("defaults to the slug with '-' as ' '; must slugify to the slug", default=None)
    owner: str | None = _d("Kaggle user; defaults to the credentials' username", default=None)
    gpu: bool = _d("run on a GPU", default=True)
    machine_shape: str = _d("Kaggle's machine, e.g. NvidiaTeslaT4 (T4 x2 for packs)", default="NvidiaTeslaT4")
    internet: bool = _d("the kernel may download (data sets, pretrained weights)", default=False)
    dataset_sources: tuple[str, ...] = _d("Kaggle data sets attached as inputs, 'owner/slug'", default=())
    kernel_sources: tuple[str, ...] = _d("other kernels' outputs attached as inputs, 'owner/slug'", default=())
    competition_sources: tuple[str, ...] = _d("competitions attached as inputs, by slug", default=())
    model_sources: tuple[str, ...] = _d(
        "Kaggle models attached as inputs (e.g. pretrained weights), 'owner/model/framework/instance/version'",
        default=())
    private: bool = _d("the kernel is private", default=True)

    @model_validator(mode="after")
    def _slug_shape(self) -> KaggleSettings:
        if self.slug is not None and not re.fullmatch(r"[a-z0-9][a-z0-9-]{3,48}[a-z0-9]", self.slug):
            raise ValueError("slug must be 5-50 characters of a-z, 0-9 and '-'")
        bad = [m for m in self.model_sources if m.count("/") != 4 or not all(m.split("/"))]
        if bad:
            raise ValueError(f"model_sources: {bad[0]!r} is not 'owner/model/framework/instance/version'")
        return self


class ReportSettings(_Section):
    """Where the experiment appears in the comparison report."""

    group: str = _d("experiments with the same group share a table and an overlay plot", default="")
    also: tuple[str, ...] = _d("further groups whose tables show this experiment too", default=())
    label: str = _d("the column title in the group's table (defaults to the experiment name)", default="")
    order: int = _d("column order inside the group", default=0)


class Settings(_Section):
    """One experiment, fully resolved (after `extends`)."""

    name: str = _d("the experiment: its file name")
    description: str = _d("one line on what the experiment tries", default="")
    engine: Literal["torch", "scratch"] = _d("torch: the PyTorch core; scratch: the from-scratch NumPy engine",
                                             default="torch")
    model: ModelSettings
    data: DataSettings
    training: TrainingSettings
    kaggle: KaggleSettings = KaggleSettings()
    report: ReportSettings = ReportSettings()

    @model_validator(mode="after")
    def _model_fits(self) -> Settings:
        m = self.model
        torchvision = m.name.startswith(TORCHVISION_PREFIX)
        if m.pretrained and not torchvision:
            raise ValueError("model.pretrained: only torchvision models ('torchvision:NAME') come with pretrained weights")
        if self.engine == "scratch" and (torchvision or m.pretrained):
            raise ValueError(f"engine: the scratch engine builds only its own {' and '.join(SCRATCH_MODELS)}, "
                             f"not {m.name!r}{' (pretrained)' if m.pretrained else ''}; use engine = 'torch'")
        return self

    @property
    def slug(self) -> str:
        """kaggle.slug, else "kagglerun-<name>" with '_' (and a sweep point's '.') as '-'; a name too long for
        Kaggle's 50 characters keeps its start and ends in 8 hex digits of its hash."""
        if self.kaggle.slug:
            return self.kaggle.slug
        name = self.name.replace("_", "-") if re.fullmatch(r"[a-z0-9_]+", self.name) else \
            re.sub(r"[^a-z0-9]+", "-", self.name).strip("-")
        slug = "kagglerun-" + name
        if len(slug) > 50:
            digest = hashlib.sha256(self.name.encode()).hexdigest()[:8]
            slug = slug[:41].rstrip("-") + "-" + digest
        return slug

    @property
    def title(self) -> str:
        return self.kaggle.title or self.slug.replace("-", " ")

    def as_dict(self) -> dict[str, Any]:
        """The settings as plain JSON data: what the notebook receives."""
        return json.loads(self.model_dump_json())

    @property
    def hash(self) -> str:
        """What decides whether the experiment changed: its settings less `description` and `report`."""
        return settings_hash(self.as_dict())

    @property
    def full_hash(self) -> str:
        """The hash of every setting, presentation included (what older ledgers recorded)."""
        return full_settings_hash(self.as_dict())

    def with_overrides(self, **dotted: Any) -> Settings:
        """A copy with `section.key` values replaced, validated again (for quick local runs)."""
        data = self.as_dict()
        for key, value in dotted.items():
            section, _, field = key.partition(".")
            data[section][field] = value
        return validate_settings(data, f"overrides for {self.name}")


def _problem(err: Any) -> str:
    """One validation error as 'dotted.key: what is wrong'."""
    key = ".".join(str(p) for p in err["loc"]) or "(top level)"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
    elif err["type"] == "missing":
        msg = "required key is missing"
    elif err["type"] == "literal_error":
        msg = f"{msg}, got {err.get('input')!r}"
    elif err["type"] == "string_pattern_mismatch":
        msg = f"{err.get('input')!r} is not a model name (NAME, torchvision:NAME)"
    elif err["type"] == "value_error":  # a model validator's message may start with the key it is about
        msg = msg.removeprefix("Value error, ")
        named = re.match(r"([a-z_]+(?:\.[a-z_]+)*): (.*)", msg, re.S)
        if named:
            key = named[1] if key == "(top level)" else f"{key}.{named[1]}"
            msg = named[2]
    return f"{key}: {msg}"


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
    if isinstance(t.devices, int) and t.batch_size % t.devices:
        problems.append(("training.devices", f"{t.devices} does not divide training.batch_size {t.batch_size} "
                                             "(each process takes batch_size / devices images a step)"))
    if t.devices != 1 and s.engine != "torch":
        problems.append(("training.devices", f"{t.devices!r}: the {s.engine} engine trains on one device"))
    if t.devices != 1 and t.device != "cpu" and not s.kaggle.gpu:
        problems.append(("training.devices", f"{t.devices!r} needs GPUs: set kaggle.gpu = true (or training.device "
                                             "= 'cpu' for processes on the CPU)"))
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
    """Validated settings, or an ExperimentError listing every problem of `source`, one line each."""
    try:
        # JSON mode keeps strict typing (no "150" for 150) while accepting arrays as tuples and ints as floats.
        settings = Settings.model_validate_json(json.dumps(data, default=str))
    except ValidationError as e:
        raise ExperimentError("\n".join(f"{source}: {_problem(err)}" for err in e.errors())) from None
    problems = combination_problems(settings)
    if problems:
        raise ExperimentError("\n".join(f"{source}: {key}: {msg}" for key, msg in problems))
    return settings

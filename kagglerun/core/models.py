"""The networks: the seed's (C5L3, VGG16-BN with a CIFAR head, ResNet18/50 with the CIFAR stem), a
workspace's own (models/NAME.py, written by the notebook as `<payload>/models/NAME.py`) and torchvision's
classifiers (`torchvision:NAME`, adapted to the data's channels and classes, ImageNet weights optional).

Every model takes (channels, size) of the data set, so the same definitions serve CIFAR-10 (3x32x32),
MNIST and digits (1x28x28). `width` multiplies every channel count for small, fast runs.
Part of the training core: torch only (torchvision lazily).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from .data import input_root

TORCHVISION_PREFIX = "torchvision:"
# A workspace's models, beside this core in the payload: kagglerun_payload.models in a notebook
WORKSPACE_PACKAGE = __name__.rsplit(".", 2)[0] + ".models"


class ModelError(ValueError):
    """A model cannot be built: the message is one line naming the model file or the torchvision model."""


def _ch(n: int, width: float) -> int:
    return max(1, int(round(n * width)))


def _pooled(size: int, pools: int, ceil: bool = False) -> int:
    for _ in range(pools):
        size = -(-size // 2) if ceil else size // 2
    return size


class C5L3(nn.Module):
    """5 conv (3x3, pad 1; max-pool after conv 1, 2 and 5) + 3 hidden linear layers: 7.28 M params on CIFAR-10.

    batchnorm: BatchNorm2d after each conv. dropout: "all" puts Dropout(conv_rate) after each pooled
    conv block and Dropout(linear_rate) after each hidden linear layer; "linear" only the latter."""

    def __init__(self, channels: int, size: int, num_classes: int, m: dict[str, Any]):
        super().__init__()
        w, bn, placement = m["width"], m["batchnorm"], m["dropout"]
        widths = [_ch(c, w) for c in (128, 256, 512, 512, 256)]
        pool_after = {0, 1, 4}
        layers: list[nn.Module] = []
        c_in = channels
        for i, c_out in enumerate(widths):
            layers.append(nn.Conv2d(c_in, c_out, 3, padding=1))
            if bn:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU(inplace=True))
            if i in pool_after:
                layers.append(nn.MaxPool2d(2))
                if placement == "all":
                    layers.append(nn.Dropout(m["conv_dropout"]))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        flat = widths[-1] * _pooled(size, 3) ** 2
        hidden = [_ch(c, w) for c in (512, 256, 128)]
        head: list[nn.Module] = [nn.Flatten()]
        f_in = flat
        for f_out in hidden:
            head += [nn.Linear(f_in, f_out), nn.ReLU(inplace=True)]
            if placement in ("all", "linear"):
                head.append(nn.Dropout(m["linear_dropout"]))
            f_in = f_out
        head.append(nn.Linear(f_in, num_classes))
        self.classifier = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class VGG16(nn.Module):
    """VGG16 with BatchNorm and a CIFAR head (512 -> 512 -> 512 -> classes, dropout in the classifier).

    Pools use ceil mode so 28x28 inputs reach 1x1 as 32x32 ones do."""

    CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")

    def __init__(self, channels: int, size: int, num_classes: int, m: dict[str, Any]):
        super().__init__()
        layers: list[nn.Module] = []
        c_in = channels
        for v in self.CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
                continue
            c_out = _ch(int(v), m["width"])
            layers.append(nn.Conv2d(c_in, c_out, 3, padding=1))
            if m["batchnorm"]:
                layers.append(nn.BatchNorm2d(c_out))
            layers.append(nn.ReLU(inplace=True))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        flat = c_in * _pooled(size, 5, ceil=True) ** 2
        hidden = _ch(512, m["width"])
        drop = m["linear_dropout"] if m["dropout"] in ("linear", "all") else 0.0
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, hidden), nn.ReLU(inplace=True), nn.Dropout(drop),
            nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(drop),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _norm(c: int, bn: bool) -> nn.Module:
    return nn.BatchNorm2d(c) if bn else nn.Identity()


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, c: int, stride: int, bn: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c, 3, stride, 1, bias=not bn)
        self.bn1 = _norm(c, bn)
        self.conv2 = nn.Conv2d(c, c, 3, 1, 1, bias=not bn)
        self.bn2 = _norm(c, bn)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c, 1, stride, bias=not bn), _norm(c, bn))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, c: int, stride: int, bn: bool):
        super().__init__()
        out = c * self.expansion
        self.conv1 = nn.Conv2d(c_in, c, 1, bias=not bn)
        self.bn1 = _norm(c, bn)
        self.conv2 = nn.Conv2d(c, c, 3, stride, 1, bias=not bn)
        self.bn2 = _norm(c, bn)
        self.conv3 = nn.Conv2d(c, out, 1, bias=not bn)
        self.bn3 = _norm(out, bn)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, out, 1, stride, bias=not bn), _norm(out, bn))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + self.shortcut(x))


class ResNet(nn.Module):
    """ResNet with the CIFAR stem: one 3x3 stride-1 conv, no max-pool; four stages; global average pool."""

    def __init__(self, block, depths: tuple[int, ...], channels: int, num_classes: int, m: dict[str, Any]):
        super().__init__()
        bn, w = m["batchnorm"], m["width"]
        c = _ch(64, w)
        self.stem = nn.Sequential(nn.Conv2d(channels, c, 3, 1, 1, bias=not bn), _norm(c, bn), nn.ReLU(inplace=True))
        stages: list[nn.Module] = []
        c_in = c
        for i, depth in enumerate(depths):
            c_stage = _ch(64 * 2**i, w)
            for j in range(depth):
                stages.append(block(c_in, c_stage, 2 if (i > 0 and j == 0) else 1, bn))
                c_in = c_stage * block.expansion
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)))


def workspace_module(name: str) -> ModuleType | None:
    """The workspace model `name` the payload carries (<payload>/models/NAME.py), or None."""
    if not name.isidentifier():  # torchvision:NAME, never a file
        return None
    try:
        spec = importlib.util.find_spec(f"{WORKSPACE_PACKAGE}.{name}")
    except ModuleNotFoundError:  # no models/ package: this payload carries no workspace model
        return None
    return importlib.import_module(spec.name) if spec is not None else None


def workspace_model_hash(name: str) -> str:
    """Hash of the workspace model file `name` (empty for other models): part of what a checkpoint must match."""
    module = workspace_module(name)
    if module is None or not getattr(module, "__file__", None):
        return ""
    return hashlib.sha256(Path(str(module.__file__)).read_bytes()).hexdigest()[:16]


def build_workspace_model(module: ModuleType, where: str, channels: int, size: int, num_classes: int,
                          args: dict[str, Any]) -> nn.Module:
    """`build(in_channels, image_size, num_classes, **args)` of a model file, checked to return a Module."""
    build = getattr(module, "build", None)
    if not callable(build):
        raise ModelError(f"{where}: defines no build(in_channels, image_size, num_classes, **args)")
    try:
        net = build(channels, size, num_classes, **args)
    except Exception as e:
        raise ModelError(f"{where}: build({channels}, {size}, {num_classes}"
                         f"{''.join(f', {k}={v!r}' for k, v in args.items())}) raised {type(e).__name__}: {e}") from e
    if not isinstance(net, nn.Module):
        raise ModelError(f"{where}: build() returned {type(net).__name__}, not a torch.nn.Module")
    return net


def check_output(net: nn.Module, where: str, channels: int, size: int, num_classes: int) -> None:
    """Run a dummy batch of two images through `net` (eval mode, on the CPU) and check it gives [2, num_classes]."""
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = net(torch.zeros(2, channels, size, size))
    except Exception as e:
        raise ModelError(f"{where}: a dummy batch [2, {channels}, {size}, {size}] fails in forward: "
                         f"{type(e).__name__}: {e}") from e
    finally:
        net.train(was_training)
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (2, num_classes):
        raise ModelError(f"{where}: a dummy batch [2, {channels}, {size}, {size}] gives output {shape}, "
                         f"expected [2, {num_classes}] (one logit per class)")


def _replace(root: nn.Module, dotted: str, new: nn.Module) -> None:
    parent_name, _, attr = dotted.rpartition(".")
    setattr(root.get_submodule(parent_name) if parent_name else root, attr, new)


def _adapt_input(net: nn.Module, channels: int) -> None:
    """The first convolution takes `channels` inputs; pretrained RGB weights are averaged over colour."""
    for name, conv in net.named_modules():
        if not isinstance(conv, nn.Conv2d):
            continue
        if conv.in_channels == channels:
            return
        new = nn.Conv2d(channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,  # type: ignore[arg-type]
                        conv.dilation, 1, conv.bias is not None, conv.padding_mode)  # type: ignore[arg-type]
        with torch.no_grad():
            new.weight.copy_(conv.weight.mean(1, keepdim=True).repeat(1, channels, 1, 1) * (conv.in_channels / channels))
            if conv.bias is not None:
                new.bias.copy_(conv.bias)  # type: ignore[union-attr]
        _replace(net, name, new)
        return


def _replace_head(net: nn.Module, num_classes: int, where: str) -> None:
    """The last 1000-way layer (ImageNet's classes) gets `num_classes` outputs."""
    heads = [(n, m) for n, m in net.named_modules()
             if (isinstance(m, nn.Linear) and m.out_features == 1000) or (isinstance(m, nn.Conv2d) and m.out_channels == 1000)]
    if not heads:
        raise ModelError(f"{where}: found no 1000-way ImageNet head to replace with {num_classes} classes")
    name, head = heads[-1]
    if isinstance(head, nn.Linear):
        new: nn.Module = nn.Linear(head.in_features, num_classes, bias=head.bias is not None)
    else:
        new = nn.Conv2d(head.in_channels, num_classes, head.kernel_size, head.stride, head.padding)  # type: ignore[arg-type]
    _replace(net, name, new)


def weight_file_roots() -> list[Path]:
    """Where a pretrained weight file is looked for: the attached inputs, then torch's download cache."""
    return [input_root(), Path(torch.hub.get_dir()) / "checkpoints"]


def find_weight_file(filename: str, roots: list[Path] | None = None) -> Path | None:
    """The first file named `filename` (torchvision's, e.g. resnet18-f37072fd.pth) under `roots`, recursively."""
    for root in roots if roots is not None else weight_file_roots():
        if (root / filename).is_file():
            return root / filename
        if root.is_dir():
            for hit in sorted(root.rglob(filename)):
                if hit.is_file():
                    return hit
    return None


def pretrained_state(tv_name: str, internet: bool) -> dict[str, Any]:
    """ImageNet weights of torchvision model `tv_name`: a weight file found under the inputs (or torch's
    cache), else downloaded when the kernel has internet; else one line saying where it looked."""
    import torchvision

    where = TORCHVISION_PREFIX + tv_name
    try:
        weights = torchvision.models.get_model_weights(tv_name).DEFAULT
    except Exception as e:
        raise ModelError(f"model.pretrained: torchvision has no pretrained weights for {where} ({e})") from None
    url: str = weights.url
    filename = url.rsplit("/", 1)[-1]
    roots = weight_file_roots()
    path = find_weight_file(filename, roots)
    if path is not None:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise ModelError(f"{path}: not a readable weight file for {where}: {type(e).__name__}: {e}") from None
    if internet:
        return torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False, check_hash=True)
    raise ModelError(
        f"model.pretrained: no weight file {filename} for {where}: looked under {', '.join(str(r) for r in roots)}; "
        f"attach a Kaggle model or data set holding it (kaggle.model_sources or kaggle.dataset_sources), "
        f"or set kaggle.internet = true to download it")


def torchvision_model(tv_name: str, channels: int, num_classes: int, args: dict[str, Any], pretrained: bool,
                      internet: bool) -> nn.Module:
    """Any classifier of torchvision.models, taking `channels` inputs and giving `num_classes` outputs."""
    import torchvision

    where = TORCHVISION_PREFIX + tv_name
    if tv_name not in torchvision.models.list_models(module=torchvision.models):
        raise ModelError(f"model.name: torchvision has no classifier {tv_name!r}")
    try:
        if pretrained:
            net = torchvision.models.get_model(tv_name, weights=None, **args)
            net.load_state_dict(pretrained_state(tv_name, internet))
        else:
            net = torchvision.models.get_model(tv_name, weights=None, num_classes=num_classes, **args)
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"{where}: cannot be built with model.args {args}: {type(e).__name__}: {e}") from None
    if getattr(net, "aux_logits", False):  # inception_v3, googlenet: the plain logits only
        net.aux_logits = False
        for aux in ("AuxLogits", "aux1", "aux2"):
            if hasattr(net, aux):
                setattr(net, aux, None)
    _adapt_input(net, channels)
    if pretrained:
        _replace_head(net, num_classes, where)
    return net


def build_model(model: dict[str, Any], channels: int, size: int, num_classes: int = 10, *,
                internet: bool = False, module: ModuleType | None = None, where: str = "") -> nn.Module:
    """The network an experiment's `model` section names, for inputs of `channels` x `size` x `size`.

    A workspace model (the payload's models/NAME.py, or `module` given here) wins over a built-in of the same
    name; it is checked on a dummy batch of two images before training."""
    name = model["name"]
    args = model.get("args") or {}
    if name.startswith(TORCHVISION_PREFIX):
        return torchvision_model(name.removeprefix(TORCHVISION_PREFIX), channels, num_classes, args,
                                 bool(model.get("pretrained")), internet)
    module = module or workspace_module(name)
    if module is not None:
        where = where or f"models/{name}.py"
        net = build_workspace_model(module, where, channels, size, num_classes, args)
        check_output(net, where, channels, size, num_classes)
        return net
    if name == "c5l3":
        return C5L3(channels, size, num_classes, model)
    if name == "vgg16":
        return VGG16(channels, size, num_classes, model)
    if name == "resnet18":
        return ResNet(BasicBlock, (2, 2, 2, 2), channels, num_classes, model)
    if name == "resnet50":
        return ResNet(Bottleneck, (3, 4, 6, 3), channels, num_classes, model)
    raise ModelError(f"model.name: unknown model {name!r} (no models/{name}.py in this notebook, not a built-in)")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

"""The seed's networks: C5L3, VGG16-BN with a CIFAR head, ResNet18/50 with the CIFAR stem.

Every model takes (channels, size) of the data set, so the same definitions serve CIFAR-10 (3x32x32),
MNIST and digits (1x28x28). `width` multiplies every channel count for small, fast runs.
Part of the training core: torch only.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


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


def build_model(model: dict[str, Any], channels: int, size: int, num_classes: int = 10) -> nn.Module:
    """The network an experiment's `model` section names, for inputs of `channels` x `size` x `size`."""
    name = model["name"]
    if name == "c5l3":
        return C5L3(channels, size, num_classes, model)
    if name == "vgg16":
        return VGG16(channels, size, num_classes, model)
    if name == "resnet18":
        return ResNet(BasicBlock, (2, 2, 2, 2), channels, num_classes, model)
    if name == "resnet50":
        return ResNet(Bottleneck, (3, 4, 6, 3), channels, num_classes, model)
    raise ValueError(f"model.name: unknown model {name!r}")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

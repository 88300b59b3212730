"""The seed's networks for the scratch engine: C5L3 and ResNet18, the same architectures as the torch core's.

Inputs are channels last [N, H, W, C], so C5L3 flattens in (H, W, C) order where torch flattens (C, H, W):
the same network up to a fixed permutation of fc1's inputs. `width` multiplies every channel count (at
least 1), and the parameter counts equal the torch core's for the same model settings.
"""

from __future__ import annotations

from typing import Any

from .conv import max_pool2d
from .core import reshape
from .functions import relu
from .layers import BatchNorm2d, Conv2d, Dropout, Layer, Linear, Sequential


def _ch(n: int, width: float) -> int:
    return max(1, int(round(n * width)))


def _flatten(x):
    return reshape(x, (x.shape[0], -1))


def _pool(x):
    return max_pool2d(x, 2, 2)


class ScratchC5L3(Layer):
    """5 conv (3x3, pad 1; BatchNorm when asked; max-pool after conv 1, 2 and 5) + 3 hidden linear layers.

    dropout "all": Dropout(conv_dropout) after each pooled block and Dropout(linear_dropout) after each
    hidden linear layer; "linear": only the latter; "none": neither."""

    def __init__(self, channels: int, size: int, num_classes: int, m: dict[str, Any]):
        super().__init__()
        w, placement = m["width"], m["dropout"]
        widths = [_ch(c, w) for c in (128, 256, 512, 512, 256)]
        steps: list = []
        c_in = channels
        for i, c_out in enumerate(widths):
            steps.append(Conv2d(c_in, c_out, 3, 1, 1))
            if m["batchnorm"]:
                steps.append(BatchNorm2d(c_out))
            steps.append(relu)
            if i in (0, 1, 4):
                steps.append(_pool)
                if placement == "all":
                    steps.append(Dropout(m["conv_dropout"]))
            c_in = c_out
        self.features = Sequential(*steps)
        pooled = size // 2 // 2 // 2  # floor, as torch's MaxPool2d(2): 32 -> 4, 28 -> 3
        head: list = [_flatten]
        f_in = widths[-1] * pooled * pooled
        for f_out in (_ch(c, w) for c in (512, 256, 128)):
            head += [Linear(f_in, f_out), relu]
            if placement in ("all", "linear"):
                head.append(Dropout(m["linear_dropout"]))
            f_in = f_out
        head.append(Linear(f_in, num_classes))
        self.classifier = Sequential(*head)

    def forward(self, x):
        return self.classifier(self.features(x))


class ScratchBasicBlock(Layer):
    """Two 3x3 convs with a residual connection; a strided 1x1 conv shortcut when the shape changes."""

    def __init__(self, c_in: int, c: int, stride: int, bn: bool):
        super().__init__()
        # With BatchNorm right after, a conv bias is redundant: torch's ResNet drops it, and so do we.
        self.conv1 = Conv2d(c_in, c, 3, stride, 1, bias=not bn)
        self.bn1 = BatchNorm2d(c) if bn else None
        self.conv2 = Conv2d(c, c, 3, 1, 1, bias=not bn)
        self.bn2 = BatchNorm2d(c) if bn else None
        self.shortcut = None
        if stride != 1 or c_in != c:
            steps = [Conv2d(c_in, c, 1, stride, 0, bias=not bn)] + ([BatchNorm2d(c)] if bn else [])
            self.shortcut = Sequential(*steps)

    def forward(self, x):
        out = self.conv1(x)
        out = relu(self.bn1(out) if self.bn1 is not None else out)
        out = self.conv2(out)
        out = self.bn2(out) if self.bn2 is not None else out
        return relu(out + (self.shortcut(x) if self.shortcut is not None else x))


class ScratchResNet18(Layer):
    """ResNet18 with the CIFAR stem (3x3 stride-1 conv, no max-pool), four stages of two basic blocks,
    global average pooling and one linear layer."""

    def __init__(self, channels: int, num_classes: int, m: dict[str, Any]):
        super().__init__()
        bn, w = m["batchnorm"], m["width"]
        c = _ch(64, w)
        self.stem = Sequential(*([Conv2d(channels, c, 3, 1, 1, bias=not bn)] + ([BatchNorm2d(c)] if bn else [])))
        blocks = []
        c_in = c
        for i in range(4):
            c_stage = _ch(64 * 2**i, w)
            for j in range(2):
                blocks.append(ScratchBasicBlock(c_in, c_stage, 2 if (i > 0 and j == 0) else 1, bn))
                c_in = c_stage
        self.stages = Sequential(*blocks)
        self.fc = Linear(c_in, num_classes)

    def forward(self, x):
        x = self.stages(relu(self.stem(x)))
        return self.fc(x.mean(axis=(1, 2)))


def build_model(model: dict[str, Any], channels: int, size: int, num_classes: int = 10) -> Layer:
    """The scratch network an experiment's `model` section names (c5l3 or resnet18)."""
    name = model["name"]
    if name == "c5l3":
        return ScratchC5L3(channels, size, num_classes, model)
    if name == "resnet18":
        return ScratchResNet18(channels, num_classes, model)
    raise ValueError(f"model.name: the scratch engine builds c5l3 and resnet18, not {name!r}")


def param_count(model: Layer) -> int:
    return sum(int(p.size) for p in model.parameters())

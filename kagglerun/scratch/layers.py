"""Layers: objects that own Parameters (and buffers such as running statistics) and apply a function."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .conv import conv2d, max_pool2d
from .core import Parameter, ScratchConfig, array_module, to_numpy
from .functions import batch_norm, dropout, linear


def _uniform(shape, bound: float):
    """PyTorch's default init draws U(-bound, bound); drawn on the host from the engine's generator."""
    values = ScratchConfig.rng.uniform(-bound, bound, size=shape).astype(np.float32)
    return array_module().asarray(values)


class Layer:
    """A container of Parameters, buffers and sub-layers, named in assignment order (as torch modules)."""

    _children: dict[str, Any]

    def __init__(self):
        object.__setattr__(self, "_children", {})

    def __setattr__(self, name, value):
        if isinstance(value, (Layer, Parameter)):
            self._children[name] = value
        object.__setattr__(self, name, value)

    def __call__(self, *args):
        return self.forward(*args)

    def forward(self, *args):
        raise NotImplementedError

    def named_parameters(self, prefix: str = ""):
        for name, child in self._children.items():
            if isinstance(child, Parameter):
                yield prefix + name, child
            else:
                yield from child.named_parameters(f"{prefix}{name}.")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def named_buffers(self, prefix: str = ""):
        """Non-trained state (batchnorm running statistics): arrays held in `self.buffers`."""
        for name in getattr(self, "buffers", {}):
            yield prefix + name, self, name
        for name, child in self._children.items():
            if isinstance(child, Layer):
                yield from child.named_buffers(f"{prefix}{name}.")

    def cleargrads(self) -> None:
        for p in self.parameters():
            p.cleargrad()

    def state_dict(self) -> dict:
        """Parameters and buffers as host NumPy arrays, keyed by dotted name."""
        state = {name: to_numpy(p.data).copy() for name, p in self.named_parameters()}
        state.update({name: to_numpy(owner.buffers[key]).copy() for name, owner, key in self.named_buffers()})
        return state

    def load_state_dict(self, state: dict) -> None:
        xp = array_module()
        expected = {name for name, _ in self.named_parameters()} | {n for n, _, _ in self.named_buffers()}
        if set(state) != expected:
            missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
            raise KeyError(f"state does not match the model: missing {missing[:5]}, unexpected {extra[:5]}")
        for name, p in self.named_parameters():
            if tuple(state[name].shape) != tuple(p.shape):
                raise ValueError(f"{name}: shape {tuple(state[name].shape)} != {tuple(p.shape)}")
            p.data = xp.asarray(state[name], dtype=p.data.dtype)
        for name, owner, key in self.named_buffers():
            owner.buffers[key] = xp.asarray(state[name], dtype=owner.buffers[key].dtype)


class Linear(Layer):
    """y = x W^T + b, W [out, in]; init as torch.nn.Linear."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)  # kaiming_uniform(a=sqrt(5)) reduces to 1/sqrt(fan_in)
        self.W = Parameter(_uniform((out_features, in_features), bound), "W")
        self.b = Parameter(_uniform((out_features,), bound), "b") if bias else None

    def forward(self, x):
        return linear(x, self.W, self.b)


class Conv2d(Layer):
    """2-D convolution on channels-last images, W [out, kh, kw, in]; init as torch.nn.Conv2d."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1, pad: int = 0,
                 bias: bool = True):
        super().__init__()
        self.stride, self.pad = stride, pad
        bound = 1.0 / math.sqrt(in_channels * kernel * kernel)
        self.W = Parameter(_uniform((out_channels, kernel, kernel, in_channels), bound), "W")
        self.b = Parameter(_uniform((out_channels,), bound), "b") if bias else None

    def forward(self, x):
        return conv2d(x, self.W, self.b, self.stride, self.pad)


class BatchNorm2d(Layer):
    """Batch normalisation over the last (channel) axis, for [N, C] and [N, H, W, C] alike.

    Running statistics follow torch: momentum 0.1, unbiased batch variance; test mode uses them.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        xp = array_module()
        self.eps, self.momentum = eps, momentum
        self.gamma = Parameter(xp.ones(num_features, dtype=np.float32), "gamma")
        self.beta = Parameter(xp.zeros(num_features, dtype=np.float32), "beta")
        self.buffers = {
            "running_mean": xp.zeros(num_features, dtype=np.float32),
            "running_var": xp.ones(num_features, dtype=np.float32),
        }

    def forward(self, x):
        stats = self.buffers
        y, mean, var = batch_norm(x, self.gamma, self.beta, stats["running_mean"], stats["running_var"], self.eps)
        if mean is not None:
            count = x.size // x.shape[-1]
            unbiased = var * (count / max(count - 1, 1))
            m = self.momentum
            stats["running_mean"] = ((1 - m) * stats["running_mean"] + m * mean).astype(np.float32)
            stats["running_var"] = ((1 - m) * stats["running_var"] + m * unbiased).astype(np.float32)
        return y


class Dropout(Layer):
    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x):
        return dropout(x, self.p)


class MaxPool2d(Layer):
    def __init__(self, kernel: int = 2, stride: int | None = None):
        super().__init__()
        self.kernel, self.stride = kernel, stride or kernel

    def forward(self, x):
        return max_pool2d(x, self.kernel, self.stride)


class Sequential(Layer):
    """Applies its steps in order; steps are Layers (registered as "0", "1", ... like torch) or plain functions."""

    def __init__(self, *steps):
        super().__init__()
        self.steps = list(steps)
        for i, step in enumerate(self.steps):
            if isinstance(step, Layer):
                setattr(self, str(i), step)

    def forward(self, x):
        for step in self.steps:
            x = step(x)
        return x

"""Convolution (im2col forward, col2im backward) and max-pooling on channels-last images [N, H, W, C].

Channels last is this engine's image layout: the im2col copy then moves contiguous runs of channels,
and the matmul's [N*OH*OW, OC] output already is the next layer's [N, OH, OW, OC] input, with no
transposes. Convolution weights are stored [OC, KH, KW, C] for the same reason.
"""

from __future__ import annotations

from typing import Any

from .core import Function, array_module


def _out_size(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def _pad(x, pad: int, value: float = 0.0):
    if pad == 0:
        return x
    xp = array_module()
    n, h, w, c = x.shape
    out = xp.full((n, h + 2 * pad, w + 2 * pad, c), value, dtype=x.dtype)
    out[:, pad : pad + h, pad : pad + w, :] = x
    return out


def im2col(x, kh: int, kw: int, stride: int, pad: int):
    """[N, H, W, C] -> [N*OH*OW, KH*KW*C]: one row per output pixel, holding its receptive field."""
    xp = array_module()
    n, h, w, c = x.shape
    oh, ow = _out_size(h, kh, stride, pad), _out_size(w, kw, stride, pad)
    padded = _pad(x, pad)
    s_n, s_h, s_w, s_c = padded.strides
    # A view of every window without copying; the single copy is the reshape to a matrix.
    windows = xp.lib.stride_tricks.as_strided(
        padded, (n, oh, ow, kh, kw, c), (s_n, s_h * stride, s_w * stride, s_h, s_w, s_c)
    )
    return xp.ascontiguousarray(windows).reshape(n * oh * ow, kh * kw * c)


def col2im(cols, x_shape, kh: int, kw: int, stride: int, pad: int):
    """The adjoint of im2col: add every row's window back onto the (padded) image, then crop."""
    xp = array_module()
    n, h, w, c = x_shape
    oh, ow = _out_size(h, kh, stride, pad), _out_size(w, kw, stride, pad)
    cols = cols.reshape(n, oh, ow, kh, kw, c)
    padded = xp.zeros((n, h + 2 * pad, w + 2 * pad, c), dtype=cols.dtype)
    # kh*kw strided slice additions; far faster than a scattered np.add.at over every element.
    for i in range(kh):
        for j in range(kw):
            padded[:, i : i + stride * oh : stride, j : j + stride * ow : stride, :] += cols[:, :, :, i, j, :]
    return padded[:, pad : pad + h, pad : pad + w, :]


class Conv2dFunction(Function):
    """y[N, OH, OW, OC] = im2col(x) @ W^T + b with W [OC, KH, KW, C]."""

    def __init__(self, stride: int, pad: int):
        self.stride = stride
        self.pad = pad

    def forward(self, x, w, b=None):
        oc, kh, kw, _ = w.shape
        n, h, wd, _ = x.shape
        oh, ow = _out_size(h, kh, self.stride, self.pad), _out_size(wd, kw, self.stride, self.pad)
        self.cols = im2col(x, kh, kw, self.stride, self.pad)
        y = self.cols @ w.reshape(oc, -1).T
        if b is not None:
            y += b
        return y.reshape(n, oh, ow, oc)

    def backward(self, gy):
        x, w = self.inputs[0], self.inputs[1]
        oc, kh, kw, _ = w.shape
        gy2 = gy.reshape(-1, oc)
        # cols^T @ gy then a transpose: OpenBLAS runs this orientation of the long-K product faster.
        gw = (self.cols.T @ gy2).T.reshape(w.shape)
        gx = None
        if x.requires_grad:  # the first layer's input is data: skip its (large) gradient
            gx = col2im(gy2 @ w.data.reshape(oc, -1), x.shape, kh, kw, self.stride, self.pad)
        if len(self.inputs) == 2:
            return gx, gw
        return gx, gw, gy2.sum(axis=0)


def conv2d(x, w, b=None, stride: int = 1, pad: int = 0):
    """2-D convolution of channels-last x [N, H, W, C] with W [OC, KH, KW, C] (cross-correlation, as torch)."""
    f = Conv2dFunction(stride, pad)
    return f(x, w) if b is None else f(x, w, b)


class MaxPool2dFunction(Function):
    """Max over kernel x kernel windows; the gradient goes to the first maximum of each window, as in torch."""

    def __init__(self, kernel: int, stride: int):
        self.kernel = kernel
        self.stride = stride
        self.y: Any = None  # the forward output, which backward compares against

    def _window_slices(self, shape):
        """One index per window offset (i, j): the strided view of that element of every window."""
        k, s = self.kernel, self.stride
        oh, ow = _out_size(shape[1], k, s, 0), _out_size(shape[2], k, s, 0)
        for i in range(k):
            for j in range(k):
                yield (slice(None), slice(i, i + s * (oh - 1) + 1, s), slice(j, j + s * (ow - 1) + 1, s), slice(None))

    def forward(self, x):
        xp = array_module()
        y = None
        for idx in self._window_slices(x.shape):
            y = x[idx].copy() if y is None else xp.maximum(y, x[idx])
        self.y = y
        return y

    def backward(self, gy):
        xp = array_module()
        x = self.inputs[0].data
        gx = xp.zeros_like(x)
        taken = xp.zeros(self.y.shape, dtype=bool)
        # Offsets in row-major window order; `taken` keeps ties (frequent after ReLU) from doubling gradients.
        for idx in self._window_slices(x.shape):
            hit = (x[idx] == self.y) & ~taken
            taken |= hit
            gx[idx] += gy * hit
        return gx


def max_pool2d(x, kernel: int = 2, stride: int | None = None):
    """Max-pooling of channels-last x without padding; odd edges are dropped (floor), as in torch."""
    return MaxPool2dFunction(kernel, stride or kernel)(x)

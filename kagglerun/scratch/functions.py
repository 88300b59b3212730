"""Differentiable functions on Variables: activations, losses, dropout, linear and batch normalisation."""

from __future__ import annotations

import numpy as np

from .core import Function, ScratchConfig, array_module, as_variable

SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


class Exp(Function):
    def forward(self, x):
        self.y = array_module().exp(x)
        return self.y

    def backward(self, gy):
        return gy * self.y


class Log(Function):
    def forward(self, x):
        return array_module().log(x)

    def backward(self, gy):
        return gy / self.inputs[0].data


class ReLU(Function):
    def forward(self, x):
        self.mask = x > 0
        return x * self.mask

    def backward(self, gy):
        return gy * self.mask


class Sigmoid(Function):
    def forward(self, x):
        # tanh form: no overflow warning for large negative x, unlike 1 / (1 + exp(-x)).
        self.y = 0.5 * array_module().tanh(0.5 * x) + 0.5
        return self.y

    def backward(self, gy):
        return gy * self.y * (1 - self.y)


class LeakyReLU(Function):
    def __init__(self, slope: float):
        self.slope = slope

    def forward(self, x):
        xp = array_module()
        self.factor = xp.where(x > 0, 1.0, self.slope).astype(x.dtype)
        return x * self.factor

    def backward(self, gy):
        return gy * self.factor


class SELU(Function):
    def forward(self, x):
        xp = array_module()
        neg_part = SELU_ALPHA * (xp.exp(xp.minimum(x, 0)) - 1)
        self.positive = x > 0
        self.neg_part = neg_part
        return SELU_SCALE * xp.where(self.positive, x, neg_part)

    def backward(self, gy):
        # d/dx alpha (e^x - 1) = alpha e^x = neg_part + alpha
        xp = array_module()
        return gy * SELU_SCALE * xp.where(self.positive, 1.0, self.neg_part + SELU_ALPHA)


def exp(x):
    return Exp()(x)


def log(x):
    return Log()(x)


def relu(x):
    return ReLU()(x)


def sigmoid(x):
    return Sigmoid()(x)


def leaky_relu(x, slope: float = 0.01):
    return LeakyReLU(slope)(x)


def selu(x):
    return SELU()(x)


class SoftmaxCrossEntropy(Function):
    """Mean cross-entropy of logits [N, K] against integer labels [N], through a stable log-softmax."""

    def forward(self, logits, labels):
        xp = array_module()
        shifted = logits - logits.max(axis=1, keepdims=True)
        log_probs = shifted - xp.log(xp.exp(shifted).sum(axis=1, keepdims=True))
        self.rows = xp.arange(len(labels))
        self.labels = labels.astype(np.int64)
        self.log_probs = log_probs
        return -log_probs[self.rows, self.labels].mean()

    def backward(self, gy):
        grad = array_module().exp(self.log_probs)
        grad[self.rows, self.labels] -= 1
        return grad * (gy / len(self.labels)), None


def softmax_cross_entropy(logits, labels):
    return SoftmaxCrossEntropy()(logits, as_variable(labels))


def _reduce(loss, reduction: str):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"reduction must be mean, sum or none, not {reduction!r}")


class SigmoidFocalLoss(Function):
    """torchvision's sigmoid_focal_loss (elementwise, before reduction) with a hand-written backward."""

    def __init__(self, alpha: float, gamma: float):
        self.alpha = alpha
        self.gamma = gamma

    def forward(self, x, t):
        xp = array_module()
        p = 0.5 * xp.tanh(0.5 * x) + 0.5
        ce = xp.maximum(x, 0) - x * t + xp.log1p(xp.exp(-xp.abs(x)))  # BCE with logits, stable
        m = 1 - (p * t + (1 - p) * (1 - t))  # 1 - p_t
        a = self.alpha * t + (1 - self.alpha) * (1 - t) if self.alpha >= 0 else 1.0
        self.cache = p, ce, m, a
        return a * ce * m**self.gamma

    def backward(self, gy):
        p, ce, m, a = self.cache
        t = self.inputs[1].data
        g = self.gamma
        # d ce/dx = p - t;  d m/dx = -(2t - 1) p (1 - p)
        dm = -(2 * t - 1) * p * (1 - p)
        grad = (p - t) * m**g
        if g != 0:
            grad = grad + ce * g * m ** (g - 1) * dm
        return gy * a * grad, None


def sigmoid_focal_loss_manual(x, target, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "mean"):
    """Sigmoid focal loss (Lin et al.) as one Function with its gradient derived by hand."""
    x = as_variable(x)
    return _reduce(SigmoidFocalLoss(alpha, gamma)(x, as_variable(target, x)), reduction)


def sigmoid_focal_loss_composed(x, target, alpha: float = 0.25, gamma: float = 2.0, reduction: str = "mean"):
    """The same loss composed from primitives: its gradient comes from autograd alone."""
    x = as_variable(x)
    t = as_variable(target, x)
    p = sigmoid(x)
    abs_x = relu(x) + relu(-x)
    ce = relu(x) - x * t + log(1 + exp(-abs_x))
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return _reduce(loss, reduction)


class DropoutFunction(Function):
    """Inverted dropout: kept values are scaled by 1 / (1 - p) so test mode needs no rescaling."""

    def __init__(self, p: float):
        self.p = p

    def forward(self, x):
        # Masks are drawn on the host from the engine's generator, so a resumed run redraws them exactly.
        keep = ScratchConfig.rng.random(x.shape, dtype=np.float32) >= self.p
        mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - self.p))
        self.mask = array_module().asarray(mask)
        return x * self.mask

    def backward(self, gy):
        return gy * self.mask


def dropout(x, p: float = 0.5):
    """Zero each value with probability p while training; identity in test mode or when p == 0."""
    if not ScratchConfig.train or p == 0:
        return as_variable(x)
    return DropoutFunction(p)(x)


class LinearFunction(Function):
    """y = x W^T + b with W stored [out, in] as in PyTorch; one graph node instead of three."""

    def forward(self, x, w, b=None):
        y = x @ w.T
        return y + b if b is not None else y

    def backward(self, gy):
        x, w = self.inputs[0].data, self.inputs[1].data
        gx = gy @ w
        gw = gy.T @ x
        if len(self.inputs) == 2:
            return gx, gw
        return gx, gw, gy.sum(axis=0)


def linear(x, w, b=None):
    return LinearFunction()(x, w) if b is None else LinearFunction()(x, w, b)


class BatchNormFunction(Function):
    """Training-mode batch normalisation per channel, the channel axis last ([N, C] or [N, H, W, C]).

    Keeps the batch mean and biased variance for the layer's running statistics.
    """

    def __init__(self, eps: float):
        self.eps = eps

    def forward(self, x, gamma, beta):
        xp = array_module()
        self.axes = tuple(range(x.ndim - 1))
        self.batch_mean = x.mean(axis=self.axes)
        centered = x - self.batch_mean
        self.batch_var = (centered * centered).mean(axis=self.axes)
        self.inv_std = (1.0 / xp.sqrt(self.batch_var + self.eps)).astype(x.dtype)
        self.x_hat = centered * self.inv_std
        return self.x_hat * gamma + beta

    def backward(self, gy):
        x_hat = self.x_hat
        count = gy.size // gy.shape[-1]
        g_beta = gy.sum(axis=self.axes)
        g_gamma = (gy * x_hat).sum(axis=self.axes)
        gamma = self.inputs[1].data
        # dx = gamma inv_std / M * (M dy - sum(dy) - x_hat sum(dy x_hat))
        scale = gamma * self.inv_std / count
        gx = scale * (count * gy - g_beta - x_hat * g_gamma)
        return gx, g_gamma, g_beta


def batch_norm(x, gamma, beta, running_mean, running_var, eps: float = 1e-5):
    """Normalise per channel (last axis): batch statistics while training, the running ones in test mode.

    Returns (y, batch_mean, batch_var); the statistics are None in test mode.
    """
    if ScratchConfig.train:
        f = BatchNormFunction(eps)
        y = f(x, gamma, beta)
        return y, f.batch_mean, f.batch_var
    xp = array_module()
    inv_std = (1.0 / xp.sqrt(running_var + eps)).astype(running_var.dtype)
    return (as_variable(x) - running_mean) * inv_std * gamma + beta, None, None

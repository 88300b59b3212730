"""Every scratch operation against torch in float64 (values and gradients) and by finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from torchvision.ops import sigmoid_focal_loss as torch_focal

from kagglerun.scratch.conv import col2im, conv2d, im2col, max_pool2d
from kagglerun.scratch.core import Variable, eval_mode, matmul, no_grad, reduce_mean, reduce_sum, reshape, transpose
from kagglerun.scratch.functions import (
    batch_norm,
    dropout,
    exp,
    leaky_relu,
    linear,
    log,
    relu,
    selu,
    sigmoid,
    sigmoid_focal_loss_composed,
    sigmoid_focal_loss_manual,
    softmax_cross_entropy,
)

RNG = np.random.default_rng(1234)


def _randn(*shape):
    return RNG.standard_normal(shape)


def _scratch_grads(fn, arrays, weight):
    """Values and input gradients of sum(fn(*inputs) * weight); weight makes the upstream gradient arbitrary."""
    xs = [Variable(a.copy()) for a in arrays]
    y = fn(*xs)
    (y * weight).sum().backward() if weight is not None else y.backward()
    return y.data, [x.grad for x in xs]


def _torch_grads(fn, arrays, weight):
    ts = [torch.tensor(a, requires_grad=True) for a in arrays]
    y = fn(*ts)
    (y * torch.tensor(weight)).sum().backward() if weight is not None else y.backward()
    return y.detach().numpy(), [t.grad.numpy() for t in ts]


def _numeric_grads(fn, arrays, weight, eps=1e-6):
    """Central differences of the same scalar, one coordinate at a time (inputs are small)."""
    def scalar(vals):
        with no_grad():
            y = fn(*[Variable(v) for v in vals]).data
        return float((y * weight).sum()) if weight is not None else float(y)

    grads = []
    for k, a in enumerate(arrays):
        g = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            plus = [v.copy() for v in arrays]
            minus = [v.copy() for v in arrays]
            plus[k][i] += eps
            minus[k][i] -= eps
            g[i] = (scalar(plus) - scalar(minus)) / (2 * eps)
        grads.append(g)
    return grads


def check(fn, torch_fn, *arrays, scalar_output=False, fd=True):
    arrays = [np.asarray(a, dtype=np.float64) for a in arrays]
    with torch.no_grad():
        out_shape = torch_fn(*[torch.tensor(a) for a in arrays]).shape
    weight = None if scalar_output else _randn(*out_shape)
    y, grads = _scratch_grads(fn, arrays, weight)
    ty, tgrads = _torch_grads(torch_fn, arrays, weight)
    np.testing.assert_allclose(y, ty, rtol=1e-10, atol=1e-10)
    for g, tg in zip(grads, tgrads):
        np.testing.assert_allclose(g, tg, rtol=1e-9, atol=1e-10)
    if fd:
        for g, ng in zip(grads, _numeric_grads(fn, arrays, weight)):
            np.testing.assert_allclose(g, ng, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "a_shape, b_shape", [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((3, 1), (1, 5)), ((2, 3), ()), ((1, 4), (3, 1, 4))]
)
def test_arithmetic_broadcasts_like_torch(a_shape, b_shape):
    a, b = _randn(*a_shape), _randn(*b_shape)
    check(lambda x, y: x + y, lambda x, y: x + y, a, b)
    check(lambda x, y: x - y, lambda x, y: x - y, a, b)
    check(lambda x, y: x * y, lambda x, y: x * y, a, b)
    check(lambda x, y: x / y, lambda x, y: x / y, a, np.abs(b) + 0.5)


def test_scalars_negation_and_power():
    a = np.abs(_randn(3, 4)) + 0.1
    check(lambda x: 2 - x * 3 + 1 / x, lambda x: 2 - x * 3 + 1 / x, a)
    check(lambda x: -(x**3) + x**0.5, lambda x: -(x**3) + x**0.5, a)


def test_matmul_reshape_transpose():
    check(matmul, torch.matmul, _randn(3, 4), _randn(4, 5))
    check(matmul, torch.matmul, _randn(2, 3, 4), _randn(4, 2))
    check(lambda x: reshape(x, (4, 6)), lambda x: x.reshape(4, 6), _randn(2, 3, 4))
    check(lambda x: x.reshape(-1), lambda x: x.reshape(-1), _randn(2, 3, 4))
    check(lambda x: transpose(x, (2, 0, 1)), lambda x: x.permute(2, 0, 1), _randn(2, 3, 4))
    check(lambda x: x.T, lambda x: x.T, _randn(3, 5))


@pytest.mark.parametrize("axis, keepdims", [(None, False), (0, False), (1, True), ((0, 2), False), (-1, True)])
def test_sum_and_mean(axis, keepdims):
    dims = axis if axis is None or isinstance(axis, tuple) else (axis,)
    a = _randn(2, 3, 4)
    if axis is None:
        check(reduce_sum, torch.sum, a, scalar_output=True)
        check(reduce_mean, torch.mean, a, scalar_output=True)
        return
    check(lambda x: reduce_sum(x, axis, keepdims), lambda x: x.sum(dim=dims, keepdim=keepdims), a)
    check(lambda x: x.mean(axis, keepdims), lambda x: x.mean(dim=dims, keepdim=keepdims), a)


def test_elementwise_functions():
    a = _randn(3, 5)
    check(exp, torch.exp, a)
    check(log, torch.log, np.abs(a) + 0.2)
    check(relu, torch.relu, a)
    check(sigmoid, torch.sigmoid, a * 5)
    check(lambda x: leaky_relu(x, 0.1), lambda x: TF.leaky_relu(x, 0.1), a)
    check(selu, TF.selu, a * 2)


def test_softmax_cross_entropy_is_stable_and_exact():
    logits = _randn(6, 4) * 3
    logits[0, 1] = 500.0  # exp would overflow without the max shift
    labels = np.array([1, 0, 3, 2, 2, 1])
    check(lambda x: softmax_cross_entropy(x, labels), lambda x: TF.cross_entropy(x, torch.tensor(labels)),
          logits, scalar_output=True)


@pytest.mark.parametrize("focal", [sigmoid_focal_loss_manual, sigmoid_focal_loss_composed])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_sigmoid_focal_loss_matches_torchvision(focal, reduction):
    x, target = _randn(4, 3) * 2, (RNG.random((4, 3)) > 0.5).astype(np.float64)
    for alpha, gamma in [(0.25, 2.0), (0.6, 3.0), (-1, 0.0)]:
        check(lambda v: focal(v, target, alpha, gamma, reduction),
              lambda v: torch_focal(v, torch.tensor(target), alpha, gamma, reduction),
              x, scalar_output=reduction != "none")


@pytest.mark.parametrize("focal", [sigmoid_focal_loss_manual, sigmoid_focal_loss_composed])
def test_seed_focal_loss_vector(focal):
    """The seed's own numbers (float32, as it printed them)."""
    x = Variable(np.array([1.0, -3.0, 2.0], dtype=np.float32))
    loss = focal(x, np.array([0.0, 1.0, 0.0], dtype=np.float32), alpha=0.25, gamma=3, reduction="mean")
    loss.backward()
    assert loss.data.dtype == np.float32
    np.testing.assert_allclose(loss.data, 0.7112133, rtol=1e-6)
    np.testing.assert_allclose(x.grad, [0.17490506, -0.099857, 0.28040347], rtol=1e-5)


def test_seed_selu_and_leaky_relu_sums():
    x = Variable(np.array([1.0, -3.0, 2.0, 5.0], dtype=np.float32))
    y = selu(x).sum()
    y.backward()
    np.testing.assert_allclose(y.data, 6.7350397, rtol=1e-6)
    np.testing.assert_allclose(x.grad, [1.0507009873554805, 0.08753060945898154, 1.0507009873554805,
                                        1.0507009873554805], rtol=1e-6)
    x.cleargrad()
    y = leaky_relu(x, 0.01).sum()
    y.backward()
    np.testing.assert_allclose(y.data, 7.97, rtol=1e-6)
    np.testing.assert_allclose(x.grad, [1.0, 0.01, 1.0, 1.0], rtol=1e-6)


def test_linear_with_and_without_bias():
    check(linear, TF.linear, _randn(5, 4), _randn(3, 4), _randn(3))
    check(linear, TF.linear, _randn(5, 4), _randn(3, 4))


def _nhwc(fn):
    """A torch NCHW function seen through this engine's channels-last layout."""
    def wrapped(x, *rest):
        return fn(x.permute(0, 3, 1, 2), *rest).permute(0, 2, 3, 1)
    return wrapped


@pytest.mark.parametrize(
    "n, h, w, c, oc, k, stride, pad",
    [(2, 5, 5, 3, 4, 3, 1, 1), (2, 7, 6, 2, 3, 3, 2, 1), (1, 6, 6, 3, 2, 1, 2, 0), (2, 8, 7, 2, 3, 5, 1, 2),
     (1, 5, 5, 2, 2, 3, 3, 0), (1, 9, 9, 1, 2, 4, 2, 1)],
)
def test_conv2d_matches_torch(n, h, w, c, oc, k, stride, pad):
    x, wt, b = _randn(n, h, w, c), _randn(oc, k, k, c), _randn(oc)

    def torch_conv(x, wt, b=None):
        return _nhwc(lambda xx: TF.conv2d(xx, wt.permute(0, 3, 1, 2), b, stride=stride, padding=pad))(x)

    fd = n * h * w * c <= 100  # finite differences for the smaller shapes keep the suite fast
    check(lambda x, wt, b: conv2d(x, wt, b, stride, pad), torch_conv, x, wt, b, fd=fd)
    check(lambda x, wt: conv2d(x, wt, None, stride, pad), torch_conv, x, wt, fd=False)


def test_col2im_is_the_adjoint_of_im2col():
    """<im2col(x), c> == <x, col2im(c)> for any x and c: what makes col2im the right backward."""
    x = _randn(2, 7, 6, 3)
    cols = im2col(x, 3, 3, 2, 1)
    c = _randn(*cols.shape)
    np.testing.assert_allclose((cols * c).sum(), (x * col2im(c, x.shape, 3, 3, 2, 1)).sum(), rtol=1e-12)


@pytest.mark.parametrize("shape, k, stride", [((2, 6, 6, 3), 2, 2), ((1, 7, 7, 2), 2, 2), ((2, 7, 5, 2), 3, 2),
                                              ((1, 6, 6, 1), 3, 1)])
def test_max_pool_matches_torch(shape, k, stride):
    x = _randn(*shape)
    check(lambda v: max_pool2d(v, k, stride), _nhwc(lambda v: TF.max_pool2d(v, k, stride)), x)


def test_max_pool_ties_send_the_gradient_once():
    x = np.zeros((1, 4, 4, 1))  # all-equal windows: torch routes each gradient to one element
    check(lambda v: max_pool2d(v, 2, 2), _nhwc(lambda v: TF.max_pool2d(v, 2, 2)), x, fd=False)


@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 5, 2)])
def test_batch_norm_training_matches_torch(shape):
    x, gamma, beta = _randn(*shape) * 2 + 1, _randn(shape[-1]), _randn(shape[-1])
    rm, rv = np.zeros(shape[-1]), np.ones(shape[-1])

    def torch_bn(x, g, b):
        xt = x if x.ndim == 2 else x.permute(0, 3, 1, 2)
        y = TF.batch_norm(xt, None, None, g, b, training=True)
        return y if y.ndim == 2 else y.permute(0, 2, 3, 1)

    check(lambda x, g, b: batch_norm(x, g, b, rm, rv)[0], torch_bn, x, gamma, beta)


def test_batchnorm_layer_running_stats_drive_test_mode():
    from kagglerun.scratch.layers import BatchNorm2d

    layer, ref = BatchNorm2d(3), torch.nn.BatchNorm2d(3).double()
    for _ in range(3):
        x = _randn(4, 5, 5, 3) * 3 + 2
        layer(Variable(x.astype(np.float32)))
        ref(torch.tensor(x).permute(0, 3, 1, 2))
    np.testing.assert_allclose(layer.buffers["running_mean"], ref.running_mean.numpy(), rtol=1e-5)
    np.testing.assert_allclose(layer.buffers["running_var"], ref.running_var.numpy(), rtol=1e-5)
    x = _randn(2, 5, 5, 3)
    ref.eval()
    with eval_mode():
        y = layer(Variable(x.astype(np.float32))).data
    np.testing.assert_allclose(y, ref(torch.tensor(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).detach().numpy(),
                               rtol=1e-4, atol=1e-5)
    # Test mode must not move the statistics.
    np.testing.assert_allclose(layer.buffers["running_mean"], ref.running_mean.numpy(), rtol=1e-5)


def test_batch_norm_test_mode_gradients():
    x, gamma, beta = _randn(3, 2, 2, 4), _randn(4), _randn(4)
    rm, rv = _randn(4), np.abs(_randn(4)) + 0.5

    def torch_bn(x, g, b):
        y = TF.batch_norm(x.permute(0, 3, 1, 2), torch.tensor(rm), torch.tensor(rv), g, b, training=False)
        return y.permute(0, 2, 3, 1)

    with eval_mode():
        check(lambda x, g, b: batch_norm(x, g, b, rm, rv)[0], torch_bn, x, gamma, beta)


def test_dropout_is_inverted_and_off_in_test_mode():
    x = np.ones((200, 100), dtype=np.float32)
    v = Variable(x)
    y = dropout(v, 0.3)
    kept = y.data != 0
    assert abs(kept.mean() - 0.7) < 0.01
    np.testing.assert_allclose(y.data[kept], 1 / 0.7, rtol=1e-6)
    y.sum().backward()
    np.testing.assert_array_equal(v.grad, y.data)  # the gradient goes through the same mask
    with eval_mode():
        np.testing.assert_array_equal(dropout(Variable(x), 0.3).data, x)


def test_no_grad_records_no_graph_and_generations_order_backward():
    x = Variable(np.array(2.0))
    with no_grad():
        y = x * x
    assert y.creator is None
    # A diamond: a reaches the output through two paths of different depth; each contributes once.
    a = Variable(np.array(3.0))
    b = a * a
    c = exp(log(b)) + b * a
    c.backward()
    np.testing.assert_allclose(a.grad, 2 * 3.0 + 3 * 9.0)
    assert b.grad is None  # intermediate gradients are freed


def test_float32_stays_float32():
    x = Variable(np.ones((2, 3), dtype=np.float32))
    y = (x * 0.5 + 1) / 3 - x**2
    y = y.mean()
    assert y.data.dtype == np.float32

"""Scratch layers, models and optimizers against their torch counterparts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kagglerun.core.models import build_model, count_params
from kagglerun.scratch.core import Parameter, Variable, eval_mode
from kagglerun.scratch.functions import softmax_cross_entropy
from kagglerun.scratch.layers import Conv2d, Linear
from kagglerun.scratch.models import build_model as build_scratch_model
from kagglerun.scratch.models import param_count as scratch_param_count
from kagglerun.scratch.optimizers import SGD, Adam


def _model(name, batchnorm=True, dropout="none", width=1.0):
    return {"name": name, "batchnorm": batchnorm, "dropout": dropout, "conv_dropout": 0.3, "linear_dropout": 0.5,
            "width": width}


def test_c5l3_on_cifar_has_the_seed_parameter_count():
    assert scratch_param_count(build_scratch_model(_model("c5l3", batchnorm=False), 3, 32)) == 7_281_802


@pytest.mark.parametrize("name", ["c5l3", "resnet18"])
@pytest.mark.parametrize("batchnorm", [False, True])
@pytest.mark.parametrize("channels, size, width", [(3, 32, 1.0), (1, 28, 1.0), (1, 28, 0.1), (3, 32, 0.3)])
def test_parameter_counts_equal_the_torch_core(name, batchnorm, channels, size, width):
    m = _model(name, batchnorm, "all", width)
    assert scratch_param_count(build_scratch_model(m, channels, size)) == count_params(build_model(m, channels, size))


@pytest.mark.parametrize("name, channels, size", [("c5l3", 1, 28), ("c5l3", 3, 32), ("resnet18", 1, 28)])
def test_models_run_forward_and_backward(name, channels, size):
    model = build_scratch_model(_model(name, dropout="all", width=0.0625), channels, size)
    x = np.random.default_rng(0).standard_normal((4, size, size, channels)).astype(np.float32)
    logits = model(x)
    assert logits.shape == (4, 10)
    softmax_cross_entropy(logits, np.array([0, 1, 2, 3])).backward()
    assert all(p.grad is not None and p.grad.shape == p.shape for p in model.parameters())
    with eval_mode():  # deterministic in test mode: dropout off, running statistics
        np.testing.assert_array_equal(model(x).data, model(x).data)


def test_init_bounds_follow_pytorch_defaults():
    conv, lin = Conv2d(16, 8, 3), Linear(200, 10)
    for w, fan_in in ((conv.W, 16 * 9), (conv.b, 16 * 9), (lin.W, 200), (lin.b, 200)):
        bound = 1 / np.sqrt(fan_in)
        assert np.abs(w.data).max() <= bound
        if w.size >= 100:  # uniform over the whole range, not a narrower one
            assert np.abs(w.data).max() > 0.9 * bound
    assert conv.W.shape == (8, 3, 3, 16) and conv.W.dtype == np.float32


@pytest.mark.parametrize("make, make_torch", [
    (lambda p: SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01),
     lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.01)),
    (lambda p: SGD(p, lr=0.1), lambda p: torch.optim.SGD(p, lr=0.1)),
    (lambda p: Adam(p, lr=0.01, betas=(0.8, 0.99), weight_decay=0.01),
     lambda p: torch.optim.Adam(p, lr=0.01, betas=(0.8, 0.99), weight_decay=0.01)),
])
def test_optimizers_follow_torch_updates(make, make_torch):
    rng = np.random.default_rng(3)
    start = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    ours = [Parameter(a.copy()) for a in start]
    theirs = [torch.tensor(a.copy(), requires_grad=True) for a in start]
    opt, ref = make(ours), make_torch(theirs)
    for _ in range(4):
        grads = [rng.standard_normal(a.shape) for a in start]
        for p, t, g in zip(ours, theirs, grads):
            p.grad, t.grad = g, torch.tensor(g)
        opt.step()
        ref.step()
    for p, t in zip(ours, theirs):
        np.testing.assert_allclose(p.data, t.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_optimizer_state_round_trips():
    rng = np.random.default_rng(4)
    a, b = Parameter(rng.standard_normal(3)), Parameter(rng.standard_normal(3))
    g = rng.standard_normal(3)
    opt_a, opt_b = Adam([a], lr=0.1), Adam([b], lr=0.1)
    b.data = a.data.copy()
    a.grad = b.grad = g
    opt_a.step()
    opt_b.load_state_dict(opt_a.state_dict())
    b.data = a.data.copy()
    opt_a.step()
    opt_b.step()
    np.testing.assert_array_equal(a.data, b.data)


def test_layer_state_dict_round_trips_and_rejects_mismatches():
    m = build_scratch_model(_model("c5l3", width=0.0625), 1, 28)
    state = m.state_dict()
    assert "features.1.buffers" not in state and "features.1.running_mean" in state
    other = build_scratch_model(_model("c5l3", width=0.0625), 1, 28)
    other.load_state_dict(state)
    x = Variable(np.ones((2, 28, 28, 1), dtype=np.float32))
    with eval_mode():
        np.testing.assert_array_equal(m(x).data, other(x).data)
    with pytest.raises(KeyError):
        other.load_state_dict({k: v for k, v in state.items() if k != "classifier.7.b"})

"""Define-by-run autograd: Variable, Function, generation-ordered backward, no-grad and test modes.

Gradients are plain arrays (no higher-order differentiation): that keeps backward cheap, which is
what training needs. Arrays come from `array_module()`: NumPy, or CuPy once `use_cupy()` was called.
"""

from __future__ import annotations

import contextlib
import heapq
import weakref

import numpy as np


class ScratchConfig:
    """Process-wide switches read by every operation."""

    enable_backprop = True  # False inside `no_grad()`: no graph is recorded
    train = True  # False inside `eval_mode()`: dropout off, batchnorm uses running statistics
    xp = np  # the array module: numpy, or cupy on a GPU
    rng = np.random.default_rng(0)  # initial weights and dropout masks; the engine seeds it


@contextlib.contextmanager
def _using(name: str, value):
    old = getattr(ScratchConfig, name)
    setattr(ScratchConfig, name, value)
    try:
        yield
    finally:
        setattr(ScratchConfig, name, old)


def no_grad():
    """Context manager: run operations without recording the graph (evaluation, optimizer steps)."""
    return _using("enable_backprop", False)


def eval_mode():
    """Context manager: dropout passes values through, batchnorm normalises with running statistics."""
    return _using("train", False)


def array_module():
    return ScratchConfig.xp


def use_cupy(enable: bool = True) -> bool:
    """Switch the array module to CuPy when it imports and sees a GPU; returns whether it did."""
    ScratchConfig.xp = np
    if not enable:
        return False
    try:
        import cupy  # optional: only present on GPU machines

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return False
    except Exception:  # no cupy, no driver, no device: stay on numpy
        return False
    ScratchConfig.xp = cupy
    return True


def to_numpy(array) -> np.ndarray:
    """A host copy of a NumPy or CuPy array (checkpoints and metrics live on the host)."""
    if isinstance(array, np.ndarray):
        return array
    get = getattr(array, "get", None)
    return get() if get is not None else np.asarray(array)


class Variable:
    """An array that remembers the Function that produced it, so gradients can flow back to it."""

    __array_priority__ = 200  # make `ndarray * Variable` call Variable.__rmul__

    def __init__(self, data, name: str | None = None, requires_grad: bool = True):
        self.data = data
        self.name = name
        self.grad = None
        self.creator: Function | None = None
        self.generation = 0
        self.requires_grad = requires_grad

    @property
    def shape(self):
        return self.data.shape

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def size(self):
        return self.data.size

    @property
    def dtype(self):
        return self.data.dtype

    def __len__(self):
        return len(self.data)

    def __repr__(self):
        return f"Variable({self.data!r})"

    def set_creator(self, func: Function) -> None:
        self.creator = func
        self.generation = func.generation + 1

    def cleargrad(self) -> None:
        self.grad = None

    def backward(self, retain_grad: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every reachable leaf's `.grad`, latest generation first.

        Intermediate gradients are dropped once used unless `retain_grad`, to bound memory.
        """
        xp = array_module()
        if self.grad is None:
            self.grad = xp.ones_like(self.data)
        heap: list = []
        seen = set()
        counter = 0  # breaks generation ties without comparing Functions

        def push(f):
            nonlocal counter
            if f is not None and id(f) not in seen:
                seen.add(id(f))
                heapq.heappush(heap, (-f.generation, counter, f))
                counter += 1

        push(self.creator)
        while heap:
            _, _, f = heapq.heappop(heap)
            gys = [o().grad for o in f.outputs]
            gxs = f.backward(*gys)
            if not isinstance(gxs, tuple):
                gxs = (gxs,)
            for x, gx in zip(f.inputs, gxs, strict=False):  # a function may give fewer gradients
                if gx is None or not x.requires_grad:
                    continue
                # Out of place: a backward may hand the same array to several inputs.
                x.grad = gx if x.grad is None else x.grad + gx
                push(x.creator)
            if not retain_grad:
                for o in f.outputs:
                    o().grad = None

    def reshape(self, *shape):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return reshape(self, shape)

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return transpose(self, axes or None)

    @property
    def T(self):
        return transpose(self, None)

    def sum(self, axis=None, keepdims: bool = False):
        return reduce_sum(self, axis, keepdims)

    def mean(self, axis=None, keepdims: bool = False):
        return reduce_mean(self, axis, keepdims)

    def __add__(self, other):
        return add(self, other)

    def __radd__(self, other):
        return add(self, other)

    def __sub__(self, other):
        return sub(self, other)

    def __rsub__(self, other):
        return sub(other, self)

    def __mul__(self, other):
        return mul(self, other)

    def __rmul__(self, other):
        return mul(self, other)

    def __truediv__(self, other):
        return div(self, other)

    def __rtruediv__(self, other):
        return div(other, self)

    def __neg__(self):
        return neg(self)

    def __pow__(self, exponent):
        return power(self, exponent)

    def __matmul__(self, other):
        return matmul(self, other)


class Parameter(Variable):
    """A trainable Variable: what layers own and optimizers update."""


def as_variable(obj, like: Variable | None = None) -> Variable:
    """Wrap arrays and scalars; scalars take `like`'s dtype so float32 stays float32."""
    if isinstance(obj, Variable):
        return obj
    xp = array_module()
    dtype = like.data.dtype if like is not None and not hasattr(obj, "dtype") else None
    return Variable(xp.asarray(obj, dtype=dtype), requires_grad=False)


class Function:
    """One operation of the graph. Subclasses implement forward(*arrays) and backward(*output_grads),
    where backward returns one gradient array (or None) per input."""

    generation = 0

    def __call__(self, *given):
        like = next((x for x in given if isinstance(x, Variable)), None)
        inputs = [as_variable(x, like) for x in given]
        ys = self.forward(*[x.data for x in inputs])
        if not isinstance(ys, tuple):
            ys = (ys,)
        outputs = [Variable(y) for y in ys]
        if ScratchConfig.enable_backprop and any(x.requires_grad for x in inputs):
            self.generation = max(x.generation for x in inputs)
            for y in outputs:
                y.set_creator(self)
            self.inputs = inputs
            # Weak references: the graph must not keep its own outputs alive (no reference cycles).
            self.outputs = [weakref.ref(y) for y in outputs]
        else:
            for y in outputs:
                y.requires_grad = False
        return outputs if len(outputs) > 1 else outputs[0]

    def forward(self, *xs):
        raise NotImplementedError

    def backward(self, *gys):
        raise NotImplementedError


def sum_to(array, shape):
    """Sum `array` down to `shape`: the gradient of broadcasting `shape` up to array.shape."""
    if array.shape == tuple(shape):
        return array
    lead = array.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(i + lead for i, n in enumerate(shape) if n == 1 and array.shape[i + lead] != 1)
    out = array.sum(axis=axes, keepdims=True)
    return out.reshape(shape) if lead else out


class Add(Function):
    def forward(self, a, b):
        return a + b

    def backward(self, gy):
        a, b = self.inputs
        return sum_to(gy, a.shape), sum_to(gy, b.shape)


class Sub(Function):
    def forward(self, a, b):
        return a - b

    def backward(self, gy):
        a, b = self.inputs
        return sum_to(gy, a.shape), sum_to(-gy, b.shape)


class Mul(Function):
    def forward(self, a, b):
        return a * b

    def backward(self, gy):
        a, b = self.inputs
        ga = sum_to(gy * b.data, a.shape) if a.requires_grad else None
        gb = sum_to(gy * a.data, b.shape) if b.requires_grad else None
        return ga, gb


class Div(Function):
    def forward(self, a, b):
        return a / b

    def backward(self, gy):
        a, b = self.inputs
        ga = sum_to(gy / b.data, a.shape) if a.requires_grad else None
        gb = sum_to(-gy * a.data / (b.data * b.data), b.shape) if b.requires_grad else None
        return ga, gb


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, gy):
        return -gy


class Power(Function):
    """x ** c for a constant exponent c."""

    def __init__(self, exponent: float):
        self.exponent = exponent

    def forward(self, a):
        return a**self.exponent

    def backward(self, gy):
        (a,) = self.inputs
        c = self.exponent
        return gy * (c * a.data ** (c - 1))


class MatMul(Function):
    def forward(self, a, b):
        return a @ b

    def backward(self, gy):
        a, b = self.inputs
        ga = gy @ b.data.swapaxes(-1, -2) if a.requires_grad else None
        gb = a.data.swapaxes(-1, -2) @ gy if b.requires_grad else None
        return (sum_to(ga, a.shape) if ga is not None else None), (sum_to(gb, b.shape) if gb is not None else None)


class Reshape(Function):
    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, a):
        self.in_shape = a.shape
        return a.reshape(self.shape)

    def backward(self, gy):
        return gy.reshape(self.in_shape)


class Transpose(Function):
    def __init__(self, axes=None):
        self.axes = axes

    def forward(self, a):
        return a.transpose(self.axes)

    def backward(self, gy):
        if self.axes is None:
            return gy.transpose()
        return gy.transpose(tuple(int(i) for i in np.argsort(self.axes)))  # a tuple: CuPy wants no array


class Sum(Function):
    def __init__(self, axis=None, keepdims: bool = False):
        self.axis = axis
        self.keepdims = keepdims

    def forward(self, a):
        self.in_shape = a.shape
        return a.sum(axis=self.axis, keepdims=self.keepdims)

    def backward(self, gy):
        xp = array_module()
        if not self.keepdims and self.axis is not None:
            axes = (self.axis,) if isinstance(self.axis, int) else self.axis
            axes = sorted(ax % len(self.in_shape) for ax in axes)
            for ax in axes:
                gy = xp.expand_dims(gy, ax)
        return xp.broadcast_to(gy, self.in_shape)


class BroadcastTo(Function):
    def __init__(self, shape):
        self.shape = tuple(shape)

    def forward(self, a):
        return array_module().broadcast_to(a, self.shape)

    def backward(self, gy):
        return sum_to(gy, self.inputs[0].shape)


def add(a, b):
    return Add()(a, b)


def sub(a, b):
    return Sub()(a, b)


def mul(a, b):
    return Mul()(a, b)


def div(a, b):
    return Div()(a, b)


def neg(a):
    return Neg()(a)


def power(a, exponent: float):
    return Power(exponent)(a)


def matmul(a, b):
    return MatMul()(a, b)


def reshape(x, shape):
    return Reshape(shape)(x)


def transpose(x, axes=None):
    return Transpose(axes)(x)


def reduce_sum(x, axis=None, keepdims: bool = False):
    """Sum over `axis` (all axes when None), like ndarray.sum."""
    return Sum(axis, keepdims)(x)


def reduce_mean(x, axis=None, keepdims: bool = False):
    """Mean over `axis` (all axes when None), composed from sum and a division."""
    x = as_variable(x)
    if axis is None:
        count = x.size
    else:
        axes = (axis,) if isinstance(axis, int) else axis
        count = 1
        for ax in axes:
            count *= x.shape[ax]
    return reduce_sum(x, axis, keepdims) * (1.0 / count)


def broadcast_to(x, shape):
    return BroadcastTo(shape)(x)

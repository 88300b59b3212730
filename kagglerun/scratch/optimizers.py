"""Optimizers with PyTorch's update rules: SGD with momentum and Adam, both with L2 weight decay."""

from __future__ import annotations

from .core import array_module, to_numpy


class Optimizer:
    """Updates a fixed list of Parameters in place from their `.grad`; parameters without a grad are skipped."""

    def __init__(self, params, lr: float, weight_decay: float = 0.0):
        self.params = list(params)
        self.lr = lr
        self.weight_decay = weight_decay
        self.slots: dict[str, list] = {}  # per-parameter state arrays, e.g. {"m": [...], "v": [...]}
        self.steps = 0

    def _slot(self, name: str, i: int):
        xp = array_module()
        arrays = self.slots.setdefault(name, [None] * len(self.params))
        if arrays[i] is None:
            arrays[i] = xp.zeros_like(self.params[i].data)
        return arrays[i]

    def step(self) -> None:
        self.steps += 1
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad
            if self.weight_decay:
                g = g + self.weight_decay * p.data  # L2 added to the gradient, as torch's SGD and Adam
            self.update(i, p, g)

    def update(self, i: int, p, g) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {
            "lr": self.lr,
            "steps": self.steps,
            "slots": {k: [None if a is None else to_numpy(a).copy() for a in v] for k, v in self.slots.items()},
        }

    def load_state_dict(self, state: dict) -> None:
        xp = array_module()
        self.lr = state["lr"]
        self.steps = state["steps"]
        self.slots = {k: [None if a is None else xp.asarray(a) for a in v] for k, v in state["slots"].items()}


class SGD(Optimizer):
    """v = momentum v + g;  p -= lr v  (torch.optim.SGD without dampening or Nesterov)."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, weight_decay: float = 0.0):
        super().__init__(params, lr, weight_decay)
        self.momentum = momentum

    def update(self, i, p, g):
        if self.momentum:
            first = self.slots.get("velocity", [None] * len(self.params))[i] is None
            v = self._slot("velocity", i)
            if first:  # torch starts the buffer at the first gradient, not at zero
                v[...] = g
            else:
                v *= self.momentum
                v += g
            g = v
        p.data -= self.lr * g


class Adam(Optimizer):
    """torch.optim.Adam: bias-corrected first and second moments, eps added outside the square root."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, lr, weight_decay)
        self.beta1, self.beta2 = betas
        self.eps = eps

    def update(self, i, p, g):
        xp = array_module()
        m, v = self._slot("m", i), self._slot("v", i)
        m *= self.beta1
        m += (1 - self.beta1) * g
        v *= self.beta2
        v += (1 - self.beta2) * (g * g)
        correction1 = 1 - self.beta1**self.steps
        correction2 = 1 - self.beta2**self.steps
        denom = xp.sqrt(v) / correction2**0.5 + self.eps
        p.data -= (self.lr / correction1) * m / denom

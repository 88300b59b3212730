"""The seed's augmentation as one batched operation, with independent random parameters for every image.

torchvision's transforms draw one set of parameters per call; applied per image (as the seed did, on the
CPU, through PIL) they are slow, and applied to a batch they share one rotation, one flip, one jitter for
the whole batch. Here every image gets its own parameters, drawn from the same distributions as
RandomRotation(deg) -> RandomHorizontalFlip() -> RandomAffine(translate) -> ColorJitter(b, c, s, h),
and the whole batch is transformed on its device at once: one affine grid sample for the geometry and
masked blends for the colour. Part of the training core: torch only.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision's rgb_to_grayscale


def geometry_params(n: int, size: int, d: dict[str, Any], g: torch.Generator, device) -> dict[str, torch.Tensor]:
    """Per-image rotation (degrees), flip (bool) and integer pixel shifts, drawn like torchvision's."""
    u = torch.rand(n, 4, generator=g, device=device)
    angle = (u[:, 0] * 2 - 1) * d["rotation"]
    flip = (u[:, 1] < 0.5) & bool(d["hflip"])
    max_shift = d["translate"] * size
    # torchvision rounds a uniform draw in [-max, max] to whole pixels
    shift = torch.round((u[:, 2:] * 2 - 1) * max_shift)
    return {"angle": angle, "flip": flip, "shift": shift}


def apply_geometry(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Rotate about the centre, flip, then translate, with nearest sampling and black fill."""
    n, _, h, w = x.shape
    theta = -p["angle"] * (math.pi / 180.0)  # grid_sample maps output to input: use the inverse rotation
    cos, sin = torch.cos(theta), torch.sin(theta)
    s = torch.where(p["flip"], -1.0, 1.0).to(x.dtype)
    # A = Rot(-angle) @ diag(s, 1); input = A @ (out - t), with t in normalised units
    a = torch.stack([torch.stack([cos * s, -sin], 1), torch.stack([sin * s, cos], 1)], 1).to(x.dtype)
    t = torch.stack([p["shift"][:, 0] * (2.0 / w), p["shift"][:, 1] * (2.0 / h)], 1).to(x.dtype)
    offset = -(a @ t.unsqueeze(-1))
    grid = F.affine_grid(torch.cat([a, offset], 2), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)


def colour_params(n: int, d: dict[str, Any], g: torch.Generator, device) -> dict[str, torch.Tensor]:
    """Per-image brightness, contrast, saturation and hue factors and a random order of the four."""
    u = torch.rand(n, 4, generator=g, device=device)
    return {
        "brightness": 1 + (u[:, 0] * 2 - 1) * d["brightness"],
        "contrast": 1 + (u[:, 1] * 2 - 1) * d["contrast"],
        "saturation": 1 + (u[:, 2] * 2 - 1) * d["saturation"],
        "hue": (u[:, 3] * 2 - 1) * d["hue"],
        "order": torch.argsort(torch.rand(n, 4, generator=g, device=device), dim=1),
    }


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    r, g, b = x.unbind(1)
    return (_GRAY[0] * r + _GRAY[1] * g + _GRAY[2] * b).unsqueeze(1)


def _blend(x: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * other).clamp_(0, 1)


def _shift_hue(x: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """RGB -> HSV, rotate the hue, -> RGB (the conversion torchvision's adjust_hue uses)."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    v = maxc
    s = torch.where(maxc > 0, delta / maxc.clamp_min(1e-12), torch.zeros_like(maxc))
    dsafe = delta.clamp_min(1e-12)
    rc, gc, bc = (maxc - r) / dsafe, (maxc - g) / dsafe, (maxc - b) / dsafe
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    h = (h + hue.view(-1, 1, 1)) % 1.0
    i = torch.floor(h * 6.0)
    f = h * 6.0 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.long() % 6
    choices_r = torch.stack([v, q, p, p, t, v], 1)
    choices_g = torch.stack([t, v, v, q, p, p], 1)
    choices_b = torch.stack([p, p, t, v, v, q], 1)
    idx = i.unsqueeze(1)
    return torch.cat([c.gather(1, idx) for c in (choices_r, choices_g, choices_b)], 1)


def apply_colour(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """ColorJitter with per-image factors, each image taking the four adjustments in its own order.

    At each of the four steps every adjustment runs on the whole batch with an identity factor for the
    images whose order puts a different adjustment at that step: no host synchronisation, fixed shapes."""
    rgb = x.shape[1] == 3
    one, zero = torch.ones_like(p["brightness"]), torch.zeros_like(p["hue"])
    for step in range(4):
        op = p["order"][:, step]
        b = torch.where(op == 0, p["brightness"], one)
        x = (x * b.view(-1, 1, 1, 1)).clamp_(0, 1)
        c = torch.where(op == 1, p["contrast"], one)
        x = _blend(x, _gray(x).mean(dim=(1, 2, 3), keepdim=True), c)
        if rgb:
            s = torch.where(op == 2, p["saturation"], one)
            x = _blend(x, _gray(x), s)
            h = torch.where(op == 3, p["hue"], zero)
            x = torch.where((op == 3).view(-1, 1, 1, 1), _shift_hue(x, h), x)
    return x


def augment_batch(x: torch.Tensor, g: torch.Generator, d: dict[str, Any]) -> torch.Tensor:
    """Augment a float batch [B, C, H, W] in [0, 1] as the experiment's data settings say."""
    if d["augment"] and (d["rotation"] or d["hflip"] or d["translate"]):
        x = apply_geometry(x, geometry_params(x.shape[0], x.shape[-1], d, g, x.device))
    if d["color_jitter"]:
        x = apply_colour(x, colour_params(x.shape[0], d, g, x.device))
    return x


def normalise(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s

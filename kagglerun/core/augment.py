"""The seed's augmentation as one batched operation, with independent random parameters for every image.

torchvision's transforms draw one set of parameters per call; applied per image (as the seed did, on the
CPU, through PIL) they are slow, and applied to a batch they share one rotation, one flip, one jitter for
the whole batch. Here every image gets its own parameters, drawn from the same distributions as
RandomRotation(deg) -> RandomHorizontalFlip() -> RandomAffine(0, translate) -> ColorJitter(b, c, s, h),
and the whole batch is transformed on its device at once: the three geometric steps compose into one
nearest-neighbour gather (done on the uint8 pixels), the colour steps into per-image blends in each
image's own random order. Fixed shapes, no data-dependent branches: nothing waits for the device.
Part of the training core: torch only.
"""

from __future__ import annotations

import math
from typing import Any

import torch

_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's convert("L") and torchvision's rgb_to_grayscale
_BRIGHTNESS, _CONTRAST, _SATURATION, _HUE = range(4)  # ColorJitter's operation indices
_CPU_COLOUR_SLICE = 64  # images coloured at a time on a CPU: 64 x 3 x 32 x 32 floats stay in the L2 cache


def geometry_params(n: int, size: int, d: dict[str, Any], g: torch.Generator, device) -> dict[str, torch.Tensor]:
    """Per-image rotation (degrees, uniform in +-rotation), flip (p = 0.5) and whole-pixel shifts [n, 2]
    (x, y), drawn as RandomRotation, RandomHorizontalFlip and RandomAffine.get_params draw them."""
    u = torch.rand(n, 4, generator=g, device=device)
    angle = u[:, 0].mul(2 * d["rotation"]).sub_(d["rotation"])
    flip = u[:, 1] < (0.5 if d["hflip"] else 0.0)
    # RandomAffine rounds a uniform draw in [-translate * size, translate * size] to whole pixels
    max_shift = d["translate"] * size
    shift = u[:, 2:].mul(2 * max_shift).sub_(max_shift).round_()
    return {"angle": angle, "flip": flip, "shift": shift}


def apply_geometry(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """Rotate about the centre (counter-clockwise for positive angles, as PIL), flip, then shift, with
    nearest sampling and black fill; works on any dtype (uint8 is cheapest).

    Flip and whole-pixel shift move pixel centres onto pixel centres, so composing the three steps into
    one sampling gives exactly the pixels of applying them one after another, as the seed did."""
    n, c, h, w = x.shape
    rad = p["angle"].float() * (math.pi / 180.0)
    cos, sin = torch.cos(rad).view(n, 1, 1), torch.sin(rad).view(n, 1, 1)
    sign = p["flip"].float().mul_(-2).add_(1).view(n, 1)
    tx, ty = p["shift"].float().unbind(1)
    # Output pixel centres relative to the image centre (y down); q undoes the shift, then the flip ...
    u = torch.arange(w, device=x.device, dtype=torch.float32).add_(0.5 - w / 2)
    v = torch.arange(h, device=x.device, dtype=torch.float32).add_(0.5 - h / 2)
    qx = (u - tx.view(n, 1)).mul_(sign).view(n, 1, w)
    qy = (v - ty.view(n, 1)).view(n, h, 1)
    # ... and must lie on the canvas: RandomAffine fills what its shift brings in from beyond with black.
    # Such points are sent far left of the image (on the small [n, 1, w] and [n, h, 1] tensors, so these
    # comparisons cost nothing).
    far = 4.0 * (w + h)
    off_x, off_y = (qx.abs() > w / 2).float().mul_(far), (qy.abs() > h / 2).float().mul_(far)
    # Then the rotation; PIL samples the source pixel whose square holds the point (floor). Points off
    # the image land on a one-pixel black border added around it.
    col = (cos * qx).add_(w / 2).sub_(off_x).sub(sin * qy + off_y).floor_().clamp_(-1, w)
    row = (sin * qx).add_(h / 2).add(cos * qy).floor_().clamp_(-1, h)
    index = row.mul_(w + 2).add_(col).add_(w + 3).long().view(n, 1, h * w)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1)).view(n, c, (h + 2) * (w + 2))
    return padded.gather(2, index.expand(n, c, h * w)).view(n, c, h, w)


def colour_params(n: int, d: dict[str, Any], g: torch.Generator, device) -> dict[str, torch.Tensor]:
    """Per-image brightness, contrast, saturation and hue factors and a random order of the four, drawn as
    ColorJitter.get_params draws them (factors uniform in [1 - b, 1 + b], hue in [-h, h])."""
    u = torch.rand(n, 8, generator=g, device=device)
    return {
        "brightness": 1 + (u[:, 0] * 2 - 1) * d["brightness"],
        "contrast": 1 + (u[:, 1] * 2 - 1) * d["contrast"],
        "saturation": 1 + (u[:, 2] * 2 - 1) * d["saturation"],
        "hue": (u[:, 3] * 2 - 1) * d["hue"],
        "order": torch.argsort(u[:, 4:], dim=1),  # order[:, k] = the operation at step k
    }


def _blend_step(x: torch.Tensor, f: torch.Tensor, to_mean: torch.Tensor, to_grey: torch.Tensor) -> torch.Tensor:
    """One step of brightness, contrast or saturation for every image at once, in place: all three are
    blends f * x + (1 - f) * other, clamped to [0, 1] as torchvision's, with black (brightness), the mean
    grey level (contrast: to_mean = 1 - f) or the pixel's own grey level (saturation: to_grey = 1 - f).
    An image whose step is another adjustment has f = 1 and both weights 0. Arguments are [n, 1, 1]."""
    if x.shape[1] == 1:
        grey = x[:, 0].clone()
    else:
        r, g, b = x.unbind(1)
        grey = (r * _LUMA[0]).add_(g, alpha=_LUMA[1]).add_(b, alpha=_LUMA[2])
    to_mean = grey.mean(dim=(1, 2), keepdim=True).mul_(to_mean)
    other = grey.mul_(to_grey).add_(to_mean)
    return x.mul_(f.unsqueeze(1)).add_(other.unsqueeze(1)).clamp_(0, 1)


def shift_hue(x: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """Rotate every pixel's HSV hue by `hue` (fraction of a turn, per image), keeping saturation and value;
    in place on an RGB float batch in [0, 1].

    The hexagonal HSV hue of colorsys and torchvision's adjust_hue, in sextants h in [0, 6):
    (G - B) / delta where R is the largest channel, 2 + (B - R) / delta where G is, 4 + (R - G) / delta
    where B is (delta = max - min). Back to RGB, a channel is max - delta * clamp(2 - |m|, 0, 1), where m is
    the channel's offset from the hue at which it is smallest (R: h - 3, G: h - 5, B: h - 1) wrapped into
    [-3, 3); all in whole-plane arithmetic, no per-pixel branching."""
    n = x.shape[0]
    r, g, b = x.unbind(1)
    maxc = torch.maximum(torch.maximum(r, g), b)
    delta = maxc - torch.minimum(torch.minimum(r, g), b)
    # 1 where a channel is the largest (ties pick R before G before B, as colorsys), else 0; sign() of a
    # difference, not a comparison: on a CPU boolean masks cost more than the rest of this function
    r_max = (r - maxc).sign_().add_(1)
    g_max = (g - maxc).sign_().add_(1).mul_(1 - r_max)
    b_max = (1 - r_max).sub_(g_max)
    numer = (g - b).mul_(r_max).addcmul_(b - r, g_max).addcmul_(r - g, b_max)
    # m for R: the shifted hue minus 3 (the sextant base is 2 for G, 4 for B); G's is m - 2, B's m + 2
    m = numer.div_(delta.clamp_min(1e-12)).add_(r_max, alpha=-4).add_(g_max, alpha=-2)
    m.add_((6 * hue + 1).view(n, 1, 1))
    offsets = torch.arange(0.0, -6.0, -2.0, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)  # B: -4 = +2 mod 6
    k = m.unsqueeze(1) + offsets
    k.sub_((k + 3).div_(6).floor_().mul_(6))  # wrapped into [-3, 3)
    drop = k.abs_().neg_().add_(2).clamp_(0, 1).mul_(delta.unsqueeze(1))
    return torch.sub(maxc.unsqueeze(1), drop, out=x)


def apply_colour(x: torch.Tensor, p: dict[str, torch.Tensor]) -> torch.Tensor:
    """ColorJitter with per-image factors, each image taking the four adjustments in its own order; in place
    on a float batch in [0, 1].

    The hue rotation is the costly step, so it runs once for the whole batch: every image first takes the
    blends its order puts before the hue (three step slots, factor 1 where nothing is due), then the hue,
    then the blends after it. On one channel saturation and hue do nothing, as in torchvision."""
    n = x.shape[0]
    order = p["order"]
    factors = torch.stack([p["brightness"], p["contrast"], p["saturation"], torch.ones_like(p["hue"])], 1)
    rgb = x.shape[1] == 3
    if rgb:  # slots: steps 0, 1, 2 where before the hue, then steps 1, 2, 3 where after it
        hue_step = torch.argmax((order == _HUE).to(torch.int8), dim=1, keepdim=True)
        steps = torch.arange(6, device=x.device) % 3 + torch.arange(6, device=x.device) // 3
        slot_op = order[:, steps]
        due = torch.cat([steps[:3] < hue_step, steps[3:] > hue_step], 1)
    else:
        factors[:, _SATURATION] = 1.0
        slot_op, due = order, order < _HUE
    f = torch.where(due, factors.gather(1, slot_op), 1.0)
    to_mean = ((slot_op == _CONTRAST) * (1 - f)).view(n, -1, 1, 1)
    to_grey = ((slot_op == _SATURATION) * (1 - f)).view(n, -1, 1, 1)
    f = f.view(n, -1, 1, 1)
    for slot in range(f.shape[1]):
        if rgb and slot == 3:
            x = shift_hue(x, p["hue"])
        x = _blend_step(x, f[:, slot], to_mean[:, slot], to_grey[:, slot])
    return x


def augment_batch(x: torch.Tensor, g: torch.Generator, d: dict[str, Any]) -> torch.Tensor:
    """Augment a batch [B, C, H, W] as the experiment's data settings `d` say; x is uint8 (0..255) or
    float in [0, 1]; returns float in [0, 1]. Random draws come from `g` only, in a fixed order."""
    moved = bool(d["augment"] and (d["rotation"] or d["hflip"] or d["translate"]))
    if moved:
        x = apply_geometry(x, geometry_params(x.shape[0], x.shape[-1], d, g, x.device))
    if x.dtype == torch.uint8:
        x = x.float().div_(255)
    elif not moved:
        x = x.clone()  # the colour steps work in place; leave the caller's batch alone
    if d["color_jitter"]:
        p = colour_params(x.shape[0], d, g, x.device)
        if x.device.type == "cpu" and x.shape[0] > _CPU_COLOUR_SLICE:
            # About twenty passes over the batch: on a CPU a large batch spills out of the cache between
            # them, so colour it a slice at a time (the parameters were drawn for the whole batch above).
            for start in range(0, x.shape[0], _CPU_COLOUR_SLICE):
                part = slice(start, start + _CPU_COLOUR_SLICE)
                x[part] = apply_colour(x[part], {k: v[part] for k, v in p.items()})
        else:
            x = apply_colour(x, p)
    return x


def normalise(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    m = torch.tensor(mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - m) / s

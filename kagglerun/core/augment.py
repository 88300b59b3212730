"""The seed's augmentation as one batched operation, with independent random parameters for every image.

torchvision's transforms draw one set of parameters per call; applied per image (as the seed did, on the
CPU, through PIL) they are slow, and applied to a batch they share one rotation, one flip, one jitter for
the whole batch. Here every image gets its own parameters, drawn from the same distributions as
RandomRotation(deg) -> RandomHorizontalFlip() -> RandomAffine(0, translate) -> ColorJitter(b, c, s, h),
and the whole batch is transformed on its device at once: the three geometric steps compose into one
nearest-neighbour gather (done on the uint8 pixels), the colour steps into per-image blends in each
image's own random order around one hue rotation. On a GPU: fixed shapes, no data-dependent branches,
nothing waits for the device. On a CPU, where the cost is passes over memory and the overhead of each
operation: slices that stay in the cache, scratch memory reused between calls, each slice sorted so that a
blend covers only the images due for it, and everything that is not pixels planned once per batch.
Part of the training core: torch only.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import torch

_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601-2, as PIL's convert("L") and torchvision's rgb_to_grayscale
_BRIGHTNESS, _CONTRAST, _SATURATION, _HUE = range(4)  # ColorJitter's operation indices
_CPU_SLICE = 128  # images augmented at a time on a CPU, while they stay in its cache
_HUE_LOW = (3.0, 5.0, 1.0)  # the hue (in sextants) at which R, G and B are the smallest channel
_workspace = threading.local()


def _scratch(name: str, shape: tuple[int, ...], like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A scratch tensor of `shape` on like's device, of like's dtype unless given, its memory kept between
    calls (per thread); for use within one call only.

    On a CPU, fresh temporaries of a few hundred kB come from mmap and go back on free, so each costs a
    page fault per 4 kB: more than the arithmetic on it. Reusing the same memory avoids that."""
    cache = getattr(_workspace, "buffers", None)
    if cache is None:
        cache = _workspace.buffers = {}
    dtype = dtype or like.dtype
    key = (name, like.device, dtype)
    numel = math.prod(shape)
    buf = cache.get(key)
    if buf is None or buf.numel() < numel:
        buf = cache[key] = torch.empty(numel, device=like.device, dtype=dtype)
    return buf[:numel].view(shape)


def _const(values: tuple, device, dtype: torch.dtype) -> torch.Tensor:
    """A small constant tensor, made once per device (on a GPU each would otherwise be a copy from the host)."""
    cache = getattr(_workspace, "constants", None)
    if cache is None:
        cache = _workspace.constants = {}
    key = (values, torch.device(device), dtype)
    if key not in cache:
        cache[key] = torch.tensor(values, device=device, dtype=dtype)
    return cache[key]


def _planes(k: int, like: torch.Tensor) -> torch.Tensor:
    """k scratch planes [k, n, h, w], each shaped like one channel of `like` [n, c, h, w]."""
    n, _, h, w = like.shape
    return _scratch("planes", (k, n, h, w), like)


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


def apply_geometry(x: torch.Tensor, p: dict[str, torch.Tensor], out: torch.Tensor | None = None) -> torch.Tensor:
    """Rotate about the centre (counter-clockwise for positive angles, as PIL), flip, then shift, with
    nearest sampling and black fill; works on any dtype (uint8 is cheapest).

    Flip and whole-pixel shift move pixel centres onto pixel centres, so composing the three steps into
    one sampling gives exactly the pixels of applying them one after another, as the seed did."""
    return _sample(x, _sampling_terms(p, x.shape[-2], x.shape[-1]), out)


def _sampling_terms(p: dict[str, torch.Tensor], h: int, w: int) -> tuple[torch.Tensor, ...]:
    """Per image, the source pixel of every output pixel as small terms: column col_x - col_y and row
    row_x + row_y (col_x, row_x [n, 1, w]; col_y, row_y [n, h, 1]), both shifted by one, before the floor."""
    n = p["angle"].shape[0]
    device = p["angle"].device
    rad = p["angle"].float() * (math.pi / 180.0)
    cos, sin = torch.cos(rad).view(n, 1, 1), torch.sin(rad).view(n, 1, 1)
    sign = p["flip"].float().mul_(-2).add_(1).view(n, 1)
    tx, ty = p["shift"].float().unbind(1)
    # Output pixel centres relative to the image centre (y down); q undoes the shift, then the flip ...
    u = torch.arange(w, device=device, dtype=torch.float32).add_(0.5 - w / 2)
    v = torch.arange(h, device=device, dtype=torch.float32).add_(0.5 - h / 2)
    qx = (u - tx.view(n, 1)).mul_(sign).view(n, 1, w)
    qy = (v - ty.view(n, 1)).view(n, h, 1)
    # ... and must lie on the canvas: RandomAffine fills what its shift brings in from beyond with black.
    # Such points are sent far left of the image.
    far = 4.0 * (w + h)
    off_x, off_y = (qx.abs() > w / 2).float().mul_(far), (qy.abs() > h / 2).float().mul_(far)
    # Then the rotation; PIL samples the source pixel whose square holds the point (floor).
    return ((cos * qx).add_(w / 2 + 1).sub_(off_x), (sin * qy).add_(off_y),
            (sin * qx).add_(h / 2 + 1), cos * qy)


def _sample(x: torch.Tensor, terms: tuple[torch.Tensor, ...], out: torch.Tensor | None) -> torch.Tensor:
    """Every output pixel from its source pixel (_sampling_terms). Points off the image land on a one-pixel
    black border added around it: source column and row are clamped to [-1, w] and [-1, h], here shifted by
    one into [0, w + 1] and [0, h + 1] (floor commutes with the integer shift and clamp, and is truncation
    once non-negative): five passes over the [n, h, w] index, in scratch memory."""
    n, c, h, w = x.shape
    col_x, col_y, row_x, row_y = terms
    col = torch.sub(col_x, col_y, out=_scratch("col", (n, h, w), col_x))
    row = torch.add(row_x, row_y, out=_scratch("row", (n, h, w), col_x))
    col.clamp_(0, w + 1).add_(row.clamp_(0, h + 1).floor_(), alpha=w + 2)
    index = _scratch("index", (n, 1, h * w), col, torch.int64).copy_(col.view(n, 1, h * w))
    # (into out's dtype where it differs: converted on the way in, gathered straight into out)
    padded = _scratch("padded", (n, c, h + 2, w + 2), x, out.dtype if out is not None else x.dtype).fill_(0)
    padded[:, :, 1:-1, 1:-1] = x
    if out is not None:
        out = out.view(n, c, h * w)
    return torch.gather(padded.view(n, c, -1), 2, index.expand(n, c, h * w), out=out).view(n, c, h, w)


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


def _blend(x: torch.Tensor, f: torch.Tensor, to_grey: torch.Tensor, to_mean: torch.Tensor,
           luma: torch.Tensor) -> torch.Tensor:
    """One step of brightness, contrast or saturation for every image of x [m, c, h * w] at once, in place.

    All three are blends f * x + (1 - f) * other, clamped to [0, 1] as torchvision's, with black
    (brightness), the mean grey level (contrast: to_mean = 1 - f) or the pixel's own grey level (saturation:
    to_grey = 1 - f); the weights are [m, 1, 1], luma [1, c]. An image with f = 1 and both weights 0 is
    left as it is. Few, large operations: on a CPU each call costs more than a small batch's arithmetic."""
    m, _, hw = x.shape
    grey = torch.matmul(luma, x, out=_scratch("grey", (m, 1, hw), x))
    mean = grey.mean(2, keepdim=True).mul_(to_mean)
    other = grey.mul_(to_grey).add_(mean)
    return torch.addcmul(other, x, f, out=x).clamp_(0, 1)


def shift_hue(x: torch.Tensor, hue: torch.Tensor) -> torch.Tensor:
    """Rotate every pixel's HSV hue by `hue` (fraction of a turn, per image), keeping saturation and value;
    in place on an RGB float batch in [0, 1]."""
    return _rotate_hue(x, _hue_offsets(hue, x.dtype))


def _hue_offsets(hue: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Per image and channel, the hue shift (in sextants) minus the hue at which the channel is the
    smallest, wrapped into [-5, 1): [n, 3, 1, 1]."""
    low = _const(_HUE_LOW, hue.device, dtype)
    offset = hue.to(dtype).mul(6).view(-1, 1) - low
    return offset.sub_(offset.add(5).div_(6).floor_().mul_(6)).view(-1, 3, 1, 1)


def _rotate_hue(x: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """The hue rotation of shift_hue, with the offsets of _hue_offsets.

    The hexagonal HSV hue of colorsys and torchvision's adjust_hue, in sextants: h = (G - B) / delta where R
    is the largest channel, 2 + (B - R) / delta where G is, 4 + (R - G) / delta where B is (delta = max -
    min; ties pick R before G before B, as colorsys), so h is in [-1, 5]. Back to RGB, a channel is
    max - delta * clamp(2 - d, 0, 1), where d is the distance around the hexagon from the shifted hue to the
    hue at which the channel is the smallest (R 3, G 5, B 1). With k = h + offset, k is in [-6, 6) and
    d = 3 - ||k| - 3|. All of it is computed scaled by delta, so there is no division: a triangle wave, no
    per-pixel branching, six scratch planes."""
    r, g, b = x.unbind(1)
    w = _planes(6, x)
    maxc = torch.maximum(torch.maximum(r, g, out=w[0]), b, out=w[0])
    minc = torch.minimum(torch.minimum(r, g, out=w[1]), b, out=w[1])
    delta = torch.sub(maxc, minc, out=w[2])
    # delta * h: 4 delta + R - G, unless G is the largest (2 delta + B - R), unless R is (G - B); lerp with
    # a weight of exactly 0 or 1 gives exactly one of its ends
    g_max = torch.eq(g, maxc, out=w[3])
    dh = torch.lerp(torch.sub(r, g, out=w[4]).add_(delta, alpha=4), torch.sub(b, r, out=w[5]).add_(delta, alpha=2),
                    g_max, out=w[4])
    dh = torch.lerp(dh, torch.sub(g, b, out=w[5]), torch.eq(r, maxc, out=w[3]), out=w[4])
    top = torch.add(maxc, delta, out=w[0])  # max + delta
    # every channel at once, written over x (no longer read): delta * k, then delta * ||k| - 3|
    k = torch.addcmul(dh.unsqueeze(1), delta.unsqueeze(1), offset, out=x)
    y = k.abs_().sub_(delta.unsqueeze(1), alpha=3).abs_()
    # max - clamp(y - delta, 0, delta), as (max + delta - y) clamped to [min, max]
    return torch.clamp(torch.sub(top.unsqueeze(1), y, out=x), min=minc.unsqueeze(1),
                       max=torch.sub(top, delta, out=w[3]).unsqueeze(1), out=x)


def _rows(x: torch.Tensor, index: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """x's images in the order of `index`, into `out` (flat rows are much cheaper to gather than 4-d ones)."""
    n = x.shape[0]
    return torch.index_select(x.view(n, -1), 0, index, out=out.view(n, -1)).view(x.shape)


@dataclass
class _ColourPlan:
    """Everything about a batch's colour jitter but the pixels, worked out once for the whole batch (some
    forty small operations, which would otherwise cost more than a slice's arithmetic on a CPU)."""

    weights: torch.Tensor  # [slot, 3, n, 1, 1]: factor, weight of the grey level, of the mean grey level
    offset: torch.Tensor | None  # hue offsets [n, 3, 1, 1] (RGB only)
    luma: torch.Tensor  # [1, c]
    slice_len: int  # the batch is coloured in slices of this many images
    order: torch.Tensor | None = None  # sorted: per position, the image there, counted from its slice's start
    back: torch.Tensor | None = None  # the inverse of `order`, slice by slice
    runs: list[list[tuple[int, int]]] | None = None  # sorted: per slice and slot, the positions due (a run)


def _plan_colour(p: dict[str, torch.Tensor], x: torch.Tensor, sort: bool, slice_len: int) -> _ColourPlan:
    """The colour plan for batch x: slots are steps 0, 1, 2 before the hue and 1, 2, 3 after it (RGB), or
    brightness and contrast in each image's order (one channel). Sorted, the images of each slice of
    `slice_len` are put in order of where their hue step falls, so that the images due for each slot are a
    contiguous run; otherwise a slot covers every image, with factor 1 where nothing is due."""
    n, c, dtype, device = x.shape[0], x.shape[1], x.dtype, x.device
    order = p["order"]
    factors = torch.stack([p["brightness"], p["contrast"], p["saturation"], torch.ones_like(p["hue"])], 1).to(dtype)
    if c == 1:  # saturation and hue do nothing to one channel, as in torchvision
        step_of = torch.argsort(order, dim=1)  # step_of[:, op] = the step at which op comes
        contrast_first = (step_of[:, _CONTRAST] < step_of[:, _BRIGHTNESS]).long()
        slot_op, sort, hue = torch.stack([contrast_first, 1 - contrast_first], 1), False, None  # brightness 0, contrast 1
    else:
        slot_op, hue = order[:, [0, 1, 2, 1, 2, 3]], p["hue"]
        hue_step = (order == _HUE).to(torch.int8).argmax(1)
    runs = None
    if sort:
        first = torch.arange(n, device=device).div_(slice_len, rounding_mode="floor")  # each image's slice
        key = first.mul(4).add_(3 - hue_step)  # by slice, then by hue step from last to first
        perm = torch.argsort(key, stable=True)
        first.mul_(slice_len)  # each image's slice's first image
        slot_op, factors = slot_op[perm], factors[perm]
        hue = hue[perm] if hue is not None else None
        # per slice, how many images take their hue after step k (k = 0, 1, 2): they are a prefix of the
        # slice, due for a blend at step k before the hue; the rest, a suffix, take one at step k + 1 after
        counts = torch.bincount(key, minlength=4 * math.ceil(n / slice_len)).view(-1, 4).tolist()
        runs = []
        for start, (c3, c2, c1, _) in zip(range(0, n, slice_len), counts, strict=True):
            later = [start + c3 + c2 + c1, start + c3 + c2, start + c3]
            stop = min(start + slice_len, n)
            runs.append([(start, later[k]) for k in range(3)] + [(later[k], stop) for k in range(3)])
    f = factors.gather(1, slot_op)
    if c == 3 and not sort:
        steps = _const((0, 1, 2, 1, 2, 3), device, torch.int64)
        due = torch.cat([hue_step.unsqueeze(1) > steps[:3], hue_step.unsqueeze(1) < steps[3:]], 1)
        f = torch.where(due, f, 1.0)
    keep = 1 - f
    weights = torch.stack([f, (slot_op == _SATURATION).to(dtype).mul_(keep), (slot_op == _CONTRAST).to(dtype).mul_(keep)])
    plan = _ColourPlan(weights.permute(2, 0, 1).contiguous().view(-1, 3, n, 1, 1),
                       _hue_offsets(hue, dtype) if hue is not None else None,
                       _const(_LUMA if c == 3 else (1.0,), device, dtype).view(1, -1), slice_len)
    if sort:
        plan.order, plan.back, plan.runs = perm - first, torch.argsort(perm) - first, runs
    return plan


def _colour(x: torch.Tensor, plan: _ColourPlan, start: int = 0) -> torch.Tensor:
    """Colour the images start, start + 1, ... of the planned batch (x, a slice of it), in place."""
    n = x.shape[0]
    part = slice(start, start + n)
    given = x
    if plan.order is not None:
        x = _rows(x, plan.order[part], _scratch("sorted", x.shape, x))
    flat = x.view(n, x.shape[1], -1)
    for slot in range(plan.weights.shape[0]):
        if slot == 3 and plan.offset is not None:
            _rotate_hue(x, plan.offset[part])
        if plan.runs is None:
            f, to_grey, to_mean = plan.weights[slot, :, part].unbind(0)
            _blend(flat, f, to_grey, to_mean, plan.luma)
        else:
            a, b = plan.runs[start // plan.slice_len][slot]
            if a < b:
                f, to_grey, to_mean = plan.weights[slot, :, a:b].unbind(0)
                _blend(flat[a - start : b - start], f, to_grey, to_mean, plan.luma)
    if plan.back is not None:
        _rows(x, plan.back[part], out=given)
    return given


def apply_colour(x: torch.Tensor, p: dict[str, torch.Tensor], sort: bool | None = None) -> torch.Tensor:
    """ColorJitter with per-image factors, each image taking the four adjustments in its own order; in place
    on a float batch in [0, 1].

    The hue rotation is the costly step, so it runs once for the whole batch: every image first takes the
    blends its order puts before the hue, then the hue, then the blends after it. With `sort` (the default on
    a CPU) the images are put in order of where their hue step falls, so each blend step covers exactly the
    images due for it, a contiguous run: three blends per image. Without (the default on a GPU, where reading
    the counts would make the host wait) each step covers the whole batch, factor 1 where nothing is due: six
    blends per image, no host synchronisation. On one channel saturation and hue do nothing, as in
    torchvision: each image takes brightness and contrast in its order."""
    sort = _cpu_strategy(x.device) if sort is None else sort
    return _colour(x, _plan_colour(p, x, sort, max(x.shape[0], 1)))


def _cpu_strategy(device: torch.device) -> bool:
    """Whether to work as on a CPU (slices, sorted blends, one host read per batch) or as on a GPU (one
    piece, whole-batch blends, no host synchronisation). Both give the same pixels."""
    return device.type == "cpu"


def moves(d: dict[str, Any]) -> bool:
    """Whether the data settings `d` rotate, flip or shift the images."""
    return bool(d["augment"] and (d["rotation"] or d["hflip"] or d["translate"]))


def augments(d: dict[str, Any]) -> bool:
    """Whether the data settings `d` change the images at all."""
    return moves(d) or bool(d["color_jitter"])


def augment_batch(x: torch.Tensor, g: torch.Generator, d: dict[str, Any], out: torch.Tensor | None = None,
                  normalise: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Augment a batch [B, C, H, W] as the experiment's data settings `d` say; x is uint8 (0..255) or
    float in [0, 1]; returns float in [0, 1], or `x * scale + shift` with normalise = (scale, shift), written
    into `out` when given. Random draws come from `g` only, in a fixed order, all of them before any pixel
    is touched.

    On a CPU the batch goes through in slices of _CPU_SLICE images, each through every step while it is in
    the cache (some thirty passes over the pixels); on a GPU in one piece."""
    n = x.shape[0]
    geometry = geometry_params(n, x.shape[-1], d, g, x.device) if moves(d) else None
    colour = colour_params(n, d, g, x.device) if d["color_jitter"] else None
    if out is None:
        out = torch.empty(x.shape, device=x.device, dtype=torch.float32)
    cpu = _cpu_strategy(x.device)
    step = _CPU_SLICE if cpu else max(n, 1)
    plan = _plan_colour(colour, out, cpu, step) if colour is not None else None
    terms = _sampling_terms(geometry, x.shape[-2], x.shape[-1]) if geometry is not None else None
    for start in range(0, n, step):
        part = slice(start, start + step)
        if terms is not None:
            y = _sample(x[part], tuple(t[part] for t in terms), out=out[part])
        else:
            y = out[part].copy_(x[part])
        if x.dtype == torch.uint8:
            y.div_(255)
        if plan is not None:
            _colour(y, plan, start)
        if normalise is not None:
            y.mul_(normalise[0]).add_(normalise[1])
    return out

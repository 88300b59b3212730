"""The batched augmentation against the seed's per-image torchvision/PIL pipeline.

Three kinds of evidence: with the same parameters, the batched pixels equal torchvision's (geometry through
PIL as the seed ran it; colour through torchvision's functional ops in the same per-image order); drawn at
random, the parameters recovered from the images and the pixel statistics match torchvision's random
pipeline; and the properties training relies on (per-image draws, reproducibility, identity when off).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from PIL import Image

from kagglerun.core.augment import (
    apply_colour,
    apply_geometry,
    augment_batch,
    colour_params,
    geometry_params,
    shift_hue,
)

SEED_AUG = {"augment": True, "rotation": 15.0, "hflip": True, "translate": 0.1, "color_jitter": True,
            "brightness": 0.2, "contrast": 0.2, "saturation": 0.2, "hue": 0.1}
OFF = dict(SEED_AUG, augment=False, color_jitter=False)
JITTER_OPS = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
JITTER_KEYS = ("brightness", "contrast", "saturation", "hue")


def smooth_images(n: int, seed: int, channels: int = 3) -> torch.Tensor:
    """Photo-like uint8 images: random 4x4 colour fields upsampled to 32x32 (noise has no structure)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, channels, 4, 4, generator=g)
    x = torch.nn.functional.interpolate(coarse, size=(32, 32), mode="bilinear", align_corners=False)
    return (x * 255).round().to(torch.uint8)


def to_pil(x: torch.Tensor) -> Image.Image:
    a = x.permute(1, 2, 0).numpy()
    return Image.fromarray(a[..., 0] if a.shape[2] == 1 else a)


def from_pil(im: Image.Image) -> torch.Tensor:
    a = torch.from_numpy(np.array(im))
    return a.unsqueeze(0) if a.ndim == 2 else a.permute(2, 0, 1)


def seed_pipeline(jitter: bool) -> T.Compose:
    steps = [T.RandomRotation(15), T.RandomHorizontalFlip(), T.RandomAffine(0, translate=(0.1, 0.1))]
    return T.Compose(steps + ([T.ColorJitter(0.2, 0.2, 0.2, 0.1)] if jitter else []))


def torchvision_batch(x: torch.Tensor, jitter: bool, seed: int) -> torch.Tensor:
    """The seed's random per-image pipeline on PIL images, as float in [0, 1]."""
    torch.manual_seed(seed)
    transform = seed_pipeline(jitter)
    return torch.stack([from_pil(transform(to_pil(im))) for im in x]).float() / 255


# --- the same parameters give the same pixels ---------------------------------------------------------

def test_geometry_equals_pil_rotate_flip_translate_with_the_same_parameters():
    n = 120
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    p = geometry_params(n, 32, SEED_AUG, torch.Generator().manual_seed(1), "cpu")
    ours = apply_geometry(x, p)
    ref = []
    for i in range(n):
        im = TF.rotate(to_pil(x[i]), float(p["angle"][i]))  # what RandomRotation does with its angle
        if p["flip"][i]:
            im = TF.hflip(im)
        im = TF.affine(im, 0.0, [int(p["shift"][i, 0]), int(p["shift"][i, 1])], 1.0, [0.0, 0.0])
        ref.append(from_pil(im))
    same = (ours == torch.stack(ref)).all(1).float()
    # PIL samples in 16.16 fixed point, so a point a hair from a pixel edge may pick the neighbour
    assert same.mean() > 0.999
    assert same.mean(dim=(1, 2)).min() > 0.99
    # and the opposite rotation direction would not match
    flipped_angle = apply_geometry(x, dict(p, angle=-p["angle"]))
    assert (flipped_angle == torch.stack(ref)).all(1).float().mean() < 0.6


def test_geometry_works_on_uint8_and_float_alike():
    x = smooth_images(8, 3)
    p = geometry_params(8, 32, SEED_AUG, torch.Generator().manual_seed(2), "cpu")
    assert torch.equal(apply_geometry(x, p).float(), apply_geometry(x.float(), p))


def test_colour_equals_torchvision_functional_in_each_images_order():
    n = 80
    x = smooth_images(n, 4).float() / 255
    p = colour_params(n, SEED_AUG, torch.Generator().manual_seed(5), "cpu")
    ours = apply_colour(x.clone(), p)

    def jitter(img, i):
        for op in p["order"][i].tolist():
            img = JITTER_OPS[op](img, float(p[JITTER_KEYS[op]][i]))
        return img

    exact = torch.stack([jitter(x[i], i) for i in range(n)])
    assert (ours - exact).abs().max() < 1e-4
    # PIL (the seed) rounds to uint8 after every step and truncates in its blends: a few levels darker
    pil = torch.stack([from_pil(jitter(to_pil((x[i] * 255).round().byte()), i)) for i in range(n)]).float() / 255
    assert (ours - pil).abs().mean() < 0.012
    assert 0 <= (ours - pil).mean() < 0.01


def test_hue_rotation_equals_torchvision_over_the_whole_range():
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    x[:, :, :4] = x[:, :1, :4]  # grey pixels (no hue) and ties between channels
    x[:, 1, 4:8] = x[:, 0, 4:8]
    hue = torch.linspace(-0.5, 0.5, 16)
    exact = torch.stack([TF.adjust_hue(x[i], float(hue[i])) for i in range(16)])
    assert (shift_hue(x.clone(), hue) - exact).abs().max() < 1e-5


def test_colour_on_one_channel_is_brightness_and_contrast_only():
    n = 40
    x = smooth_images(n, 7, channels=1).float() / 255
    p = colour_params(n, SEED_AUG, torch.Generator().manual_seed(8), "cpu")
    ours = apply_colour(x.clone(), p)
    for i in range(n):
        img = x[i]
        for op in p["order"][i].tolist():
            if op < 2:  # torchvision leaves saturation and hue of a grey image alone
                img = JITTER_OPS[op](img, float(p[JITTER_KEYS[op]][i]))
        assert (ours[i] - img).abs().max() < 1e-5


# --- drawn at random, the same distributions -----------------------------------------------------------

def coded_images(n: int) -> torch.Tensor:
    """Every pixel names its own column (R) and row (G); B = 255 marks a real pixel, black is fill."""
    cols = torch.arange(32).mul(8).view(1, 32).expand(32, 32)
    rows = torch.arange(32).mul(8).view(32, 1).expand(32, 32)
    img = torch.stack([cols, rows, torch.full((32, 32), 255)]).to(torch.uint8)
    return img.expand(n, 3, 32, 32).contiguous()


def recover_geometry(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(angle in degrees, flip, shift [n, 2]) fitted to coded images: where each output pixel came from."""
    n = out.shape[0]
    real = (out[:, 2] == 255).flatten(1).double()
    centre = torch.arange(32, dtype=torch.float64) + 0.5 - 16
    v, u = torch.meshgrid(centre, centre, indexing="ij")
    dest = torch.stack([u.flatten(), v.flatten(), torch.ones(1024, dtype=torch.float64)], 1).expand(n, 1024, 3)
    src = torch.stack([out[:, 0].flatten(1) // 8, out[:, 1].flatten(1) // 8], 2).double() + 0.5 - 16
    w = real.unsqueeze(2)
    fit = torch.linalg.lstsq(dest * w, src * w).solution  # [n, 3, 2]: src = [u v 1] @ fit
    a = fit[:, :2].transpose(1, 2)  # src = a @ dest + b
    b = fit[:, 2]
    flip = torch.linalg.det(a) < 0
    rot = a.clone()
    rot[flip, :, 0] *= -1  # a = R @ S, S = diag(-1, 1) when flipped
    angle = torch.rad2deg(torch.atan2(rot[:, 1, 0], rot[:, 0, 0]))
    shift = -torch.linalg.solve(a, b.unsqueeze(2)).squeeze(2)  # src = a (p - t)
    return angle, flip, shift.round()


def test_recovered_geometry_is_the_drawn_one():
    n = 200
    p = geometry_params(n, 32, SEED_AUG, torch.Generator().manual_seed(9), "cpu")
    angle, flip, shift = recover_geometry(apply_geometry(coded_images(n), p))
    error = (angle - p["angle"].double()).abs()
    # nearest sampling hides rotations under about 1.5 degrees (no pixel of a 32x32 image moves)
    assert error.max() < 2.0 and error.median() < 0.3
    assert torch.equal(flip, p["flip"])
    assert torch.equal(shift, p["shift"].double())


def test_recovered_geometry_matches_torchvision_in_distribution():
    n = 800
    ours = recover_geometry(augment_batch(coded_images(n), torch.Generator().manual_seed(10), dict(SEED_AUG, color_jitter=False)).mul(255).round().byte())
    torch.manual_seed(11)
    seed = seed_pipeline(jitter=False)
    theirs = recover_geometry(torch.stack([from_pil(seed(to_pil(im))) for im in coded_images(n)]))
    for angle in (ours[0], theirs[0]):  # uniform in [-15, 15]: mean 0, sd 15 / sqrt(3)
        assert abs(angle.mean()) < 1.2
        assert abs(angle.std() - 15 / math.sqrt(3)) < 0.8
        assert angle.abs().max() < 15.5
    assert abs(ours[1].double().mean() - theirs[1].double().mean()) < 0.08
    # whole-pixel shifts -3..3 in x and y, with the rounding of a uniform draw in [-3.2, 3.2]
    expected = torch.tensor([0.7, 1, 1, 1, 1, 1, 0.7], dtype=torch.float64) / 6.4
    for shift in (ours[2], theirs[2]):
        freq = torch.stack([(shift == k).double().mean(0) for k in range(-3, 4)])  # [7, 2]
        assert (freq - expected.view(7, 1)).abs().max() < 0.045


def test_recovered_brightness_factors_match_torchvision_in_distribution():
    n = 600
    x = (smooth_images(n, 12).float() * 0.75).round().byte()  # dark enough that 1.2 x never clips
    d = dict(OFF, color_jitter=True, contrast=0.0, saturation=0.0, hue=0.0)
    ours = augment_batch(x, torch.Generator().manual_seed(13), d)
    torch.manual_seed(14)
    jitter = T.ColorJitter(brightness=0.2)
    theirs = torch.stack([from_pil(jitter(to_pil(im))) for im in x]).float() / 255
    base = x.float().mean(dim=(1, 2, 3)) / 255
    for out in (ours, theirs):
        factor = out.mean(dim=(1, 2, 3)) / base
        assert abs(factor.mean() - 1.0) < 0.02
        assert abs(factor.std() - 0.4 / math.sqrt(12)) < 0.012
        assert factor.min() > 0.79 and factor.max() < 1.21


@pytest.mark.parametrize("jitter", [False, True])
def test_pixel_statistics_match_the_seed_pipeline(jitter):
    n = 600
    x = smooth_images(n, 15)
    ours = augment_batch(x, torch.Generator().manual_seed(16), dict(SEED_AUG, color_jitter=jitter))
    theirs = torchvision_batch(x, jitter, seed=17)
    assert abs(ours.mean() - theirs.mean()) < 0.01
    assert abs(ours.std() - theirs.std()) < 0.01
    for c in range(3):
        assert abs(ours[:, c].mean() - theirs[:, c].mean()) < 0.012
    # black fill from rotation and shift (after jitter, fill stays black only where contrast < 1 left it)
    black = lambda t: (t.amax(1) == 0).double().mean()  # noqa: E731
    assert abs(black(ours) - black(theirs)) < 0.01
    if not jitter:
        assert black(ours) > 0.05
    # per-image spread: how much images differ from each other in mean brightness
    assert abs(ours.mean(dim=(1, 2, 3)).std() - theirs.mean(dim=(1, 2, 3)).std()) < 0.01


def test_parameter_draws_match_torchvision_get_params():
    n = 4000
    g = torch.Generator().manual_seed(18)
    p = colour_params(n, SEED_AUG, g, "cpu")
    for key, centre, half in (("brightness", 1, 0.2), ("contrast", 1, 0.2), ("saturation", 1, 0.2), ("hue", 0, 0.1)):
        v = p[key].double()
        assert v.min() >= centre - half and v.max() <= centre + half
        assert abs(v.mean() - centre) < 0.01
        assert abs(v.std() - 2 * half / math.sqrt(12)) < 0.01 * max(1, half * 10)
    # every operation equally likely at every step; each row a permutation, like torch.randperm(4)
    assert torch.equal(p["order"].sort(1).values, torch.arange(4).expand(n, 4))
    position_freq = torch.stack([(p["order"] == op).double().mean(0) for op in range(4)])
    assert (position_freq - 0.25).abs().max() < 0.03
    tv = torch.stack([T.ColorJitter.get_params((0.8, 1.2), (0.8, 1.2), (0.8, 1.2), (-0.1, 0.1))[0] for _ in range(2000)])
    tv_freq = torch.stack([(tv == op).double().mean(0) for op in range(4)])
    assert (tv_freq - position_freq).abs().max() < 0.05


# --- what training relies on ---------------------------------------------------------------------------

def test_images_in_a_batch_get_different_transforms():
    x = smooth_images(1, 19).expand(32, 3, 32, 32).contiguous()
    out = augment_batch(x, torch.Generator().manual_seed(20), SEED_AUG)
    flat = out.flatten(1)
    distinct = {tuple(row.tolist()) for row in (flat * 255).round().byte()}
    assert len(distinct) == 32


def test_the_same_seed_gives_the_same_batch_and_another_seed_another():
    x = smooth_images(16, 21)
    a = augment_batch(x, torch.Generator().manual_seed(22), SEED_AUG)
    b = augment_batch(x, torch.Generator().manual_seed(22), SEED_AUG)
    c = augment_batch(x, torch.Generator().manual_seed(23), SEED_AUG)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_augmentation_off_is_the_identity(dtype):
    x = smooth_images(8, 24)
    x_in = x if dtype == torch.uint8 else x.float() / 255
    out = augment_batch(x_in, torch.Generator().manual_seed(25), OFF)
    assert torch.equal(out, x.float() / 255)
    zero = dict(SEED_AUG, rotation=0.0, hflip=False, translate=0.0, color_jitter=False)
    assert torch.equal(augment_batch(x, torch.Generator().manual_seed(25), zero), x.float() / 255)


def test_float_input_is_not_modified():
    x = smooth_images(8, 26).float() / 255
    before = x.clone()
    augment_batch(x, torch.Generator().manual_seed(27), dict(OFF, color_jitter=True))
    assert torch.equal(x, before)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_no_host_synchronisation_on_the_gpu():
    x = smooth_images(64, 28).cuda()
    g = torch.Generator(device="cuda").manual_seed(29)
    augment_batch(x, g, SEED_AUG)  # warm up: lazy initialisation may synchronise once
    torch.cuda.set_sync_debug_mode("error")
    try:
        augment_batch(x, g, SEED_AUG)
        augment_batch(x[:, :1].contiguous(), g, SEED_AUG)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_augmenting_a_large_cpu_batch_in_slices_changes_nothing(monkeypatch):
    import kagglerun.core.augment as augment

    x = torch.randint(0, 256, (150, 3, 32, 32), dtype=torch.uint8)
    sliced = augment_batch(x, torch.Generator().manual_seed(7), SEED_AUG)
    monkeypatch.setattr(augment, "_CPU_SLICE", 10**6)
    whole = augment_batch(x, torch.Generator().manual_seed(7), SEED_AUG)
    assert torch.equal(sliced, whole)


def test_sorted_and_whole_batch_colour_schedules_give_the_same_pixels():
    # the CPU sorts each slice by where its images take the hue, so every blend covers only the images due
    # for it; the GPU blends the whole batch with factor 1 where nothing is due: the same arithmetic per image
    n = 70
    x = smooth_images(n, 30).float() / 255
    p = colour_params(n, SEED_AUG, torch.Generator().manual_seed(31), "cpu")
    assert torch.equal(apply_colour(x.clone(), p, sort=True), apply_colour(x.clone(), p, sort=False))


def test_normalising_into_a_given_buffer_is_the_same_as_afterwards(monkeypatch):
    import kagglerun.core.augment as augment

    monkeypatch.setattr(augment, "_CPU_SLICE", 16)  # several slices, the last one short
    x = smooth_images(50, 32)
    scale, shift = torch.tensor([2.0, 3.0, 4.0]).view(1, 3, 1, 1), torch.tensor([-1.0, -1.5, -2.0]).view(1, 3, 1, 1)
    out = torch.full((50, 3, 32, 32), float("nan"))
    got = augment_batch(x, torch.Generator().manual_seed(33), SEED_AUG, out=out, normalise=(scale, shift))
    assert got.data_ptr() == out.data_ptr()
    expected = augment_batch(x, torch.Generator().manual_seed(33), SEED_AUG) * scale + shift
    assert torch.allclose(out, expected, atol=1e-6)


def test_the_engine_augments_the_epoch_up_front_each_image_its_own_way(monkeypatch):
    import kagglerun.core.augment as augment
    import kagglerun.core.torch_engine as torch_engine
    from kagglerun.core.engine import Data
    from kagglerun.experiments import Settings

    monkeypatch.setattr(torch_engine, "_EPOCH_CHUNK_CPU", 40)  # chunks and slices that do not divide 100
    monkeypatch.setattr(augment, "_CPU_SLICE", 16)
    one = smooth_images(1, 34).expand(100, 3, 32, 32).contiguous()  # the same image 100 times
    data = Data("one", one, torch.zeros(100, dtype=torch.int64), one[:8], torch.zeros(8, dtype=torch.int64), 10,
                (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    settings = Settings.model_validate({
        "name": "t", "model": {"name": "c5l3", "width": 0.125},
        "data": {"dataset": "synthetic", **{k: v for k, v in SEED_AUG.items()}},
        "training": {"epochs": 1, "batch_size": 32}}).as_dict()
    engine = torch_engine.TorchEngine(settings, data)
    epoch = engine._augmented_epoch(torch.arange(100), torch.Generator().manual_seed(35)).clone()
    assert torch.unique(epoch.view(100, -1), dim=0).shape[0] == 100  # no two alike: parameters per image
    pixels = epoch * 0.25 + 0.5  # the normalisation undone
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
    again = engine._augmented_epoch(torch.arange(100), torch.Generator().manual_seed(35))
    assert torch.equal(epoch, again)  # drawn from the epoch's generator only
    assert engine.train_epoch(1)[0] > 0


@pytest.mark.parametrize("channels", [3, 1])
def test_the_gpu_strategy_gives_the_cpu_strategys_pixels(monkeypatch, channels):
    # what runs on a GPU (one piece, whole-batch blends, no host read), run here on the CPU
    import kagglerun.core.augment as augment

    monkeypatch.setattr(augment, "_CPU_SLICE", 16)
    x = smooth_images(50, 36, channels)
    norm = (torch.full((1, channels, 1, 1), 2.0), torch.full((1, channels, 1, 1), -1.0))
    cpu = augment_batch(x, torch.Generator().manual_seed(37), SEED_AUG, normalise=norm)
    monkeypatch.setattr(augment, "_cpu_strategy", lambda device: False)
    gpu = augment_batch(x, torch.Generator().manual_seed(37), SEED_AUG, normalise=norm)
    assert torch.equal(cpu, gpu)

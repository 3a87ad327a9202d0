"""Augmenter: label values kept, mirroring exact, crop large enough, identity when switched off."""

from __future__ import annotations

import itertools

import numpy as np
import torch

from patchwork.models.unet.augment import (
    Augmenter,
    affine_theta,
    intensity_transform,
    mirror_batch,
    rotation_matrices,
)


def _batch(b: int = 8, crop: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(b, 2, crop, crop, crop, generator=g)
    y = torch.randint(0, 3, (b, crop, crop, crop), generator=g).to(torch.uint8) * 2  # values 0, 2, 4
    return x, y


def test_label_values_stay_in_the_label_set():
    aug = Augmenter(rotation_deg=45, scale_range=(0.7, 1.4), mirror=True, gamma=True)
    x, y = _batch(16)
    for seed in range(4):
        _, y_out = aug(x, y, (12, 12, 12), torch.Generator().manual_seed(seed))
        assert set(torch.unique(y_out).tolist()) <= {0, 2, 4}
        assert y_out.shape == (16, 12, 12, 12) and y_out.dtype == torch.uint8


def test_mirror_only_flips_image_and_label_together():
    x, y = _batch(32, 8)
    aug = Augmenter(rotation_deg=0, scale_range=(1.0, 1.0), mirror=True)
    x_out, y_out = aug.spatial_transform(x, y, (8, 8, 8), torch.Generator().manual_seed(0))
    assert torch.equal(x_out, x) and torch.equal(y_out, y)  # no resampling when spatial is off
    flips = torch.rand(32, 3, generator=torch.Generator().manual_seed(1)) < 0.5
    xf, yf = mirror_batch(x, y, flips)
    for b in range(32):
        axes = [a for a in range(3) if flips[b, a]]
        assert torch.equal(xf[b], x[b].flip([1 + a for a in axes]))
        assert torch.equal(yf[b], y[b].flip(axes))
    seen = {tuple(f.tolist()) for f in flips}
    assert len(seen) > 4  # several flip combinations exercised


def test_identity_transform_resamples_exactly():
    x, y = _batch(2, 10)
    theta = affine_theta(torch.eye(3, dtype=torch.float64).expand(2, 3, 3), (10, 10, 10), (6, 6, 6))
    grid = torch.nn.functional.affine_grid(theta.float(), [2, 1, 6, 6, 6], align_corners=False)
    out = torch.nn.functional.grid_sample(x, grid, mode="bilinear", align_corners=False)
    assert torch.allclose(out, x[:, :, 2:8, 2:8, 2:8], atol=1e-5)


def test_quarter_turn_matches_rot90():
    x, _ = _batch(1, 6)
    angles = torch.tensor([[0.0, 0.0, np.pi / 2]], dtype=torch.float64)
    theta = affine_theta(rotation_matrices(angles), (6, 6, 6), (6, 6, 6))
    grid = torch.nn.functional.affine_grid(theta.float(), [1, 1, 6, 6, 6], align_corners=False)
    out = torch.nn.functional.grid_sample(x, grid, mode="nearest", align_corners=False)
    assert any(torch.equal(out, torch.rot90(x, k, dims=(2, 3))) for k in (1, 3))


def test_crop_size_holds_every_rotated_scaled_patch():
    aug = Augmenter(rotation_deg=30, scale_range=(0.7, 1.4))
    patch = np.array([16, 24, 32])
    crop = np.array(aug.crop_size(patch))
    assert ((crop - patch) % 2 == 0).all()
    corners = np.array(list(itertools.product(*[(-p / 2, p / 2) for p in patch])))
    rng = np.random.default_rng(0)
    angles = torch.from_numpy(rng.uniform(-np.pi / 6, np.pi / 6, size=(500, 3)))
    for m in rotation_matrices(angles).numpy() * 1.4:
        assert (np.abs(corners @ m.T).max(axis=0) <= crop / 2 - 1 + 1e-9).all()
    assert Augmenter(rotation_deg=0, scale_range=(1.0, 1.0)).crop_size(patch) == tuple(patch)


def test_intensity_changes_only_drawn_samples_and_stays_finite():
    x = torch.randn(64, 1, 4, 4, 4)
    out = intensity_transform(x, torch.Generator().manual_seed(0), gamma=True)
    changed = (out != x).flatten(1).any(dim=1)
    assert 0 < changed.sum() < 64
    assert torch.isfinite(out).all()


def test_same_generator_seed_same_augmentation():
    x, y = _batch(4)
    aug = Augmenter(rotation_deg=180, gamma=True)
    a = aug(x, y, (12, 12, 12), torch.Generator().manual_seed(9))
    b = aug(x, y, (12, 12, 12), torch.Generator().manual_seed(9))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])

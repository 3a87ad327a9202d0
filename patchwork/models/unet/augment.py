"""Batched data augmentation on torch tensors (on the training device), after nnU-Net's pipeline.

Spatial, per sample: with probability 0.2 a rotation ``R = R_0(a_0) R_1(a_1) R_2(a_2)`` with angles
``a_i ~ U(-rotation_deg, rotation_deg)`` about each axis, with probability 0.2 an isotropic scale
``s ~ U(scale_range)``; an output voxel at ``p`` (voxel units, relative to the patch centre) samples
the input at ``s R p``, so ``s > 1`` zooms out. The input is a crop larger than the patch
(:meth:`Augmenter.crop_size`) so rotated corners see real image content. Images are resampled
trilinearly, labels by nearest neighbour (label values stay in the label set). Samples drawn
without rotation or scale are centre-cropped, not resampled. Then each axis is mirrored with
probability 0.5.

Intensity, per sample and channel: multiplicative brightness ``x * m``, ``m ~ U(0.75, 1.25)``
(p 0.15); additive shift ``x + a``, ``a ~ N(0, 0.1²)`` (p 0.15); optional gamma (p 0.3):
``x' = lo + (hi - lo) ((x - lo) / (hi - lo)) ** g`` on the patch range ``[lo, hi]``, with ``g``
drawn from U(0.7, 1) or U(1, 1.5) with equal chance, as nnU-Net.

All random numbers are per-sample scalars drawn from a CPU ``torch.Generator``, so a batch is
augmented identically on CPU and CUDA for the same seed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

P_ROTATION = 0.2
P_SCALE = 0.2
P_MIRROR = 0.5
P_MULTIPLY = 0.15
MULTIPLY_RANGE = (0.75, 1.25)
P_ADD = 0.15
ADD_SIGMA = 0.1
P_GAMMA = 0.3
GAMMA_RANGE = (0.7, 1.5)


def rotation_matrices(angles: torch.Tensor) -> torch.Tensor:
    """``[B, 3, 3]`` rotations ``R_0(a_0) R_1(a_1) R_2(a_2)`` for angles ``[B, 3]`` (radians).

    ``R_k`` rotates in the plane of the two axes other than ``k`` (array axis order).
    """
    out = torch.eye(3, dtype=angles.dtype).repeat(len(angles), 1, 1)
    for k in range(3):
        i, j = (a for a in range(3) if a != k)
        c, s = torch.cos(angles[:, k]), torch.sin(angles[:, k])
        r = torch.eye(3, dtype=angles.dtype).repeat(len(angles), 1, 1)
        r[:, i, i], r[:, i, j], r[:, j, i], r[:, j, j] = c, -s, s, c
        out = out @ r
    return out


def affine_theta(matrices: torch.Tensor, in_size: Sequence[int], out_size: Sequence[int]) -> torch.Tensor:
    """``theta [B, 3, 4]`` for :func:`torch.nn.functional.affine_grid` (``align_corners=False``).

    ``matrices`` map output to input voxel offsets from the common centre. Normalised coordinates
    are ``u = 2 p / size``, so ``theta = diag(2 / in_size) M diag(out_size / 2)``, with the axis
    order reversed because ``affine_grid`` uses (x, y, z) = (last, middle, first) array axes.
    """
    scale_out = torch.tensor(out_size, dtype=matrices.dtype) / 2
    scale_in = 2 / torch.tensor(in_size, dtype=matrices.dtype)
    lin = scale_in[:, None] * matrices * scale_out[None, :]
    lin = lin.flip(-1).flip(-2)
    return torch.cat([lin, torch.zeros(len(lin), 3, 1, dtype=lin.dtype)], dim=2)


def _rotated_extent(extent: np.ndarray, max_angle: float) -> np.ndarray:
    """Upper bound of the bounding box of a box ``extent`` rotated by up to ``max_angle`` about each axis."""
    angles = np.linspace(0.0, max_angle, 91)
    for k in (2, 1, 0):  # R_2 acts first on an output offset
        i, j = (a for a in range(3) if a != k)
        ei = np.max(extent[i] * np.cos(angles) + extent[j] * np.sin(angles))
        ej = np.max(extent[i] * np.sin(angles) + extent[j] * np.cos(angles))
        extent = extent.copy()
        extent[i], extent[j] = ei, ej
    return extent


@dataclass(frozen=True)
class Augmenter:
    """nnU-Net style batch augmentation; ``rotation_deg=0``, ``scale_range=(1, 1)`` turn off resampling."""

    rotation_deg: float = 30.0
    scale_range: tuple[float, float] = (0.7, 1.4)
    mirror: bool = True
    gamma: bool = False

    @property
    def spatial(self) -> bool:
        """Whether any sample may be rotated or scaled."""
        return self.rotation_deg > 0 or self.scale_range != (1.0, 1.0)

    def crop_size(self, patch_size: Sequence[int]) -> tuple[int, ...]:
        """Size of the crop around a patch centre that holds every point a rotated and scaled patch samples.

        Bounding box of the patch rotated by up to ``rotation_deg`` about each axis, capped by the
        patch diagonal, times the largest zoom-out, plus one voxel each side for interpolation;
        rounded so that ``crop - patch`` is even.
        """
        patch = np.asarray(patch_size, dtype=np.float64)
        if not self.spatial:
            return tuple(int(p) for p in patch_size)
        extent = np.minimum(_rotated_extent(patch, math.radians(self.rotation_deg)), np.linalg.norm(patch))
        extent = np.maximum(extent * max(self.scale_range[1], 1.0), patch)
        margin = np.ceil((extent - patch) / 2).astype(int) + 1
        return tuple(int(p) + 2 * int(m) for p, m in zip(patch_size, margin, strict=True))

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, patch_size: Sequence[int], generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment images ``x [B, C, *crop]`` and labels ``y [B, *crop]``; returns them at ``patch_size``."""
        x, y = self.spatial_transform(x, y, patch_size, generator)
        if self.mirror:
            x, y = mirror_batch(x, y, torch.rand(len(x), 3, generator=generator) < P_MIRROR)
        return intensity_transform(x, generator, self.gamma), y

    def spatial_transform(
        self, x: torch.Tensor, y: torch.Tensor, patch_size: Sequence[int], generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotate/scale the drawn samples by resampling, centre-crop the others to ``patch_size``."""
        b, crop = len(x), tuple(x.shape[2:])
        draws = torch.rand(b, 6, generator=generator, dtype=torch.float64)
        rotate = draws[:, 0] < P_ROTATION
        scale = draws[:, 1] < P_SCALE
        max_angle = math.radians(self.rotation_deg)
        angles = (2 * draws[:, 2:5] - 1) * max_angle * rotate[:, None]
        lo, hi = self.scale_range
        zoom = torch.where(scale, lo + (hi - lo) * draws[:, 5], torch.ones(b, dtype=torch.float64))
        start = [(c - p) // 2 for c, p in zip(crop, patch_size, strict=True)]
        window = (..., *(slice(s, s + p) for s, p in zip(start, patch_size, strict=True)))
        x_out, y_out = x[window].clone(), y[window].clone()
        chosen = torch.nonzero(
            (rotate | scale) if self.spatial else torch.zeros(b, dtype=torch.bool)
        ).flatten()
        if len(chosen):
            matrices = rotation_matrices(angles[chosen]) * zoom[chosen, None, None]
            theta = affine_theta(matrices, crop, patch_size).to(device=x.device, dtype=x.dtype)
            grid = F.affine_grid(theta, [len(chosen), 1, *patch_size], align_corners=False)
            idx = chosen.to(x.device)
            x_out[idx] = F.grid_sample(
                x[idx], grid, mode="bilinear", padding_mode="border", align_corners=False
            )
            y_sampled = F.grid_sample(
                y[idx, None].to(x.dtype), grid, mode="nearest", padding_mode="zeros", align_corners=False
            )
            y_out[idx] = y_sampled[:, 0].round().to(y.dtype)
        return x_out, y_out


def mirror_batch(x: torch.Tensor, y: torch.Tensor, flips: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip axis ``a`` of sample ``b`` where ``flips[b, a]`` (images ``[B, C, ...]``, labels ``[B, ...]``)."""
    flips = flips.to(x.device)
    for axis in range(3):
        sel = flips[:, axis]
        x = torch.where(sel[:, None, None, None, None], x.flip(2 + axis), x)
        y = torch.where(sel[:, None, None, None], y.flip(1 + axis), y)
    return x, y


def intensity_transform(x: torch.Tensor, generator: torch.Generator, gamma: bool) -> torch.Tensor:
    """Multiplicative, additive and (if ``gamma``) gamma intensity changes per sample and channel."""
    b, c = x.shape[:2]
    shape = (b, c, 1, 1, 1)
    draws = torch.rand(b, c, 6, generator=generator)
    noise = torch.randn(b, c, generator=generator)
    lo_m, hi_m = MULTIPLY_RANGE
    mult = torch.where(draws[..., 0] < P_MULTIPLY, lo_m + (hi_m - lo_m) * draws[..., 1], 1.0)
    add = torch.where(draws[..., 2] < P_ADD, ADD_SIGMA * noise, 0.0)
    x = x * mult.view(shape).to(x) + add.view(shape).to(x)
    if gamma:
        lo_g, hi_g = GAMMA_RANGE
        g = torch.where(
            draws[..., 4] < 0.5, lo_g + (1 - lo_g) * draws[..., 5], 1 + (hi_g - 1) * draws[..., 5]
        )
        drawn = (draws[..., 3] < P_GAMMA).view(shape).to(x.device)
        lo = x.amin(dim=(2, 3, 4), keepdim=True)
        span = (x.amax(dim=(2, 3, 4), keepdim=True) - lo).clamp_min(1e-8)
        x = torch.where(drawn, lo + span * ((x - lo) / span).clamp(0, 1) ** g.view(shape).to(x), x)
    return x

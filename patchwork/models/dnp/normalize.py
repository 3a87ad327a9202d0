"""Intensity normalisation of the input (``normalize_input``), per channel.

* ``None``: unchanged.
* ``'max'``: the whole image divided by its largest absolute value, so ``max |x| = 1``.
* ``'mean'``: the whole image divided by its mean, so the image mean is 1.
* ``'m0s1'``: ``(x - mean) / std`` over the whole image, so mean 0 and standard deviation 1.
* ``'patch_m0s1'``: the same for every patch on its own (after cropping, voxels outside the image count as
  0), so every patch has mean 0 and standard deviation 1.
* ``'tree_m0s1'``: every patch of a tree standardised by the mean and standard deviation of the tree's
  level-0 patch (the authors' ``normalize_inputs="std_mean"``), so the levels keep their intensity relation
  and the coarsest patch has mean 0 and standard deviation 1.

Standard deviations are population ones (``1/n``); a constant image or patch is divided by
``max(std, 1e-6)`` (its centred values are 0 anyway).
"""

from __future__ import annotations

import torch

from patchwork.errors import PatchworkError
from patchwork.models.dnp.settings import Normalization

Tensor = torch.Tensor
_EPS = 1e-6


def _standardise(data: Tensor, dims: tuple[int, ...]) -> Tensor:
    """``(x - mean) / max(std, eps)`` over ``dims``."""
    mean = data.mean(dim=dims, keepdim=True)
    std = data.std(dim=dims, keepdim=True, correction=0)
    return (data - mean) / std.clamp(min=_EPS)


def normalize_image(data: Tensor, mode: Normalization) -> Tensor:
    """Whole-image normalisation of ``data`` [C, *S] (``'patch_m0s1'`` and ``None`` leave it unchanged)."""
    dims = tuple(range(1, data.ndim))
    if mode == "max":
        scale = data.abs().amax(dim=dims, keepdim=True)
        return data / scale.clamp(min=_EPS)
    if mode == "mean":
        mean = data.mean(dim=dims, keepdim=True)
        if bool((mean.abs() < _EPS).any()):
            raise PatchworkError("normalize_input='mean': a channel has mean 0")
        return data / mean
    if mode == "m0s1":
        return _standardise(data, dims)
    return data


def patch_statistics(patches: Tensor) -> Tensor:
    """Per patch and channel ``(mean, max(std, eps))`` of ``patches`` [N, C, *s], as ``[N, C, 2]``."""
    dims = tuple(range(2, patches.ndim))
    mean = patches.mean(dim=dims)
    std = patches.std(dim=dims, correction=0).clamp(min=_EPS)
    return torch.stack([mean, std], dim=-1)


def normalize_patches(patches: Tensor, mode: Normalization, statistics: Tensor | None = None) -> Tensor:
    """Patch-wise normalisation of ``patches`` [N, C, *s]: ``'patch_m0s1'`` by their own statistics,
    ``'tree_m0s1'`` by their trees' level-0 ``statistics`` [N, C, 2] (:func:`patch_statistics`); other modes
    pass through."""
    if mode == "patch_m0s1":
        return _standardise(patches, tuple(range(2, patches.ndim)))
    if mode == "tree_m0s1":
        if statistics is None:
            raise PatchworkError(
                "normalize_input='tree_m0s1' needs the statistics of each tree's level-0 patch"
            )
        view = (*statistics.shape[:2], *[1] * (patches.ndim - 2))
        mean, std = statistics[..., 0].reshape(view), statistics[..., 1].reshape(view)
        return (patches - mean.to(patches.device)) / std.to(patches.device)
    return patches

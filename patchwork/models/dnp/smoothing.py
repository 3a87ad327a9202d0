"""Anti-aliasing before a coarse crop (``smoothfac_data``, ``smoothfac_label``).

A level whose voxels are ``u_k`` image voxels long along image axis ``k`` (the *undersampling*, ``u_k > 1``)
samples the image only every ``u_k`` voxels, so fine patterns alias and small objects can fall between
samples. The image is filtered once per level before cropping:

* a float ``f > 0``: Gaussian with ``sigma_k = f u_k`` voxels along each undersampled axis;
* ``'boxcar'``: mean over a window of ``w_k`` voxels, ``w_k`` the smallest odd integer ``>= u_k``;
* ``'max'``: maximum over the same window, so a single bright voxel stays visible at coarse levels;
* ``'mixture'``: the channels of boxcar, max and min side by side (``3 C`` channels).

Axes with ``u_k <= 1`` are left alone (``'mixture'`` then repeats the channels); ``0`` switches
smoothing off. At the borders the Gaussian mirrors
the image (``reflect``, kernel radius ``3 sigma`` capped by the image size) and pooling uses the voxels
inside the image only.

Labels with don't-care voxels (NaN) are filtered without spreading them (:func:`antialias_labels`): the
values with NaN set to 0 and the don't-care indicator ``q`` are filtered side by side; a linear filter
(Gaussian, boxcar) then gives the normalised filter ``f(v) / (1 - f(q))`` of the cared-for voxels, and
``'max'`` the maximum over them (``q`` by boxcar), see :class:`~.volume.LabelSource`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

from patchwork.models.dnp.settings import Smoothing

Tensor = torch.Tensor


def _pool(pool: Literal["max", "avg"], data: Tensor, widths: Sequence[int]) -> Tensor:
    """Stride-1 pooling with a centred window of odd ``widths``; returns the input's shape."""
    ndim = len(widths)
    op = {2: {"max": F.max_pool2d, "avg": F.avg_pool2d}, 3: {"max": F.max_pool3d, "avg": F.avg_pool3d}}[ndim]
    pad = tuple(w // 2 for w in widths)
    if pool == "max":
        return op["max"](data, tuple(widths), stride=1, padding=pad)
    return op["avg"](data, tuple(widths), stride=1, padding=pad, count_include_pad=False)


def _gaussian(data: Tensor, sigmas: Sequence[float]) -> Tensor:
    """Separable Gaussian filter of ``data`` [1, C, *S] with per-axis ``sigmas`` (voxels; 0 skips an axis)."""
    channels = data.shape[1]
    ndim = len(sigmas)
    conv = F.conv2d if ndim == 2 else F.conv3d
    for axis, sigma in enumerate(sigmas):
        if sigma <= 0:
            continue
        radius = min(max(1, math.ceil(3.0 * sigma)), data.shape[2 + axis] - 1)
        x = torch.arange(-radius, radius + 1, dtype=data.dtype, device=data.device)
        kernel = torch.exp(-0.5 * (x / sigma) ** 2)
        kernel = (kernel / kernel.sum()).view(1, 1, *[1] * axis, -1, *[1] * (ndim - axis - 1))
        pad = [0] * (2 * ndim)
        pad[2 * (ndim - 1 - axis)] = pad[2 * (ndim - 1 - axis) + 1] = radius
        data = conv(
            F.pad(data, pad, mode="reflect"), kernel.expand(channels, *kernel.shape[1:]), groups=channels
        )
    return data


def antialias(data: Tensor, undersampling: Sequence[float], smoothing: Smoothing) -> Tensor:
    """Filter ``data`` [C, *S] for sampling every ``undersampling[k]`` voxels along axis ``k``."""
    if smoothing == 0 or (smoothing != "mixture" and all(u <= 1.0 for u in undersampling)):
        return data
    batch = data[None].float()
    if isinstance(smoothing, (int, float)):
        sigmas = [float(smoothing) * u if u > 1.0 else 0.0 for u in undersampling]
        return _gaussian(batch, sigmas)[0]
    widths = [2 * math.ceil((u - 1.0) / 2.0) + 1 if u > 1.0 else 1 for u in undersampling]
    if smoothing == "boxcar":
        return _pool("avg", batch, widths)[0]
    if smoothing == "max":
        return _pool("max", batch, widths)[0]
    parts = [_pool("avg", batch, widths), _pool("max", batch, widths), -_pool("max", -batch, widths)]
    return torch.cat(parts, dim=1)[0]


def antialias_labels(
    channels: Tensor, undersampling: Sequence[float], smoothing: Smoothing
) -> tuple[Tensor, bool]:
    """Filter label ``channels`` [L, *S] (NaN = don't care) for a level; returns ``(filtered, dontcare)``.

    Without NaN this is :func:`antialias`. With NaN the result has ``L + 1`` channels: the filtered values
    (NaN as 0) and the filtered don't-care indicator (by boxcar for ``'max'``), read back by
    :class:`~.volume.LabelSource`.
    """
    missing = torch.isnan(channels).any(dim=0, keepdim=True)
    if not bool(missing.any()):
        return antialias(channels, undersampling, smoothing), False
    clean = torch.nan_to_num(channels, nan=0.0)
    indicator = missing.to(clean.dtype)
    if smoothing == "max":
        return torch.cat(
            [antialias(clean, undersampling, "max"), antialias(indicator, undersampling, "boxcar")]
        ), True
    return antialias(torch.cat([clean, indicator]), undersampling, smoothing), True

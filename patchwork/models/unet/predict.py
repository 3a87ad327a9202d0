"""Sliding-window inference with Gaussian weighting, as nnU-Net predicts whole images.

Windows of the patch size are placed on a regular grid with step ``≈ patch (1 - overlap)``, the
first at 0 and the last flush with the image end (nnU-Net's ``compute_steps_for_sliding_window``).
Each window's logits are weighted by a Gaussian ``w`` centred on the window (``sigma = patch / 8``
per axis), which trusts the window centres more than their borders; the result at voxel ``v`` is

    L(v) = Σ_windows w(v - o) f(x)[v - o] / Σ_windows w(v - o).

Images smaller than the patch are padded (with each channel's minimum, as the training sampler
does) and the result is cropped back. With test-time mirroring the logits are the mean over the 8
combinations of flipped axes. Probabilities are taken after averaging logits, as nnU-Net does.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from patchwork.errors import PatchworkError
from patchwork.models.unet.modelfile import load_unet
from patchwork.models.unet.settings import UNetApply


def gaussian_weight(patch_size: Sequence[int], sigma_scale: float = 1 / 8) -> torch.Tensor:
    """Separable Gaussian ``[*patch_size]``, maximum 1 at the patch centre, symmetric, strictly positive.

    ``w(v) = Π_i exp(-(v_i - c_i)² / (2 σ_i²))`` with centre ``c_i = (n_i - 1) / 2`` (between the two
    middle voxels for even sizes, so the map is mirror symmetric) and ``σ_i = n_i * sigma_scale``.
    """
    weight = torch.ones((), dtype=torch.float64)
    for axis, n in enumerate(patch_size):
        v = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
        sigma = max(n * sigma_scale, 1e-6)
        g = torch.exp(-(v**2) / (2 * sigma**2))
        shape = [1] * len(patch_size)
        shape[axis] = n
        weight = weight * g.view(shape)
    weight = weight / weight.max()
    return weight.clamp_min(torch.finfo(torch.float32).tiny).float()


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start offsets of windows of length ``patch`` covering ``[0, size)`` with about ``overlap`` overlap.

    ``n = ceil((size - patch) / (patch (1 - overlap))) + 1`` windows, evenly spread from 0 to
    ``size - patch``; one window at 0 when ``size <= patch``.
    """
    if size <= patch:
        return [0]
    target = max(patch * (1 - overlap), 1)
    n = math.ceil((size - patch) / target) + 1
    return [round(i * (size - patch) / (n - 1)) for i in range(n)]


def foreground_probability(logits: torch.Tensor, head: str, dim: int = 0) -> torch.Tensor:
    """Foreground probability from logits with classes on ``dim``.

    Sigmoid head: ``sigmoid(l_0)``; softmax head: ``1 - softmax(l)_0`` (any class but background).
    """
    if head == "sigmoid":
        return torch.sigmoid(logits.select(dim, 0))
    return 1 - torch.softmax(logits, dim=dim).select(dim, 0)


def sliding_window_inference(
    model: torch.nn.Module,
    image: torch.Tensor,
    patch_size: Sequence[int],
    overlap: float = 0.5,
    batch_size: int = 2,
    mirror: bool = False,
    sigma_scale: float = 1 / 8,
) -> torch.Tensor:
    """Gaussian-weighted mean LOGITS ``[K, X, Y, Z]`` of ``model`` over ``image [C, X, Y, Z]``.

    Runs on ``image.device`` (put the model there too), ``batch_size`` windows per forward pass,
    mixed precision on CUDA. Pass the result to :func:`foreground_probability` for probabilities.
    """
    patch = tuple(int(p) for p in patch_size)
    shape = tuple(image.shape[1:])
    padded = tuple(max(s, p) for s, p in zip(shape, patch, strict=True))
    before = [(q - s) // 2 for q, s in zip(padded, shape, strict=True)]
    if padded != shape:
        fill = image.reshape(image.shape[0], -1).amin(dim=1)
        canvas = fill.view(-1, 1, 1, 1).expand(image.shape[0], *padded).clone()
        canvas[(slice(None), *(slice(b, b + s) for b, s in zip(before, shape, strict=True)))] = image
        image = canvas
    weight = gaussian_weight(patch, sigma_scale).to(image.device)
    starts = list(
        itertools.product(*(window_starts(q, p, overlap) for q, p in zip(padded, patch, strict=True)))
    )
    flips = [axes for r in range(4) for axes in itertools.combinations((2, 3, 4), r)] if mirror else [()]
    total: torch.Tensor | None = None
    norm = torch.zeros(padded, device=image.device)
    autocast = torch.autocast(device_type=image.device.type, enabled=image.device.type == "cuda")
    with torch.inference_mode(), autocast:
        for first in range(0, len(starts), batch_size):
            chunk = starts[first : first + batch_size]
            windows = [tuple(slice(o, o + p) for o, p in zip(start, patch, strict=True)) for start in chunk]
            # always a full batch (the last window repeated): CPU 3D convolutions of a batch of one
            # take a slow path, several times slower than a batch of two
            crops = [image[(slice(None), *w)] for w in windows]
            batch = torch.stack(crops + crops[-1:] * (batch_size - len(crops)))
            logits = sum(model(batch.flip(axes)).float().flip(axes) for axes in flips) / len(flips)
            if total is None:
                total = torch.zeros((logits.shape[1], *padded), device=image.device)
            for w, out in zip(windows, logits[: len(windows)], strict=True):
                total[(slice(None), *w)] += out * weight
                norm[w] += weight
    assert total is not None  # at least one window always exists
    result = total / norm
    return result[(slice(None), *(slice(b, b + s) for b, s in zip(before, shape, strict=True)))]


def predict_unet(
    model_path: Path,
    image: np.ndarray,
    affine: np.ndarray | None = None,
    apply: UNetApply | None = None,
    device: str | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, None]:
    """Foreground probability ``[X, Y, Z]`` float32 of the model in ``model_path`` for ``image [C, X, Y, Z]``.

    ``apply`` (default :class:`UNetApply`) sets the sliding window. The signature is the model registry's
    (:mod:`patchwork.models`): ``affine`` and ``seed`` are not needed (the windows lie on the voxel grid,
    and the result is deterministic), and there is no spread map (``None``).
    """
    apply = apply or UNetApply()
    model, params = load_unet(model_path, device)
    in_channels = model.in_channels
    if image.ndim != 4 or image.shape[0] != in_channels:
        raise PatchworkError(
            f"{model_path}: model expects an image [C={in_channels}, X, Y, Z], got shape {list(image.shape)}"
        )
    if not np.isfinite(image).all():
        raise PatchworkError(f"{model_path}: input image contains NaN or infinite values")
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).to(next(model.parameters()).device)
    logits = sliding_window_inference(
        model,
        x,
        params.patch_size,
        overlap=apply.overlap,
        batch_size=apply.sw_batch_size,
        mirror=apply.test_time_mirroring,
    )
    return foreground_probability(logits, params.head).cpu().numpy().astype(np.float32), None

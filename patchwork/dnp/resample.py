"""Batched re-sampling between patches and arrays: crop (gather) and scatter.

The paper's re-sampling ``D'[v] = D[A_{p'}^-1 A_p v]`` in its two directions:

* **crop**: every voxel ``v`` of ``N`` patches reads the source array at ``x = A v`` (``A``: patch voxel ->
  source voxel index), by nearest neighbour (``'NN'``, index arithmetic: ``round(x)`` flattened into one
  gather) or multilinear interpolation (``'lin'``, :func:`torch.nn.functional.grid_sample` with
  ``align_corners=True``, so voxel centres sit at integer indices as in the matrices). Points outside the
  source read 0: sources carry a one-voxel zero border (:func:`pad_source`).
* **scatter**: every patch voxel adds ``w(v) D[v]`` to the target voxel ``round(A v)`` (``'NN'``), or splats
  it over the ``2^d`` neighbours of ``A v`` with multilinear weights (``'lin'``), and the weights are summed
  alongside: ``Y = sum / weight`` is the paper's mean over overlapping patches, and callers may suppress
  sparsely covered voxels or compute a spread from the same sums. ``w`` is the patch window
  (:func:`window_weights`).

No Python loop runs over voxels or patches; ``'lin'`` scatter loops over the ``2^d`` corners only.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from patchwork.dnp.geometry import patch_coordinates
from patchwork.dnp.settings import Interp, Window

Tensor = torch.Tensor


def _strides(shape: Sequence[int], device: torch.device) -> Tensor:
    """Row-major strides of ``shape`` as a long tensor."""
    strides = [math.prod(shape[k + 1 :]) for k in range(len(shape))]
    return torch.tensor(strides, dtype=torch.long, device=device)


def _inside(index: Tensor, shape: Sequence[int]) -> Tensor:
    """Whether integer points ``[..., d]`` lie in an array of ``shape``."""
    upper = torch.tensor(tuple(shape), dtype=index.dtype, device=index.device)
    return ((index >= 0) & (index < upper)).all(dim=-1)


def pad_source(source: Tensor) -> Tensor:
    """``source`` [B, C, *S] with one zero voxel added on every side of every spatial axis.

    This is the form :class:`PointSampler` reads: nearest-neighbour indices are clamped into the padded
    array, so every point outside the source lands on the zero border without a mask.
    """
    return F.pad(source, (1, 1) * (source.ndim - 2))


class PointSampler:
    """Reads padded sources (:func:`pad_source`) at the voxels of ``N`` patches of ``shape``.

    ``matrices`` [N, d+1, d+1] map patch voxels to voxel indices of the unpadded source of spatial shape
    ``spatial``. The index work is done once on construction, so data and labels of the same spatial shape
    are read with one set of indices. Patch ``n`` reads source ``source_index[n]``; by default the single
    source (``batch == 1``) or source ``n`` (``batch == N``). Points outside the source read 0.
    """

    def __init__(
        self,
        matrices: Tensor,
        shape: Sequence[int],
        spatial: Sequence[int],
        interp_type: Interp,
        device: torch.device,
        batch: int = 1,
        source_index: Tensor | None = None,
    ) -> None:
        n, d = matrices.shape[0], len(shape)
        if source_index is None:
            if batch not in (1, n):
                raise ValueError(f"{batch} sources for {n} patches: pass source_index")
            source_index = torch.zeros(n, dtype=torch.long) if batch == 1 else torch.arange(n)
        self.interp_type = interp_type
        self.shape = tuple(shape)
        self.batch = batch
        self.source_index = source_index.to(device)
        shifted = matrices.clone()
        shifted[:, :d, d] += 1.0
        coords = patch_coordinates(shifted, shape, device)
        padded = tuple(int(k) + 2 for k in spatial)
        upper = torch.tensor(padded, dtype=coords.dtype, device=device) - 1.0
        if interp_type == "NN":
            coords.round_().clamp_(min=torch.zeros_like(upper), max=upper)
            size = math.prod(padded)
            exact = torch.float32 if size * batch < 2**24 else torch.float64
            flat = torch.matmul(coords.to(exact), _strides(padded, device).to(exact))
            flat = flat.to(torch.int32 if size * batch < 2**31 else torch.int64)
            if batch > 1:
                flat += (self.source_index.view(n, *[1] * d) * size).to(flat.dtype)
            self.index = flat.reshape(-1)
        else:
            self.grid = (2.0 * coords / upper - 1.0).flip(-1)

    def __call__(self, source: Tensor) -> Tensor:
        """The samples of a padded ``source`` [B, C, *(S+2)] as ``[N, C, *shape]``."""
        channels = source.shape[1]
        n = self.source_index.shape[0]
        if self.interp_type == "NN":
            flat = (
                source.reshape(channels, -1)
                if self.batch == 1
                else source.transpose(0, 1).reshape(channels, -1)
            )
            return flat.index_select(1, self.index).view(channels, n, *self.shape).transpose(0, 1)
        if self.batch == 1:
            folded = self.grid.reshape(1, n * self.shape[0], *self.shape[1:], self.grid.shape[-1])
            out = F.grid_sample(source, folded, mode="bilinear", padding_mode="zeros", align_corners=True)
            return out.view(channels, n, *self.shape).transpose(0, 1)
        return F.grid_sample(
            source[self.source_index], self.grid, mode="bilinear", padding_mode="zeros", align_corners=True
        )


def crop(
    source: Tensor,
    matrices: Tensor,
    shape: Sequence[int],
    interp_type: Interp = "NN",
    source_index: Tensor | None = None,
) -> Tensor:
    """Crop ``N`` patches of ``shape`` from ``source`` [B, C, *S]; ``matrices``: patch voxel -> source voxel.

    This is the low-level re-sampling used for the image (``C_n``'s input ``I_n``) and for a parent's output
    (``C_n = R((p_{n-1}, X_{n-1}), p_n)``: pass the parents' outputs ``X[parent]`` or ``X`` with
    ``source_index=parent`` and the child-relative matrices). Returns ``[N, C, *shape]``.
    """
    batch, spatial = source.shape[0], source.shape[2:]
    read = PointSampler(matrices, shape, spatial, interp_type, source.device, batch, source_index)
    return read(pad_source(source))


@functools.lru_cache(maxsize=32)
def window_weights(shape: tuple[int, ...], window: Window, device: torch.device) -> Tensor:
    """Stitching weight of each patch voxel, float32 ``shape``.

    With ``r_j = (v_j - (s_j - 1)/2) / (s_j / 2)`` in ``(-1, 1)``: ``'cos'`` is ``prod_j cos(pi r_j / 2)``,
    ``'cos2'`` its square (both positive on every voxel), ``None`` is 1.
    """
    weights = torch.ones(shape, dtype=torch.float32, device=device)
    if window is None:
        return weights
    for axis, n in enumerate(shape):
        r = (torch.arange(n, dtype=torch.float32, device=device) - (n - 1) / 2.0) / (n / 2.0)
        profile = torch.cos(math.pi * r / 2.0)
        if window == "cos2":
            profile = profile**2
        weights = weights * profile.view(*[1] * axis, n, *[1] * (len(shape) - axis - 1))
    return weights


def scatter(
    values: Tensor,
    matrices: Tensor,
    shape: Sequence[int],
    scatter_type: Interp = "NN",
    window: Window = None,
) -> tuple[Tensor, Tensor]:
    """Accumulate patches ``values`` [N, C, *s] into an array of ``shape``; ``matrices``: patch -> voxel.

    Returns ``(sum [C, *shape], weight [*shape])`` with ``sum = sum_v w(v) k(v) D[v]`` and
    ``weight = sum_v w(v) k(v)``, ``w`` the window and ``k`` the NN (0/1) or multilinear splat kernel.
    Without a window and with ``'NN'`` the weight is the number of patch voxels each voxel received.
    """
    n, channels, *patch_shape = values.shape
    d = len(patch_shape)
    device = values.device
    coords = patch_coordinates(matrices, patch_shape, device).reshape(-1, d)
    weights = window_weights(tuple(patch_shape), window, device).reshape(1, -1).expand(n, -1).reshape(-1)
    flat_values = values.float().transpose(0, 1).reshape(channels, -1)
    total = torch.zeros(channels, math.prod(shape), dtype=torch.float32, device=device)
    weight = torch.zeros(math.prod(shape), dtype=torch.float32, device=device)
    strides = _strides(shape, device)
    if scatter_type == "NN":
        corners = [(coords.round().long(), weights)]
    else:
        base = coords.floor()
        frac = coords - base
        corners = []
        for offset in itertools.product((0, 1), repeat=d):
            step = torch.tensor(offset, dtype=torch.float32, device=device)
            kernel = torch.where(step.bool(), frac, 1.0 - frac).prod(-1)
            corners.append(((base + step).long(), weights * kernel))
    for index, w in corners:
        w = torch.where(_inside(index, shape), w, torch.zeros((), device=device))
        flat = (index.clamp(min=0) * strides).sum(-1).clamp(max=math.prod(shape) - 1)
        total.index_add_(1, flat, flat_values * w)
        weight.index_add_(0, flat, w)
    return total.view(channels, *shape), weight.view(*shape)

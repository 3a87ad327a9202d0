"""Stitching patch outputs into an output grid, with the spread of the overlapping outputs.

Every output voxel ``x`` collects the outputs ``p_k(x)`` of the patches ``k`` that contain it and keeps

    n(x) = sum_k 1,      W(x) = sum_k c_k w_k(x),
    S1(x) = sum_k c_k w_k(x) p_k(x),      S2(x) = sum_k c_k w_k(x) p_k(x)^2

with ``w_k`` the patch window (:func:`~.resample.window_weights`) and ``c_k`` a per-call
weight (the level weight of ``level='mix'``). The stitched value is the weighted mean ``mu = S1 / W``
times the sparse suppression factor ``n / sqrt(n^2 + 3 alpha)`` -- without a window and level weights
this is the paper's ``sum_k p_k / sqrt(n^2 + 3 alpha)``: a voxel seen by one patch stays below 1/2 for
``alpha = 1`` -- and the uncertainty is the weighted standard deviation ``sqrt(S2 / W - mu^2)``.

Outputs are *pulled* into the grid: for each patch the block of output voxels around its box reads the
patch at ``A^-1 x`` (``A``: patch voxel -> output voxel) by the cropper's interpolation, reading 0 outside
the patch. Unlike pushing patch voxels to their nearest output voxel, this leaves no holes when the
output grid is finer than the patches (e.g. stitching 2 mm patches into a 1 mm image grid) and handles
any rotation of the patches against the grid.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import torch

from patchwork.models.dnp.geometry import homogeneous, invert, shape_tensor
from patchwork.models.dnp.grid import ImageGrid
from patchwork.models.dnp.resample import Interp, Window, crop, window_weights

Tensor = torch.Tensor
BLOCK_BUDGET = 2**25  # numbers in the blocks pulled at once (128 MB of float32)


def box_corners(matrices: Tensor, shape: tuple[int, ...]) -> Tensor:
    """The ``2^d`` corners ``[N, 2^d, d]`` of the boxes (voxel faces) of patches ``(matrices, shape)``."""
    d = len(shape)
    unit = torch.tensor(list(itertools.product((0.0, 1.0), repeat=d)), dtype=torch.float64)
    faces = unit * shape_tensor(shape) - 0.5
    return torch.einsum("nij,kj->nki", matrices[:, :d, :d], faces) + matrices[:, None, :d, d]


@dataclass(frozen=True)
class OutputGrid:
    """The grid the patches are stitched into: ``shape``, ``matrix`` (system <- voxel) and ``affine``
    (world mm <- voxel), float64."""

    shape: tuple[int, ...]
    matrix: Tensor
    affine: Tensor

    @classmethod
    def of_image(cls, grid: ImageGrid) -> OutputGrid:
        """The image's own grid (``scale_to_original``)."""
        return cls(grid.shape, grid.matrix, grid.affine)

    @classmethod
    def covering(cls, grid: ImageGrid, voxel_size: Tensor) -> OutputGrid:
        """An axis-aligned grid of ``voxel_size`` (system units, ``[d]``) over the image's bounding box.

        The box spans the image's voxel faces; voxel 0's centre lies half a voxel inside its low corner.
        """
        points = box_corners(grid.matrix[None], grid.shape)[0]
        low, high = points.amin(dim=0), points.amax(dim=0)
        shape = tuple(int(n) for n in torch.ceil((high - low) / voxel_size - 1e-6).clamp(min=1).tolist())
        matrix = homogeneous(torch.diag(voxel_size)[None], (low + voxel_size / 2.0)[None])[0]
        return cls(shape, matrix, grid.affine @ invert(grid.matrix) @ matrix)

    def refined(self, factor: float) -> OutputGrid:
        """The same box with voxels ``factor`` times smaller along each axis (``ceil(n factor)`` voxels):
        new voxel ``w`` sits at old voxel ``(w + 1/2) / factor - 1/2`` (``sampling_factor``)."""
        if factor == 1:
            return self
        d = len(self.shape)
        shape = tuple(math.ceil(n * factor - 1e-9) for n in self.shape)
        step = 1.0 / factor
        refine = homogeneous(
            torch.eye(d, dtype=torch.float64)[None] * step, torch.full((1, d), step / 2 - 0.5)
        )[0]
        return OutputGrid(shape, self.matrix @ refine, self.affine @ refine)


class Stitcher:
    """Accumulates ``n``, ``W``, ``S1`` and ``S2`` (see the module docstring) of ``channels`` channels."""

    def __init__(
        self, grid: OutputGrid, channels: int, window: Window, interp_type: Interp, device: torch.device
    ) -> None:
        self.grid = grid
        self.window = window
        self.interp_type = interp_type
        self.channels = channels
        size = math.prod(grid.shape)
        # rows: n, W, S1 (channels), S2 (channels)
        self.sums = torch.zeros(2 + 2 * channels, size, dtype=torch.float32, device=device)
        self.strides = torch.tensor(
            [math.prod(grid.shape[k + 1 :]) for k in range(len(grid.shape))], dtype=torch.long, device=device
        )

    def add(self, values: Tensor, matrices: Tensor, level_weight: float = 1.0) -> None:
        """Add patches ``values`` [N, C, *s] placed by system ``matrices`` [N, d+1, d+1] (voxel -> system).

        Each patch pulls the block of output voxels around its box, clipped to the grid; patches go in
        groups whose blocks hold at most :data:`BLOCK_BUDGET` numbers (at least one patch), so the working
        memory is bounded by the budget or one patch's block, never by the batch times the image.
        """
        shape = tuple(values.shape[2:])
        to_voxel = invert(self.grid.matrix)[None] @ matrices
        points = box_corners(to_voxel, tuple(shape))
        low = torch.ceil(points.amin(dim=1) - 1e-6).clamp(min=0)
        upper = shape_tensor(self.grid.shape)
        high = torch.minimum(torch.floor(points.amax(dim=1) + 1e-6) + 1.0, upper)
        touching = (high > low).all(dim=1).nonzero().squeeze(1)
        if len(touching) == 0:
            return
        block = (high - low)[touching].amax(dim=0)
        rows = 2 + 2 * self.channels
        group = max(1, BLOCK_BUDGET // (int(block.prod()) * rows))
        window = window_weights(tuple(shape), self.window, values.device)
        for part in torch.split(touching, group):
            self._add_block(
                values[part.to(values.device)], to_voxel[part], low[part], high[part], window, level_weight
            )

    def _add_block(
        self, values: Tensor, to_voxel: Tensor, low: Tensor, high: Tensor, window: Tensor, level_weight: float
    ) -> None:
        """Pull patches ``values`` [N, C, *s] (patch voxel -> output voxel ``to_voxel``) into the blocks of
        output voxels ``[low, high)`` and add them."""
        n, _, *shape = values.shape
        d = len(shape)
        block_shape = tuple(int(k) for k in (high - low).amax(dim=0).tolist())
        # block voxel b -> output voxel low + b -> patch voxel
        to_patch = invert(to_voxel) @ homogeneous(torch.eye(d, dtype=torch.float64).expand(n, d, d), low)
        weighted = level_weight * window.expand(n, 1, *shape)
        source = torch.cat(
            [torch.ones_like(weighted), weighted, weighted * values, weighted * values.square()], 1
        )
        read = crop(source.float(), to_patch, block_shape, self.interp_type, torch.arange(n))
        self._accumulate(
            read.to(self.sums.device), low.to(device=self.sums.device, dtype=torch.long), block_shape
        )

    def _accumulate(self, blocks: Tensor, origin: Tensor, block_shape: tuple[int, ...]) -> None:
        """Add ``blocks`` [N, R, *block] whose voxel 0 lies at output voxel ``origin`` [N, d]."""
        device = blocks.device
        axes = [torch.arange(k, device=device) for k in block_shape]
        offsets = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(1, -1, len(block_shape))
        voxels = origin[:, None, :] + offsets
        upper = torch.tensor(self.grid.shape, device=device)
        inside = ((voxels >= 0) & (voxels < upper)).all(dim=-1).reshape(-1)
        flat = (voxels * self.strides).sum(dim=-1).reshape(-1)[inside]
        rows = (
            blocks.reshape(blocks.shape[0], blocks.shape[1], -1).transpose(0, 1).reshape(blocks.shape[1], -1)
        )
        self.sums.index_add_(1, flat, rows[:, inside])

    def count(self) -> Tensor:
        """``n``: the number of patch outputs each voxel received, ``[*shape]``."""
        return self.sums[0].view(self.grid.shape)

    def mean(self, sparse_suppression: float = 0.0) -> Tensor:
        """``mu * n / sqrt(n^2 + 3 alpha)`` [C, *shape]; 0 where nothing was stitched."""
        count, weight = self.sums[0], self.sums[1]
        mu = self.sums[2 : 2 + self.channels] / weight.clamp(min=1e-12)
        factor = count / torch.sqrt(count.square() + 3.0 * sparse_suppression).clamp(min=1e-12)
        return (mu * torch.where(weight > 0, factor, 0.0)).view(self.channels, *self.grid.shape)

    def std(self) -> Tensor:
        """Weighted standard deviation ``sqrt(S2 / W - mu^2)`` of the outputs [C, *shape]; 0 where unseen."""
        weight = self.sums[1].clamp(min=1e-12)
        mu = self.sums[2 : 2 + self.channels] / weight
        variance = (self.sums[2 + self.channels :] / weight - mu.square()).clamp(min=0.0)
        return variance.sqrt().view(self.channels, *self.grid.shape)

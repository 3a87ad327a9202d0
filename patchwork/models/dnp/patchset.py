"""The result of a patch draw: per level, the patches, their label patches and their geometry.

A patch set holds ``depth`` :class:`Level` s. Patch ``i`` of level ``n > 0`` is nested in patch
``parent[i]`` of level ``n - 1``; the patches of level 0 have the image as parent (``parent == -1``).
Three matrices describe each patch (float64, CPU, ``[N, d+1, d+1]``):

* ``matrices``: patch voxel -> the patchwork's coordinates (world mm or image voxel, ``system``);
* ``out_matrices``: the same for the output patch (``out_patch_size``), which covers the same box;
* ``relative``: patch voxel -> parent patch voxel (image voxel at level 0), i.e.
  ``matrices[n] = matrices[n-1][parent] @ relative[n]``; this is what crops the parent's output at the
  child (``C_n = R((p_{n-1}, X_{n-1}), p_n)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from patchwork.models.dnp.grid import ImageGrid

Tensor = torch.Tensor


@dataclass(frozen=True)
class Level:
    """One level of a patch set.

    ``inputs`` [N, C, *patch_size]; ``labels`` [N, L, *out_patch_size] float (label channels), or
    [N, 1, *out_patch_size] long class indices when ``categorical`` (0 = background), or ``None``.
    """

    inputs: Tensor
    labels: Tensor | None
    matrices: Tensor
    out_matrices: Tensor
    relative: Tensor
    parent: Tensor

    def __len__(self) -> int:
        return self.inputs.shape[0]


@dataclass(frozen=True)
class PatchSet:
    """``levels`` coarse to fine, and the ``grid`` of the image they were drawn from (the scatter target)."""

    levels: list[Level]
    grid: ImageGrid

    def __len__(self) -> int:
        """Number of trees: patches at level 0."""
        return len(self.levels[0])

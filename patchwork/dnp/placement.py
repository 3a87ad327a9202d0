"""Where child patches go inside their parents (``generate_type``), in relative coordinates ``r``.

``r`` in ``[-1, 1]^d`` spans the parent's box (:mod:`patchwork.dnp.geometry`); the matrices are then built,
and snapped into the parent, by :func:`patchwork.dnp.geometry.place`. The image itself is the parent of
level 0.

* ``'random'``: ``r ~ U[-1, 1]^d``. With snapping, centres that would push the child out are moved onto the
  border, so the border region is sampled densely (the paper's ``snapper``).
* ``'tree'``: a regular grid of children tiles each parent: along parent axis ``j`` the child's relative
  half extent ``e_j`` needs ``k_j = ceil(1 / e_j)`` children, centred at
  ``linspace(-(1 - e_j), 1 - e_j, k_j)``: the outer ones touch the parent's faces and neighbours overlap
  (spacing ``2 (1 - e_j) / (k_j - 1) <= 2 e_j``), so children cover their parent and the finest level
  covers the image. The grid is computed from the unaugmented geometry; with rotation or
  scaling augmentation the cover is no longer guaranteed.
* foreground trees (``balance``): the child centre is ``x* - L (u * s/2)``, ``u ~ U[-1, 1]^d``, so the target
  point ``x*`` lies at a uniformly random position inside the child.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch

from patchwork.dnp.geometry import half_extent, relative_position, shape_tensor

Tensor = torch.Tensor


def uniform(count: int, ndim: int, generator: torch.Generator) -> Tensor:
    """``count`` relative positions drawn uniformly from ``[-1, 1]^d``."""
    return 2.0 * torch.rand(count, ndim, generator=generator, dtype=torch.float64) - 1.0


def tiling(parent: Tensor, parent_shape: Sequence[int], linear: Tensor, shape: Sequence[int]) -> Tensor:
    """Relative centres ``[K, d]`` of children ``(linear [d, d], shape)`` tiling a parent ``(parent, s_p)``.

    ``parent`` and ``linear`` are linear parts of the matrices (the tiling does not depend on positions).
    """
    extent = half_extent(parent[None], linear[None], shape)[0] / (shape_tensor(parent_shape) / 2.0)
    axes = []
    for e in extent.tolist():
        count = 1 if e >= 1.0 else math.ceil(1.0 / e - 1e-9)
        axes.append(
            torch.linspace(-(1.0 - e), 1.0 - e, count, dtype=torch.float64) if count > 1 else torch.zeros(1)
        )
    return torch.tensor(list(itertools.product(*[a.tolist() for a in axes])), dtype=torch.float64)


def around_targets(
    parents: Tensor,
    parent_shape: Sequence[int],
    linear: Tensor,
    shape: Sequence[int],
    targets: Tensor,
    generator: torch.Generator,
) -> Tensor:
    """Relative centres ``[N, d]`` of children ``(linear [N, d, d], shape)`` that contain ``targets`` [N, d].

    ``targets`` are points in the patchwork's coordinates; ``parents`` [N, d+1, d+1] the children's parents.
    """
    offset = uniform(targets.shape[0], targets.shape[1], generator) * shape_tensor(shape) / 2.0
    centre = targets - torch.einsum("nij,nj->ni", linear, offset)
    return relative_position(parents, parent_shape, centre)

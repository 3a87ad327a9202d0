"""Where child patches go inside their parents (``generate_type``), in relative coordinates ``r``.

``r`` in ``[-1, 1]^d`` spans the parent's box (:mod:`~.geometry`); the matrices are then built,
and snapped into the parent, by :func:`~.geometry.place`. The image itself is the parent of
level 0.

* ``'random'``: ``r ~ U[-1, 1]^d``. With snapping, centres that would push the child out are moved onto the
  border, so the border region is sampled densely (the paper's ``snapper``).
* ``'tree'``: a regular grid of children tiles each parent. With ``b`` the half sides (parent voxels) of the
  axis-aligned box of an unaugmented child, the tiles use the largest box ``lambda b`` that fits inside
  every drawn child as the parent sees it (a child ``M = F^-1 L``, parent frame ``F``, child linear part
  ``L``, contains the box ``|x_i| <= c_i`` iff ``|M^-1| c <= s/2``, so ``lambda = min_j (s_j/2) /
  (|M^-1| b)_j``; 1 for children aligned with their parent). Along parent axis ``j`` the relative half
  extent ``e_j = lambda b_j / (s_p,j / 2)`` needs ``k_j = ceil(1 / e_j)`` children, centred at
  ``linspace(-(1 - e_j), 1 - e_j, k_j)``: the outer boxes touch the parent's faces and neighbours overlap,
  so the children cover their parent, rotated or not (tiles are not snapped: a rotated tile may reach
  beyond its parent). A copy of a tiling may be *jittered*: shifted as a whole by ``U[-g/2, g/2]`` per
  axis, ``g`` the spacing of the centres, and snapped into its parent, so it evaluates other patches (the
  exact copy keeps the cover).
* ``'random'`` driven by a parent output (application): a centre is drawn at parent output voxel ``v``
  with probability proportional to ``inside(v) (p(v) + explore)``, uniform within that voxel
  (:func:`driven`).
* foreground trees (``balance``): the child centre is ``x* - L (u * s/2)``, ``u ~ U[-1, 1]^d``, so the target
  point ``x*`` lies at a uniformly random position inside the child.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from patchwork.models.dnp.geometry import half_extent, invert_linear, relative_position, shape_tensor

Tensor = torch.Tensor


def uniform(count: int, ndim: int, generator: torch.Generator) -> Tensor:
    """``count`` relative positions drawn uniformly from ``[-1, 1]^d``."""
    return 2.0 * torch.rand(count, ndim, generator=generator, dtype=torch.float64) - 1.0


@dataclass(frozen=True)
class Tiling:
    """Relative centres ``offsets`` [K, d] of a parent's tiles and their ``spacing`` [d] (room to jitter)."""

    offsets: Tensor
    spacing: Tensor


def tiling(
    nominal_frame: Tensor,
    parent_shape: Sequence[int],
    nominal: Tensor,
    shape: Sequence[int],
    frames: Tensor,
    linears: Tensor,
) -> Tiling:
    """The tiling (module docstring) of parents of ``parent_shape`` by children of ``shape``.

    ``nominal_frame`` and ``nominal`` [d, d] are the unaugmented linear parts of parent and child (they fix
    the box shape ``b``); ``frames`` and ``linears`` [G, d, d] the actual ones of every parent-child pair
    (the box is shrunk to fit all of them).
    """
    half_parent = shape_tensor(parent_shape) / 2.0
    box = half_extent(nominal_frame[None], nominal[None], shape)[0]
    inverse = invert_linear(invert_linear(frames) @ linears).abs()
    fit = (shape_tensor(shape) / 2.0) / (inverse @ box)
    extent = float(fit.amin().clamp(max=1.0)) * box / half_parent
    axes, spacing = [], []
    for e in extent.tolist():
        count = 1 if e >= 1.0 else math.ceil(1.0 / e - 1e-9)
        axes.append(
            torch.linspace(-(1.0 - e), 1.0 - e, count, dtype=torch.float64) if count > 1 else torch.zeros(1)
        )
        spacing.append(2.0 * (1.0 - e) / (count - 1) if count > 1 else 2.0 * (e - 1.0))
    offsets = torch.tensor(list(itertools.product(*[a.tolist() for a in axes])), dtype=torch.float64)
    return Tiling(offsets, torch.tensor(spacing, dtype=torch.float64))


def driven(weights: Tensor, per_parent: int, generator: torch.Generator) -> Tensor:
    """Relative centres ``[P * per_parent, d]`` drawn from the parents' output voxels by ``weights``
    [P, *o] (non-negative, not all zero per parent), uniform within the drawn voxel."""
    count, out_shape = weights.shape[0], weights.shape[1:]
    voxel = torch.multinomial(
        weights.reshape(count, -1).double(), per_parent, replacement=True, generator=generator
    )
    index = torch.stack(torch.unravel_index(voxel.reshape(-1).cpu(), tuple(out_shape)), dim=-1).double()
    within = torch.rand(index.shape, generator=generator, dtype=torch.float64)
    return (index + within) / shape_tensor(out_shape) * 2.0 - 1.0


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

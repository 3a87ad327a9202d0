"""Homogeneous patch matrices: the geometry of a patch p = (A, s).

A patch of shape ``s`` (``d`` integers) is placed by a homogeneous ``(d+1) x (d+1)`` matrix ``A`` that maps
the patch's voxel index ``v`` (voxel centres at integers ``0 .. s-1``) to the coordinate system of the
patchwork (world millimetres or image voxel indices, see :class:`~.grid.ImageGrid`).
Writing ``A = [[L, t], [0, 1]]``, the patch centre is ``c = L (s-1)/2 + t`` and its box (the union of
its voxels) is ``c + L u`` for ``u`` in ``[-s/2, s/2]``.

Inside a parent patch ``(P, s_p)`` positions are given by *relative coordinates* ``r`` in ``[-1, 1]^d``:
the point ``P ((s_p - 1)/2 + r * s_p/2)``, so ``r = +-1`` are the faces of the parent's box.

Matrices are float64 and small (``N x (d+1) x (d+1)``); they are built on the CPU and moved to the data's
device only when voxel coordinates are computed (:func:`patch_coordinates`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Tensor = torch.Tensor


def shape_tensor(shape: Sequence[int]) -> Tensor:
    """``shape`` as a float64 vector."""
    return torch.as_tensor(tuple(shape), dtype=torch.float64)


def homogeneous(linear: Tensor, translation: Tensor) -> Tensor:
    """Stack ``[N, d, d]`` linear parts and ``[N, d]`` translations into ``[N, d+1, d+1]`` matrices."""
    n, d = translation.shape
    out = torch.zeros(n, d + 1, d + 1, dtype=torch.float64)
    out[:, :d, :d] = linear
    out[:, :d, d] = translation
    out[:, d, d] = 1.0
    return out


def apply(matrices: Tensor, points: Tensor) -> Tensor:
    """Map ``[N, d]`` points by ``[N, d+1, d+1]`` homogeneous matrices: ``L x + t``."""
    d = points.shape[-1]
    return torch.einsum("nij,nj->ni", matrices[:, :d, :d], points) + matrices[:, :d, d]


def invert_linear(linear: Tensor) -> Tensor:
    """Inverse of ``[..., d, d]`` matrices (``d`` = 2 or 3) in closed form, ``adj(L) / det(L)``.

    Patch matrices are tiny and many; the closed form avoids a LAPACK call per batch, whose overhead
    dominates for ``d <= 3``. In 3D the rows of ``L^-1`` are ``(c_1 x c_2, c_2 x c_0, c_0 x c_1) / det`` for
    the columns ``c_k`` of ``L``.
    """
    if linear.shape[-1] == 2:
        a, b, c, d = linear[..., 0, 0], linear[..., 0, 1], linear[..., 1, 0], linear[..., 1, 1]
        adjugate = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2)
        return adjugate / (a * d - b * c)[..., None, None]
    c0, c1, c2 = linear[..., :, 0], linear[..., :, 1], linear[..., :, 2]
    rows = torch.stack(
        [torch.linalg.cross(c1, c2), torch.linalg.cross(c2, c0), torch.linalg.cross(c0, c1)], -2
    )
    return rows / (c0 * rows[..., 0, :]).sum(-1)[..., None, None]


def invert(matrices: Tensor) -> Tensor:
    """Inverse of homogeneous matrices ``[..., d+1, d+1]``: ``[[L^-1, -L^-1 t], [0, 1]]``."""
    d = matrices.shape[-1] - 1
    inverse = torch.zeros_like(matrices)
    linear = invert_linear(matrices[..., :d, :d])
    inverse[..., :d, :d] = linear
    inverse[..., :d, d] = -(linear @ matrices[..., :d, d : d + 1])[..., 0]
    inverse[..., d, d] = 1.0
    return inverse


def patch_matrix(centre: Tensor, linear: Tensor, shape: Sequence[int]) -> Tensor:
    """Matrices whose patches of ``shape`` have linear part ``linear`` [N, d, d] and centre ``centre`` [N, d].

    ``t = c - L (s-1)/2`` so that the middle of the voxel grid lands on ``c``.
    """
    mid = (shape_tensor(shape) - 1.0) / 2.0
    return homogeneous(linear, centre - linear @ mid)


def resize_matrix(matrices: Tensor, shape: Sequence[int], new_shape: Sequence[int]) -> Tensor:
    """Matrices of the patches that cover the same boxes as ``(matrices, shape)`` with ``new_shape`` voxels.

    Used for output patches (``out_patch_size``): new voxel ``w`` sits at old voxel
    ``(w + 1/2) s / s' - 1/2``, so ``A' = A S`` with ``S = [[diag(s/s'), s/(2 s') - 1/2], [0, 1]]``.
    """
    ratio = shape_tensor(shape) / shape_tensor(new_shape)
    step = homogeneous(torch.diag(ratio)[None], (ratio / 2.0 - 0.5)[None])
    return matrices @ step


def half_extent(frame: Tensor, linear: Tensor, shape: Sequence[int]) -> Tensor:
    """Half sides, in a parent's voxels, of the axis-aligned box around patches ``(linear, shape)``.

    ``frame`` [N, d, d] is the linear part ``F`` of the parent's matrix; the patch box ``L u``,
    ``|u_j| <= s_j/2``, seen in the parent's voxels is ``F^-1 L u``, whose bounding box has half sides
    ``|F^-1 L| s/2``.
    """
    return (invert_linear(frame) @ linear).abs() @ (shape_tensor(shape) / 2.0)


def relative_position(parent: Tensor, parent_shape: Sequence[int], points: Tensor) -> Tensor:
    """Relative coordinates ``r`` (``[-1, 1]`` spans the box) of points [N, d] in parents [N, d+1, d+1]."""
    sp = shape_tensor(parent_shape)
    voxel = apply(invert(parent), points)
    return (voxel - (sp - 1.0) / 2.0) / (sp / 2.0)


def place(
    parent: Tensor,
    parent_shape: Sequence[int],
    linear: Tensor,
    shape: Sequence[int],
    relative: Tensor,
    snap: bool,
) -> Tensor:
    """Matrices of children ``(linear, shape)`` centred at relative coordinates ``relative`` of their parents.

    With ``snap`` (the paper's ``snapper``) a child that would stick out of its parent is moved, along each
    parent axis, until its bounding box touches the parent's face: ``|r_j| <= 1 - e_j`` with ``e_j`` the
    child's relative half extent (:func:`half_extent` divided by ``s_p/2``); a child wider than its parent is
    centred. Without ``snap`` only the centre is guaranteed to lie inside the parent.
    """
    sp = shape_tensor(parent_shape)
    d = linear.shape[-1]
    if snap:
        limit = (1.0 - half_extent(parent[:, :d, :d], linear, shape) / (sp / 2.0)).clamp(min=0.0)
        relative = torch.maximum(torch.minimum(relative, limit), -limit)
    centre_voxel = (sp - 1.0) / 2.0 + relative * sp / 2.0
    return patch_matrix(apply(parent, centre_voxel), linear, shape)


def patch_coordinates(matrices: Tensor, shape: Sequence[int], device: torch.device) -> Tensor:
    """Coordinates ``A v`` of every voxel ``v`` of ``N`` patches of ``shape``, float32 ``[N, *shape, d]``.

    ``matrices`` map patch voxels to the voxel indices of the array that is sampled or written.
    Each coordinate is one broadcast addition of the float64 parts of :func:`separable_coordinates`
    (a batched matrix product over every voxel was several times slower on the CPU and less exact).
    """
    size = tuple(int(n) for n in shape)
    n, d = matrices.shape[0], len(size)
    coords = torch.empty((n, *size, d), dtype=torch.float32, device=device)
    for k, (outer, inner) in enumerate(separable_coordinates(matrices.detach().cpu().double(), size)):
        outer = outer.to(device=device, dtype=torch.float32).unsqueeze(-1)
        inner = inner.to(device=device, dtype=torch.float32).reshape(n, *[1] * (d - 1), size[-1])
        torch.add(outer, inner, out=coords[..., k])
    return coords


def separable_coordinates(matrices: Tensor, shape: Sequence[int]) -> list[tuple[Tensor, Tensor]]:
    """Per axis ``k``, coordinate ``k`` of ``A v`` split as ``outer[n, v_0..v_{d-2}] + inner[n, v_{d-1}]``.

    ``outer = t_k + sum_{j<d-1} L_kj v_j`` (``[N, *shape[:-1]]``) and ``inner = L_k,d-1 v_{d-1}``
    (``[N, shape[-1]]``), float64 from float64 ``matrices``. Both are ``1/shape[-1]`` of the full coordinate
    array, so a caller forms each full coordinate with one broadcast addition (one pass over memory)
    instead of a batched matrix product over every voxel; the float64 parts keep the result within one
    float32 rounding of the exact ``A v``.
    """
    n, d = matrices.shape[0], len(shape)
    linear, translation = matrices[:, :d, :d], matrices[:, :d, d]
    axes = [torch.arange(int(s), dtype=torch.float64) for s in shape]
    terms = []
    for k in range(d):
        outer = translation[:, k].reshape(n, *[1] * (d - 1))
        for j in range(d - 1):
            along = [1] * (d - 1)
            along[j] = int(shape[j])
            outer = outer + linear[:, k, j].reshape(n, *[1] * (d - 1)) * axes[j].reshape(1, *along)
        terms.append((outer.expand(n, *(int(s) for s in shape[:-1])), linear[:, k, d - 1, None] * axes[-1]))
    return terms


def coordinate_bounds(matrices: Tensor, shape: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Least and greatest coordinate ``[N, d]`` of ``A v`` over the voxels of ``N`` patches of ``shape``.

    ``A v`` is affine in ``v``, so the extremes lie at the box's corners: ``t + sum_j min(0, L_kj (s_j - 1))``
    and the same with ``max``. Exact in float64; lets a sampler skip clamping patches that lie inside.
    """
    d = len(shape)
    span = matrices[:, :d, :d] * (shape_tensor(shape) - 1.0)
    translation = matrices[:, :d, d]
    return translation + span.clamp(max=0.0).sum(-1), translation + span.clamp(min=0.0).sum(-1)

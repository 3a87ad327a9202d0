"""Geometric augmentation as a random linear part of the patch matrix, ``A = R_1 Sigma R_2`` (the paper's).

The drawn map is

    L_aug = R Q D Q^T F         (so R_1 = R Q, Sigma = D, R_2 = Q^T F)

with ``F`` the flips, ``D`` the scalings along the axes of a frame ``Q`` and ``R`` the rotation of the
patch about its centre. With ``Q = I`` (``dphi_frame`` off) the scalings act along the patch's own axes
(``L_aug = R D F``); with ``Q`` drawn (``dphi_frame``, up to uniform) they stretch along any axes, e.g. the
ATLAS recipe's ``R S R^T``. The patch matrix's linear part is ``L_aug diag(h)`` with ``h`` the level's voxel
size.

* ``dphi``: rotation width in radians. 2D: angle ``phi = dphi * e``, ``e ~ N(0, 1)``. 3D: a normally
  distributed quaternion around the identity, ``q = (1 + m e_0 / 2, dphi_x e_x / 2, dphi_y e_y / 2,
  dphi_z e_z / 2) / |.|`` with ``e ~ N(0, I_4)`` and ``m = max_k dphi_k``: a small rotation turns by about
  ``dphi_k e_k`` about axis ``k``; as the widths grow the Gaussian in R^4 forgets its centre and ``q``
  becomes uniform on the unit sphere, i.e. the rotation uniform on SO(3) (angle density
  ``(1 - cos t) / pi``, median 132.3 deg); a single wide axis gives a uniform angle about that axis.
  (Fixing the first component at 1, as before, saturates: every wide draw turns by nearly 180 deg.)
* ``dphi_frame``: width of the frame rotation ``Q`` (same law as ``dphi``).
* ``flip``: per axis 0/1; an enabled axis is mirrored with probability 1/2 (``F_kk = -1``).
* ``dscale``: per axis ratio ``a_k >= 0``; ``D_kk = (1 + a_k)^e_k``, ``e_k ~ N(0, 1)``, a log-normal factor
  whose one-sigma draw scales the field of view by ``1 + a_k``.

The widths are an :class:`~.settings.Augment`.

Example::

    draw(Augment(dphi=0.3, flip=(1, 0, 0), dscale=(0.1, 0.1, 0.1)), 16, 3, torch.Generator().manual_seed(0))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from patchwork.models.dnp.settings import Augment

Tensor = torch.Tensor


def draw(augment: Augment, count: int, ndim: int, generator: torch.Generator) -> Tensor:
    """``count`` linear maps ``R Q D Q^T F`` as float64 ``[count, ndim, ndim]``, drawn from ``generator``.

    ``augment`` must have passed ``augment.check(ndim)``. Draw order: flips, scalings, ``R``, ``Q``.
    """
    flips = torch.ones(count, ndim, dtype=torch.float64)
    flip = augment.widths("flip", ndim)
    if flip is not None:
        enabled = torch.tensor(flip, dtype=torch.float64) > 0
        mirror = torch.rand(count, ndim, generator=generator, dtype=torch.float64) < 0.5
        flips = torch.where(mirror & enabled, -flips, flips)
    scales = torch.ones(count, ndim, dtype=torch.float64)
    dscale = augment.widths("dscale", ndim)
    if dscale is not None:
        ratio = torch.tensor(dscale, dtype=torch.float64)
        normal = torch.randn(count, ndim, generator=generator, dtype=torch.float64)
        scales = (1.0 + ratio) ** normal
    linear = torch.diag_embed(scales)
    rotation = None if augment.dphi is None else rotations(augment.dphi, count, ndim, generator)
    if augment.dphi_frame is not None:
        frame = rotations(augment.dphi_frame, count, ndim, generator)
        linear = frame @ linear @ frame.transpose(1, 2)
    if rotation is not None:
        linear = rotation @ linear
    return linear * flips[:, None, :]  # right-multiplying by F = diag(flips) scales the columns


def rotations(dphi: float | Sequence[float], count: int, ndim: int, generator: torch.Generator) -> Tensor:
    """``count`` random rotations of width ``dphi`` (see the module docstring), float64 ``[count, d, d]``."""
    if ndim == 2:
        width = float(dphi if isinstance(dphi, (int, float)) else dphi[0])
        phi = width * torch.randn(count, generator=generator, dtype=torch.float64)
        cos, sin = phi.cos(), phi.sin()
        return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    widths = torch.as_tensor(dphi, dtype=torch.float64).expand(3)
    scale = torch.cat([widths.amax(dim=0, keepdim=True), widths]) / 2.0
    q = torch.randn(count, 4, generator=generator, dtype=torch.float64) * scale
    q[:, 0] += 1.0
    return quaternion_matrix(q / q.norm(dim=1, keepdim=True))


def quaternion_matrix(q: Tensor) -> Tensor:
    """Rotation matrices ``[N, 3, 3]`` of unit quaternions ``q = (w, x, y, z)`` ``[N, 4]``."""
    w, x, y, z = q.unbind(-1)
    rows = [
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ]
    return torch.stack([torch.stack(row, -1) for row in rows], -2)


def rotation_angle(rotations_: Tensor) -> Tensor:
    """The angle in ``[0, pi]`` of rotation matrices ``[N, d, d]``: ``arccos((tr R - (d - 2)) / 2)``."""
    d = rotations_.shape[-1]
    trace = rotations_.diagonal(dim1=-2, dim2=-1).sum(-1)
    return torch.arccos(((trace - (d - 2)) / 2.0).clamp(-1.0, 1.0))

"""Geometric augmentation as a random linear part of the patch matrix.

The paper parametrises the linear part of an augmented patch as ``R_1 Sigma R_2`` with rotations ``R_1``,
``R_2`` and a diagonal ``Sigma``. Here ``R_2`` is the identity, so the drawn map is ``L_aug = R Sigma``:
``Sigma`` scales and flips along the patch's own axes (what the network sees), then ``R`` turns the patch
about its centre. The patch matrix's linear part is ``L_aug diag(h)`` with ``h`` the level's voxel size.

* ``dphi``: rotation width in radians. 2D: angle ``phi = dphi * e``, ``e ~ N(0, 1)``. 3D: a normally
  distributed quaternion ``q = (1, dphi_x e_x / 2, dphi_y e_y / 2, dphi_z e_z / 2) / |.|``, so a small
  rotation turns by about ``dphi_k e_k`` about axis ``k``; ``dphi`` is a float (isotropic) or a 3-tuple.
* ``flip``: per axis 0/1; an enabled axis is mirrored with probability 1/2 (``Sigma_kk *= -1``).
* ``dscale``: per axis ratio ``a_k >= 0``; ``Sigma_kk *= (1 + a_k)^e_k``, ``e_k ~ N(0, 1)``, a log-normal
  factor whose one-sigma draw scales the field of view by ``1 + a_k``.

The widths are an :class:`~patchwork.dnp.settings.Augment`.

Example::

    draw(Augment(dphi=0.3, flip=(1, 0, 0), dscale=(0.1, 0.1, 0.1)), 16, 3, torch.Generator().manual_seed(0))
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from patchwork.dnp.settings import Augment

Tensor = torch.Tensor


def draw(augment: Augment, count: int, ndim: int, generator: torch.Generator) -> Tensor:
    """``count`` linear maps ``R Sigma`` as float64 ``[count, ndim, ndim]``, drawn from ``generator``.

    ``augment`` must have passed ``augment.check(ndim)``.
    """
    diag = torch.ones(count, ndim, dtype=torch.float64)
    flip = augment.widths("flip", ndim)
    if flip is not None:
        enabled = torch.tensor(flip, dtype=torch.float64) > 0
        mirror = torch.rand(count, ndim, generator=generator, dtype=torch.float64) < 0.5
        diag = torch.where(mirror & enabled, -diag, diag)
    dscale = augment.widths("dscale", ndim)
    if dscale is not None:
        ratio = torch.tensor(dscale, dtype=torch.float64)
        normal = torch.randn(count, ndim, generator=generator, dtype=torch.float64)
        diag = diag * (1.0 + ratio) ** normal
    sigma = torch.diag_embed(diag)
    if augment.dphi is None:
        return sigma
    return rotations(augment.dphi, count, ndim, generator) @ sigma


def rotations(dphi: float | Sequence[float], count: int, ndim: int, generator: torch.Generator) -> Tensor:
    """``count`` random rotations of width ``dphi`` (see the module docstring), float64 ``[count, d, d]``."""
    if ndim == 2:
        width = float(dphi if isinstance(dphi, (int, float)) else dphi[0])
        phi = width * torch.randn(count, generator=generator, dtype=torch.float64)
        cos, sin = phi.cos(), phi.sin()
        return torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
    widths = torch.as_tensor(dphi, dtype=torch.float64).expand(3)
    vector = widths / 2.0 * torch.randn(count, 3, generator=generator, dtype=torch.float64)
    q = torch.cat([torch.ones(count, 1, dtype=torch.float64), vector], dim=1)
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

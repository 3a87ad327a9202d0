"""The voxel size of every level of a patching scheme (:class:`~.settings.Scheme`) in an image.

Level ``n`` of ``depth`` levels has a fixed matrix size ``s_n`` (``patch_size``) and a field of view
``f_n`` (side lengths of its box). The coarsest field of view ``f_0`` is ``fov_mm`` (absolute) or
``fov_rel`` times the image's extent; the finest level's voxel size is ``destvox_mm`` or ``destvox_rel``
times the image's voxel size, so ``f_{D-1} = destvox * s_{D-1}``. The levels between are interpolated
exponentially, ``f_n = f_0^(1 - n/(D-1)) f_{D-1}^(n/(D-1))``, and each level's voxel size is
``h_n = f_n / s_n``. With ``depth == 1`` the single level's voxel size is ``f_0 / s_0``.

Example::

    voxel_sizes(Scheme(patch_size=(32, 32, 32), fov_rel=0.9, destvox_mm=1.0), 3, grid)
"""

from __future__ import annotations

import torch

from patchwork.models.dnp.grid import ImageGrid
from patchwork.models.dnp.settings import Scheme

Tensor = torch.Tensor


def voxel_sizes(scheme: Scheme, depth: int, grid: ImageGrid) -> list[Tensor]:
    """Voxel size ``h_n`` of each level in system units (float64 ``[d]``) for an image ``grid``."""
    d = grid.ndim
    sizes = [torch.as_tensor(s, dtype=torch.float64) for s in scheme.sizes(depth)]
    if scheme.fov_mm is not None:
        first = torch.as_tensor(scheme.fov_mm, dtype=torch.float64).expand(d) / grid.mm_per_unit
    else:
        first = torch.as_tensor(scheme.fov_rel, dtype=torch.float64).expand(d) * grid.extent
    if depth == 1:
        return [first / sizes[0]]
    if scheme.destvox_mm is not None:
        destvox = torch.as_tensor(scheme.destvox_mm, dtype=torch.float64).expand(d) / grid.mm_per_unit
    else:
        destvox = torch.as_tensor(scheme.destvox_rel, dtype=torch.float64).expand(d) * grid.voxel_size
    last = destvox * sizes[-1]
    steps = [n / (depth - 1) for n in range(depth)]
    return [first ** (1.0 - t) * last**t / s for t, s in zip(steps, sizes, strict=True)]

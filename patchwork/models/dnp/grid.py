"""The image as a patch: its voxel grid in the patchwork's coordinate system (``system``).

``system='world'``: patch matrices map to world millimetres; the image's matrix is its affine and
unaugmented patches are aligned with the world axes, so two copies of an image stored with different voxel
sizes or flipped axes give the same anatomy. ``system='matrix'``: patch matrices map to the image's voxel
indices; the image's matrix is the identity and patches are aligned with the array axes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from patchwork.errors import PatchworkError
from patchwork.models.dnp.geometry import invert, shape_tensor
from patchwork.models.dnp.settings import System

Tensor = torch.Tensor


def reduce_affine(affine: Tensor, ndim: int) -> Tensor:
    """A float64 ``(ndim+1)``-square affine; a 4x4 affine of a 2D image keeps rows and columns 0, 1 and 3."""
    affine = torch.as_tensor(affine, dtype=torch.float64)
    if affine.shape == (ndim + 1, ndim + 1):
        return affine.clone()
    if ndim == 2 and affine.shape == (4, 4):
        keep = torch.tensor([0, 1, 3])
        return affine[keep][:, keep].clone()
    raise PatchworkError(f"affine of shape {tuple(affine.shape)} does not fit a {ndim}D image")


@dataclass(frozen=True)
class ImageGrid:
    """A voxel grid ``shape`` with its ``world <- voxel`` ``affine`` (float64), seen in ``system``."""

    shape: tuple[int, ...]
    affine: Tensor
    system: System

    @classmethod
    def from_affine(cls, shape: tuple[int, ...], affine: Tensor, system: System) -> ImageGrid:
        """The grid of an image of spatial ``shape``; a 4x4 ``affine`` is reduced for 2D images."""
        affine = reduce_affine(affine, len(shape))
        if torch.linalg.det(affine[:-1, :-1]).abs() < 1e-12:
            raise PatchworkError("affine is singular")
        return cls(tuple(int(n) for n in shape), affine, system)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def matrix(self) -> Tensor:
        """The image as a patch: ``system <- voxel`` (the affine in 'world', the identity in 'matrix')."""
        if self.system == "world":
            return self.affine
        return torch.eye(self.ndim + 1, dtype=torch.float64)

    def voxel_from(self, matrices: Tensor) -> Tensor:
        """``matrix^-1 A``: patch voxel -> voxel index of this grid, for matrices ``A`` [N, d+1, d+1]."""
        return invert(self.matrix) @ matrices

    @property
    def extent(self) -> Tensor:
        """Side lengths of the image's axis-aligned bounding box in system units: ``|M| n`` (voxel faces)."""
        d = self.ndim
        return self.matrix[:d, :d].abs() @ shape_tensor(self.shape)

    @property
    def voxel_size(self) -> Tensor:
        """Size of the image voxel along each system axis.

        Each system axis takes the length of the image axis that points most nearly along it (exact for
        affines that only scale, flip and permute axes).
        """
        d = self.ndim
        lin = self.matrix[:d, :d]
        lengths = lin.norm(dim=0)
        return lengths[(lin.abs() / lengths).argmax(dim=1)]

    @property
    def mm_per_unit(self) -> Tensor:
        """Millimetres per system unit along each system axis (1 in the world system)."""
        d = self.ndim
        if self.system == "world":
            return torch.ones(d, dtype=torch.float64)
        return self.affine[:d, :d].norm(dim=0)

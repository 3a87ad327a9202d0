"""An image prepared for cropping: tensors, grid, per-level filtered copies and labelled sites.

Users pass images as a tensor/array ``[C, *spatial]`` (or ``[*spatial]``) with its affine, or as a nibabel
image (spatial axes first, any further axes are channels). :class:`Volume` holds what every patch draw
needs, computed once: the normalised data, the label channels, the level voxel sizes for this image, the
anti-aliased copies per level and the labelled voxels for ``balance``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import torch

from patchwork.dnp.balance import ForegroundSites
from patchwork.dnp.geometry import invert_linear
from patchwork.dnp.grid import ImageGrid
from patchwork.errors import PatchworkError

Tensor = torch.Tensor
ImageLike = Tensor | np.ndarray | nib.spatialimages.SpatialImage


def _channels_first(image: ImageLike, ndim: int, what: str) -> tuple[Tensor, Tensor | None]:
    """``(array [C, *spatial], affine or None)`` of a tensor/array ``[C, *S]``/``[*S]`` or a nibabel image."""
    if isinstance(image, nib.spatialimages.SpatialImage):
        array = np.asarray(image.dataobj)
        if array.ndim < ndim:
            raise PatchworkError(f"{what}: a {array.ndim}D NIfTI cannot hold a {ndim}D image")
        spatial = array.shape[:ndim]
        array = array.reshape(*spatial, -1)
        return torch.from_numpy(np.moveaxis(array, -1, 0).copy()), torch.as_tensor(image.affine)
    tensor = torch.as_tensor(image)
    if tensor.ndim == ndim:
        tensor = tensor[None]
    if tensor.ndim != ndim + 1:
        raise PatchworkError(
            f"{what}: expected shape [C, *spatial] with {ndim} spatial axes, got {tuple(tensor.shape)}"
        )
    return tensor, None


def image_tensor(image: ImageLike, affine: Tensor | np.ndarray | None, ndim: int) -> tuple[Tensor, Tensor]:
    """The image as float32 ``[C, *spatial]`` and its affine (given, from the NIfTI, or the identity)."""
    data, own = _channels_first(image, ndim, "image")
    if affine is None:
        affine = own if own is not None else torch.eye(ndim + 1, dtype=torch.float64)
    data = data.float()
    if not bool(torch.isfinite(data).all()):
        raise PatchworkError("image contains NaN or infinite values")
    return data, torch.as_tensor(affine, dtype=torch.float64)


def label_channels(
    labels: ImageLike, ndim: int, spatial: Sequence[int], categorial_label: Sequence[int] | None
) -> Tensor:
    """Labels as float32 channels ``[L, *spatial]``.

    With ``categorial_label`` the labels are one integer map and channel ``i`` is
    ``map == categorial_label[i]``; otherwise every channel already is one label.
    """
    array, _ = _channels_first(labels, ndim, "labels")
    if tuple(array.shape[1:]) != tuple(spatial):
        raise PatchworkError(
            f"labels have spatial shape {tuple(array.shape[1:])}, the image {tuple(spatial)}"
        )
    if categorial_label is None:
        return array.float()
    if array.shape[0] != 1:
        raise PatchworkError("labels: categorial_label needs a single label map, got several channels")
    values = torch.as_tensor(categorial_label, dtype=array.dtype)
    return (array == values.view(-1, *[1] * ndim)).float()


def undersampling(grid: ImageGrid, voxel_size: Tensor) -> list[float]:
    """Length of a level voxel (size ``voxel_size`` along the system axes) in image voxels, per image axis.

    ``max_j |(M^-1 diag(h))_kj|`` with ``M`` the grid's linear part: exact when the patch axes are
    permuted/flipped image axes, the largest step along axis ``k`` otherwise.
    """
    d = grid.ndim
    in_voxels = invert_linear(grid.matrix[:d, :d]) @ torch.diag(voxel_size)
    return in_voxels.abs().amax(dim=1).tolist()


@dataclass(frozen=True)
class LevelSource:
    """What a level crops from: anti-aliased data ``[1, C, *(S+2)]`` and labels ``[1, L, *(S+2)]`` (or
    ``None``), padded with one zero voxel on every side (:func:`patchwork.dnp.resample.pad_source`)."""

    data: Tensor
    labels: Tensor | None


@dataclass(frozen=True)
class Volume:
    """A prepared image (see the module docstring); build it with ``CropGenerator.prepare``.

    ``voxel_sizes[n]`` is level ``n``'s voxel size in system units, ``sources[n]`` what it crops from and
    ``sites`` the labelled voxels (``None`` without labels).
    """

    grid: ImageGrid
    voxel_sizes: list[Tensor]
    sources: list[LevelSource]
    sites: ForegroundSites | None

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

from patchwork.errors import PatchworkError
from patchwork.models.dnp.balance import ForegroundSites
from patchwork.models.dnp.geometry import invert_linear
from patchwork.models.dnp.grid import ImageGrid

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


def label_map(labels: ImageLike, ndim: int, spatial: Sequence[int]) -> Tensor:
    """Labels as a tensor ``[L, *spatial]`` (one channel per label, or one integer map), shape checked."""
    array, _ = _channels_first(labels, ndim, "labels")
    if tuple(array.shape[1:]) != tuple(spatial):
        raise PatchworkError(
            f"labels have spatial shape {tuple(array.shape[1:])}, the image {tuple(spatial)}"
        )
    return array


def label_channels(
    labels: ImageLike, ndim: int, spatial: Sequence[int], categorial_label: Sequence[int] | None
) -> Tensor:
    """Labels as float32 channels ``[L, *spatial]``.

    With ``categorial_label`` the labels are one integer map and channel ``i`` is
    ``map == categorial_label[i]`` (NaN where the map is NaN: don't care); otherwise every channel already
    is one label.
    """
    array = label_map(labels, ndim, spatial)
    if categorial_label is None:
        return array.float()
    if array.shape[0] != 1:
        raise PatchworkError("labels: categorial_label needs a single label map, got several channels")
    array = array.double()
    values = torch.as_tensor(categorial_label, dtype=array.dtype)
    channels = (array == values.view(-1, *[1] * ndim)).float()
    return torch.where(torch.isnan(array), torch.full_like(channels, float("nan")), channels)


def label_positions(map_: Tensor, categorial_label: Sequence[int]) -> Tensor:
    """An integer label map ``[1, *S]`` as positions (int16/int32 ``[1, *S]``): ``i + 1`` where the map is
    ``categorial_label[i]``, 0 for other values, -1 for don't care (NaN or negative)."""
    if map_.shape[0] != 1:
        raise PatchworkError("labels: categorial_label needs a single label map, got several channels")
    dtype = torch.int16 if len(categorial_label) < 2**15 - 1 else torch.int32
    positions = torch.zeros(map_.shape, dtype=dtype)
    if map_.is_floating_point():
        positions[torch.isnan(map_)] = -1
    positions[map_ < 0] = -1
    for i, value in enumerate(categorial_label):
        positions[map_ == value] = i + 1
    return positions


def position_sites(positions: Tensor, count: int) -> ForegroundSites:
    """The labelled voxels (for ``balance``) of a position map ``[*S]`` of ``count`` labels."""
    return ForegroundSites.from_positions(positions.cpu(), count)


@dataclass(frozen=True)
class LabelSource:
    """What a level's labels are cropped from, padded with zeros (:func:`~.resample.pad_source`)
    and turned back into label channels ``[N, L, *o]`` (NaN = don't care) patch by patch:

    * ``'positions'``: one map of label positions (:func:`label_positions`, 2 bytes a voxel whatever the
      number of labels ``L``; nearest-neighbour crops without label smoothing): channel ``l`` is
      ``position == l + 1``, NaN where the position is -1;
    * ``'channels'``: ``L`` channels (smoothed or interpolated) and, where labels have don't-care voxels, a
      last channel ``q``, the don't-care fraction. The values are zero at don't-care voxels, so smoothing and
      linear interpolation never spread a NaN: a read gives ``y = v / (1 - q)`` (``divide``, the normalised
      filter of linear smoothing; ``'max'`` keeps ``v``) where ``1 - q >= 1/2`` and NaN elsewhere. The zero
      border reads as cared-for background.
    """

    data: Tensor
    kind: str
    count: int
    dontcare: bool = False
    divide: bool = True

    def channels(self, read: Tensor) -> Tensor:
        """Label channels ``[N, L, *o]`` (float32, NaN = don't care) of a read ``[N, K, *o]`` of ``data``."""
        if self.kind == "positions":
            values = torch.arange(1, self.count + 1, device=read.device).view(1, -1, *[1] * (read.ndim - 2))
            channels = (read == values).float()
            return torch.where(read < 0, torch.full_like(channels, float("nan")), channels)
        if not self.dontcare:
            return read
        values, care = read[:, :-1], 1.0 - read[:, -1:]
        labels = values / care.clamp(min=0.5) if self.divide else values
        return torch.where(care >= 0.5, labels, torch.full_like(labels, float("nan")))


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
    """What a level crops from: anti-aliased data ``[1, C, *(S+2)]`` padded with one zero voxel on every
    side (:func:`~.resample.pad_source`) and its labels (a :class:`LabelSource`, or ``None``)."""

    data: Tensor
    labels: LabelSource | None


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

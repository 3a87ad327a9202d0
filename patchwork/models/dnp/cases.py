"""A DNP's training cases: an image ``[C, *S]``, its label channels (the targets) and its affine, checked once
and built when used, so only the cases in use are in memory.


Labels are integer maps ``[*S]`` (0 background); with one label the foreground is ``label > 0``, with
``categorial_label`` channel ``i`` is ``label == categorial_label[i]``, with ``num_labels = L > 1`` and no
``categorial_label`` the values ``1..L``. Or they are label channels ``[L, *S]`` of 0/1 (the paper's label
array with one channel per label, ``num_labels = L``), which may overlap (sigmoid heads; a softmax head,
``categorical``, needs disjoint labels). NaN or negative values are don't-care voxels (``dontcare``; a
voxel that is don't-care in one channel gives no loss in any).
2D images are ``[C, X, Y]`` with a 3×3 affine (a 4×4 NIfTI affine is reduced to its x/y rows and columns).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from patchwork.errors import PatchworkError
from patchwork.models.dnp.grid import reduce_affine
from patchwork.models.dnp.settings import CropConfig, DNPParams
from patchwork.ondemand import position

Tensor = torch.Tensor


@dataclass(frozen=True)
class Case:
    """One training image: ``image`` [C, *S] float32, ``targets`` [L, *S] (NaN = don't care), ``affine``."""

    image: Tensor
    targets: Tensor
    affine: Tensor


def channel_targets(values: Tensor, care: Tensor, crop: CropConfig) -> Tensor:
    """Label channels ``[L, *S]`` given as such (0/1, NaN where not ``care``), checked against ``crop``:
    ``L`` labels, no ``categorial_label`` (that maps one integer map), no overlap for a softmax head."""
    count = values.shape[0]
    if crop.categorial_label is not None:
        raise PatchworkError(f"categorial_label picks values of one label map, got {count} label channels")
    if count != crop.label_count:
        raise PatchworkError(f"labels have {count} channels, the model {crop.label_count} (set num_labels)")
    if bool(((values[care] != 0) & (values[care] != 1)).any()):
        raise PatchworkError("label channels must hold 0 or 1 (NaN or -1 for don't care)")
    if crop.categorical and bool(((values == 1) & care).sum(dim=0).gt(1).any()):
        raise PatchworkError(
            "categorical (softmax) labels must not overlap; overlapping ones need sigmoid heads"
        )
    return torch.where(care, values, float("nan")).float()


def label_targets(label: np.ndarray, crop: CropConfig, dontcare: bool) -> Tensor:
    """Label channels ``[L, *S]`` (NaN = don't care) of an integer label map ``[*S]`` or of label channels
    ``[L, *S]`` (see the module docstring)."""
    values = torch.as_tensor(np.asarray(label, dtype=np.float64))
    care = torch.isfinite(values) & (values >= 0)
    if not dontcare and not bool(care.all()):
        raise PatchworkError("labels contain NaN or negative values but dontcare is off")
    if values.ndim == crop.ndim + 1:
        return channel_targets(values, care, crop)
    if bool((values[care] != values[care].round()).any()):
        raise PatchworkError("labels must be integers (NaN or -1 for don't care)")
    count = crop.label_count
    picks = crop.categorial_label or (tuple(range(1, count + 1)) if count > 1 else None)
    channels = (values > 0)[None] if picks is None else torch.stack([values == v for v in picks])
    channels = channels.float()
    channels[:, ~care] = float("nan")
    return channels


def make_case(
    image: np.ndarray, label: np.ndarray, affine: np.ndarray, crop: CropConfig, dontcare: bool
) -> Case:
    """The :class:`Case` of one image (read-only arrays, e.g. memory-mapped ones, are copied; others are
    shared)."""
    targets = label_targets(label, crop, dontcare)
    matrix = reduce_affine(torch.as_tensor(np.asarray(affine)), crop.ndim)
    data = np.ascontiguousarray(image, dtype=np.float32)
    return Case(torch.from_numpy(data if data.flags.writeable else data.copy()), targets, matrix)


class CaseList(Sequence[Case]):
    """Checked cases (:func:`check_cases`), each built when indexed from its image, label map and affine
    (lists of arrays or lazily read sequences, :class:`patchwork.training.cases.LazyCases`), so only the
    cases in use are in memory. Pickles as its sources: a worker process builds its own."""

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        affines: Sequence[np.ndarray],
        crop: CropConfig,
        dontcare: bool,
    ) -> None:
        self.images, self.labels, self.affines = images, labels, affines
        self.crop, self.dontcare = crop, dontcare

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Case:  # type: ignore[override]
        at = position(index, len(self))
        return make_case(self.images[at], self.labels[at], self.affines[at], self.crop, self.dontcare)


def check_cases(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    affines: Sequence[np.ndarray],
    params: DNPParams,
    what: str,
) -> CaseList:
    """Validate images ``[C, *S]`` (``ndim`` spatial axes), label maps ``[*S]`` (or label channels
    ``[L, *S]``) and affines, one case at a time; return the cases, built when used (:class:`CaseList`)."""
    ndim = params.crop.ndim
    if not images or not (len(images) == len(labels) == len(affines)):
        raise PatchworkError(f"{what} set: need as many images, label maps and affines (at least one)")
    channels = images[0].shape[0]
    for i, (image, label, affine) in enumerate(zip(images, labels, affines, strict=True)):
        name = f"{what} case {i}"
        if image.ndim != ndim + 1 or image.shape[0] != channels:
            raise PatchworkError(
                f"{name}: image shape {list(image.shape)}, expected [C, {ndim} spatial axes]"
            )
        if label.ndim not in (ndim, ndim + 1) or tuple(label.shape[-ndim:]) != tuple(image.shape[1:]):
            raise PatchworkError(
                f"{name}: label shape {list(label.shape)} differs from image {list(image.shape[1:])}"
            )
        if not np.isfinite(image).all():
            raise PatchworkError(f"{name}: image contains NaN or infinite values")
        try:  # the checks of make_case, without copying the image
            label_targets(label, params.crop, params.train.dontcare)
            reduce_affine(torch.as_tensor(np.asarray(affine)), ndim)
        except PatchworkError as err:
            raise PatchworkError(f"{name}: {err}") from None
    return CaseList(images, labels, affines, params.crop, params.train.dontcare)

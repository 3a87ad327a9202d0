"""nnU-Net style preprocessing: crop to the non-zero box, normalise, resample to a target spacing.

Every step keeps the image in its own orientation (nothing is reoriented, as in nnU-Net) and is
recorded, so that a prediction made on the preprocessed grid maps back exactly onto the original
grid with :func:`to_original`.

Geometry. A NIfTI affine ``A`` maps a voxel index ``v`` to RAS world coordinates (mm); ITK maps it
to LPS as ``origin + D @ diag(spacing) @ v``. The ITK geometry is therefore ``diag(-1, -1, 1) @ A``:
spacing = the column norms of ``A[:3, :3]``, direction = its columns divided by the spacing,
origin = the translation with x and y negated. Oblique and flipped affines are handled by the same
formula. Resampling to spacing ``t`` from spacing ``s`` with ``n`` voxels per axis gives
``m = max(1, round(n * s / t))`` voxels whose grid is centred on the old one: new voxel ``i`` lies
at old continuous index ``(n - 1) / 2 + (i - (m - 1) / 2) * t / s``, so the physical extent is
kept to within one target voxel and the spacing of the result is exactly ``t``.

Example::

    settings = PreprocessSettings(target_spacing=(1.0, 1.0, 1.0))
    record = preprocess_subject(subject, Path("results/preprocessed/sub-01"), settings)
    image, label, record = load_preprocessed(Path("results/preprocessed"), "sub-01")
    image, label, record = open_preprocessed(Path("results/preprocessed"), "sub-01")  # memory-mapped
    prob_original, affine = to_original(prob, record, interpolation="linear")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk

from patchwork.config import NORMALIZATIONS, PreprocessSettings
from patchwork.data.cohort import Subject
from patchwork.data.itk import itk_geometry, to_sitk, voxel_spacing
from patchwork.errors import PatchworkError
from patchwork.io import atomic_path, read_image, read_json, read_volume, save_image, write_json

RECORD = "record.json"
# Uncompressed copies of a labelled subject's preprocessed arrays, which training memory-maps.
ARRAYS = {"image": "image.npy", "label": "seg.npy"}
INTERPOLATORS = {
    "nearest": sitk.sitkNearestNeighbor,
    "linear": sitk.sitkLinear,
    "bspline": sitk.sitkBSpline,
}


def _resample(
    array: np.ndarray,
    affine: np.ndarray,
    target_affine: np.ndarray,
    target_shape: Sequence[int],
    interpolation: str,
) -> np.ndarray:
    """Resample a 3D array from its voxel grid onto another grid covering the same field of view.

    Target voxels that fall just outside the source grid (at most half a voxel, from rounding the
    shape) take the nearest source value instead of a fill value. Identical grids are copied, so
    a resampling that changes nothing is exact. Nearest neighbour keeps the dtype; the other
    interpolations work on and return float32 (ITK would otherwise round to an integer input type).
    """
    target_shape = tuple(int(n) for n in target_shape)
    if array.shape == target_shape and np.allclose(affine, target_affine, rtol=0.0, atol=1e-9):
        return array.copy()
    source = to_sitk(array if interpolation == "nearest" else array.astype(np.float32), affine)
    origin, spacing, direction = itk_geometry(target_affine)
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize(list(target_shape))
    resampler.SetOutputOrigin(origin)
    resampler.SetOutputSpacing(spacing)
    resampler.SetOutputDirection(direction)
    resampler.SetInterpolator(INTERPOLATORS[interpolation])
    resampler.SetUseNearestNeighborExtrapolator(True)
    resampler.SetNumberOfThreads(1)  # the rule's one thread (results are the same at any thread count)
    result = sitk.GetArrayFromImage(resampler.Execute(source)).transpose(2, 1, 0)
    return result.astype(array.dtype) if interpolation == "nearest" else result


def target_grid(
    shape: Sequence[int], affine: np.ndarray, target_spacing: Sequence[float]
) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape and affine of the grid with spacing ``target_spacing`` centred on the given grid."""
    shape_arr = np.asarray(shape, dtype=np.float64)
    spacing = voxel_spacing(affine)
    target = np.asarray(target_spacing, dtype=np.float64)
    new_shape = np.maximum(1, np.round(shape_arr * spacing / target)).astype(int)
    scale = target / spacing
    index_map = np.eye(4)
    index_map[:3, :3] = np.diag(scale)
    index_map[:3, 3] = (shape_arr - 1) / 2 - (new_shape - 1) / 2 * scale
    return tuple(int(n) for n in new_shape), np.asarray(affine, dtype=np.float64) @ index_map


def nonzero_box(images: Sequence[np.ndarray]) -> list[list[int]]:
    """``[[start, stop], ...]`` per axis of the box holding every non-zero voxel of any channel.

    An image without non-zero voxels keeps its full extent.
    """
    mask = np.any(np.stack([np.asarray(im) != 0 for im in images]), axis=0)
    if not mask.any():
        return [[0, n] for n in mask.shape]
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append([int(hits[0]), int(hits[-1]) + 1])
    return box


def _channel_stats(channel: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """Mean and standard deviation of ``channel`` inside ``mask`` (std 1 where it would be 0)."""
    values = channel[mask].astype(np.float64)
    if values.size == 0:
        return 0.0, 1.0
    std = float(values.std())
    return float(values.mean()), std if std > 0 else 1.0


def _check_target_spacing(target_spacing: Sequence[float]) -> list[float]:
    """Return ``target_spacing`` as three positive floats, or raise a one-line error."""
    values = [float(v) for v in target_spacing]
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise PatchworkError(
            f"target_spacing must be three positive numbers in mm, got {list(target_spacing)}"
        )
    return values


def preprocess_image(
    images: Sequence[np.ndarray],
    affine: np.ndarray,
    target_spacing: Sequence[float] | None = None,
    normalization: str = "zscore_nonzero",
    crop_nonzero: bool = True,
    label: np.ndarray | None = None,
    interpolation: str = "linear",
    symmetry: bool = False,
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Preprocess the channels (and label) of one image held in memory.

    Steps, in nnU-Net's order: crop every channel and the label to the non-zero box of the union
    of channels (``crop_nonzero``); normalise each channel with the mean and standard deviation of
    the cropped original inside its mask: the non-zero voxels of any channel for
    ``zscore_nonzero`` (voxels outside the mask are set to 0, as for MRI in nnU-Net), the whole
    volume for ``zscore``; ``none`` leaves intensities unchanged; then resample to
    ``target_spacing`` (None keeps the spacing) with ``interpolation`` for images and nearest
    neighbour for the label and the mask, and set voxels outside the resampled mask to 0.
    Normalising before resampling means voxels at the mask border blend with 0, the mean, rather
    than with a raw background far from it. ``symmetry`` then appends one channel per image channel: the
    channel minus its mirror image across the mid-sagittal plane (:mod:`patchwork.data.symmetry`).

    Returns the image ``[C, X, Y, Z]`` float32, the label ``[X, Y, Z]`` uint8 (or None) and the
    JSON-ready record that :func:`to_original` needs to map results back.
    """
    if normalization not in NORMALIZATIONS:
        raise PatchworkError(f"unknown normalization {normalization!r}; choose one of {list(NORMALIZATIONS)}")
    if interpolation not in INTERPOLATORS:
        raise PatchworkError(f"unknown interpolation {interpolation!r}; choose one of {list(INTERPOLATORS)}")
    affine = np.asarray(affine, dtype=np.float64)
    original_shape = tuple(int(n) for n in images[0].shape)
    box = nonzero_box(images) if crop_nonzero else [[0, n] for n in original_shape]
    crop = tuple(slice(lo, hi) for lo, hi in box)
    cropped_affine = affine.copy()
    cropped_affine[:3, 3] = affine[:3, :3] @ [lo for lo, _ in box] + affine[:3, 3]
    cropped = [np.asarray(im, dtype=np.float32)[crop] for im in images]
    cropped_shape = cropped[0].shape

    if target_spacing is None:
        spacing = voxel_spacing(affine).tolist()
        shape, new_affine = cropped_shape, cropped_affine
    else:
        spacing = _check_target_spacing(target_spacing)
        shape, new_affine = target_grid(cropped_shape, cropped_affine, spacing)

    nonzero = np.any(np.stack([c != 0 for c in cropped]), axis=0)
    mask = nonzero if normalization == "zscore_nonzero" else np.ones(cropped_shape, dtype=bool)
    target_mask = _resample(mask, cropped_affine, new_affine, shape, "nearest")
    channels, means, stds = [], [], []
    for channel in cropped:
        mean, std = _channel_stats(channel, mask) if normalization != "none" else (0.0, 1.0)
        normalised = np.where(mask, (channel - np.float32(mean)) / np.float32(std), np.float32(0))
        resampled = _resample(normalised, cropped_affine, new_affine, shape, interpolation)
        channels.append(np.where(target_mask, resampled, np.float32(0)).astype(np.float32))
        means.append(mean)
        stds.append(std)

    out_label = None
    if label is not None:
        out_label = _resample(
            np.asarray(label, dtype=np.uint8)[crop], cropped_affine, new_affine, shape, "nearest"
        )

    extra: dict[str, Any] = {}
    if symmetry:
        from patchwork.data.symmetry import symmetry_channels

        differences, extra["symmetry"] = symmetry_channels(channels, new_affine)
        channels += differences

    record = {
        "original_shape": list(original_shape),
        "original_affine": affine.tolist(),
        "original_spacing": voxel_spacing(affine).tolist(),
        "crop_box": box,
        "cropped_shape": list(cropped_shape),
        "cropped_affine": cropped_affine.tolist(),
        "target_spacing": [float(s) for s in spacing],
        "shape": list(shape),
        "affine": np.asarray(new_affine).tolist(),
        "interpolation": interpolation,
        "normalization": {"scheme": normalization, "mean": means, "std": stds},
        **extra,
    }
    return np.stack(channels), out_label, record


def _as_label(data: np.ndarray, path: Path) -> np.ndarray:
    """Return a label volume as uint8, or raise naming ``path`` when it holds non-label values.

    Ingest already rejects every value outside the declared labels (whole numbers 0 to 255); this
    guard only keeps a hand-edited ``subjects.tsv`` from wrapping a value silently into uint8.
    """
    if not np.all(np.isfinite(data)) or np.any(data != np.round(data)) or data.min() < 0 or data.max() > 255:
        raise PatchworkError(f"{path}: label must hold whole numbers from 0 to 255")
    return data.astype(np.uint8)


def _read_subject(subject: Subject) -> tuple[list[np.ndarray], np.ndarray, np.ndarray | None]:
    """Read the channels and label of ``subject`` on the first channel's grid.

    A 4D file holding one volume is read as 3D (``read_volume``). Ingest has checked that the files
    share one grid, within ``ingest.affine_tolerance`` (the one place that tolerance is applied);
    only the shapes are compared again here, since arrays of other shapes cannot be stacked.
    """
    if not subject.images:
        raise PatchworkError(f"subject {subject.subject}: no image channels")
    images, affine = [], None
    paths = [*subject.images, *([subject.label] if subject.label is not None else [])]
    for path in paths:
        data, this_affine = read_volume(path)
        if affine is None:
            affine, shape = this_affine, data.shape
        elif data.shape != shape:
            raise PatchworkError(
                f"{path}: grid (shape {data.shape}) differs from {subject.images[0]} (shape {shape})"
            )
        images.append(data)
    label = _as_label(images.pop(), Path(subject.label)) if subject.label is not None else None
    return images, affine, label


def preprocess_subject(
    subject: Subject, out_dir: Path, settings: PreprocessSettings, interpolation: str = "linear"
) -> dict:
    """Preprocess one subject (see :func:`preprocess_image`) into its own folder ``out_dir``.

    ``settings.target_spacing`` None keeps the image's spacing (the preprocess stage fills in the cohort's
    median first). Writes ``image_0000.nii.gz`` ... (float32, one per channel), ``seg.nii.gz`` (uint8, only
    when the subject has a label) and, last, ``record.json``: the record, which also names the written
    files and the sources. A labelled subject (one training can use) also gets uncompressed ``image.npy``
    (``[C, X, Y, Z]`` float32) and ``seg.npy`` (uint8), named in the record's ``arrays``, so that training
    reads them memory-mapped (:func:`open_preprocessed`) instead of holding the cohort in memory; they
    cost about 5 bytes a voxel of disk. Returns the record.
    """
    out_dir = Path(out_dir)
    images, affine, label = _read_subject(subject)
    image, out_label, record = preprocess_image(
        images,
        affine,
        settings.target_spacing,
        settings.normalization,
        settings.crop_nonzero,
        label,
        interpolation,
        settings.symmetry,
    )
    new_affine = np.asarray(record["affine"])
    channel_files = [f"image_{c:04d}.nii.gz" for c in range(len(image))]
    for name, channel in zip(channel_files, image, strict=True):
        save_image(channel, new_affine, out_dir / name, np.float32)
    label_file = None
    if out_label is not None:
        label_file = "seg.nii.gz"
        save_image(out_label, new_affine, out_dir / label_file, np.uint8)
        _save_array(out_dir / ARRAYS["image"], image)
        _save_array(out_dir / ARRAYS["label"], out_label)
    record = {
        "subject": subject.subject,
        "channel_files": channel_files,
        "label_file": label_file,
        "source_images": [str(p) for p in subject.images],
        "source_label": str(subject.label) if subject.label is not None else None,
        "arrays": dict(ARRAYS) if out_label is not None else None,
        **record,
    }
    write_json(out_dir / RECORD, record)
    return record


def load_preprocessed(root: Path, subject: str) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Read what :func:`preprocess_subject` wrote into ``root/subject/``: image ``[C, X, Y, Z]`` float32,
    label ``[X, Y, Z]`` uint8 or None, and the record."""
    folder = Path(root) / subject
    record = read_json(folder / RECORD)
    image = np.stack([read_image(folder / name)[0] for name in record["channel_files"]])
    label = None
    if record["label_file"] is not None:
        label = read_image(folder / record["label_file"], dtype=np.uint8)[0]
    return image, label, record


def _save_array(path: Path, array: np.ndarray) -> None:
    """Write ``array`` as an uncompressed ``.npy`` file atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.ascontiguousarray(array))


def open_preprocessed(root: Path, subject: str) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """What :func:`load_preprocessed` gives, but the image and label memory-mapped read-only from the record's
    ``arrays``: nothing is read until it is used, and pages are released with the arrays. A folder written
    before those files existed (or an unlabelled subject) is read from its NIfTI files instead, which is
    correct but decompresses the whole image on every call."""
    folder = Path(root) / subject
    record = read_json(folder / RECORD)
    arrays = record.get("arrays")
    if not arrays:
        return load_preprocessed(root, subject)
    image = np.load(folder / arrays["image"], mmap_mode="r")
    label = np.load(folder / arrays["label"], mmap_mode="r")
    return image, label, record


def to_original(
    array: np.ndarray, record: dict, interpolation: str = "linear", fill: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Map an array on the preprocessed grid back onto the original image grid.

    ``array`` is ``[X, Y, Z]`` or ``[K, X, Y, Z]`` (e.g. class probabilities) on the grid of
    ``record``. Each volume is resampled onto the cropped sub-grid (``nearest`` for label maps,
    which keeps the dtype; ``linear``/``bspline`` return float32) and pasted into the original
    shape, filled with ``fill`` outside the crop box. Returns the array and the original affine.
    """
    if interpolation not in INTERPOLATORS:
        raise PatchworkError(f"unknown interpolation {interpolation!r}; choose one of {list(INTERPOLATORS)}")
    array = np.asarray(array)
    shape = tuple(record["shape"])
    if array.shape[-3:] != shape or array.ndim not in (3, 4):
        raise ValueError(f"array of shape {array.shape} does not lie on the preprocessed grid {shape}")
    original_shape = tuple(record["original_shape"])
    volumes = array.reshape(-1, *shape)
    dtype = array.dtype if interpolation == "nearest" else np.float32
    out = np.full((len(volumes), *original_shape), fill, dtype=dtype)
    crop = tuple(slice(lo, hi) for lo, hi in record["crop_box"])
    affine = np.asarray(record["affine"], dtype=np.float64)
    cropped_affine = np.asarray(record["cropped_affine"], dtype=np.float64)
    for volume, target in zip(volumes, out, strict=True):
        target[crop] = _resample(volume, affine, cropped_affine, record["cropped_shape"], interpolation)
    return out.reshape(*array.shape[:-3], *original_shape), np.asarray(record["original_affine"])

"""Per-file checks of a cohort: every image and label is opened once and its problems collected.

Problems are returned as lines ``"{path}: {problem}"`` rather than raised, so that ingest can report
every problem of a dataset in one go. A subject's first channel is the reference grid: the other
channels and the label must have its shape and (within a tolerance) its affine.

What a file must be to pass: a NIfTI-1/2 file whose gzip stream (if any) is intact and no larger
than the ``max_bytes`` limit, of a real voxel type, holding one 3D volume (a 4D file with one
volume counts) of finite values, with positive voxel sizes in the header, a non-degenerate
affine, and, when both its qform and sform are set, the two agreeing (see :func:`geometry_problems`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from patchwork.data.cohort import Subject
from patchwork.errors import PatchworkError
from patchwork.io import as_volume, load_nifti

log = logging.getLogger(__name__)

SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class Volume:
    """What ingest keeps of a file once it has been checked: its grid, not its voxels."""

    path: Path
    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm: the norms of the affine's first three columns."""
        return tuple(float(x) for x in np.linalg.norm(self.affine[:3, :3], axis=0))


@dataclass(frozen=True)
class SubjectCheck:
    """The outcome of checking one subject: its reference grid and foreground size, or its problems."""

    grid: Volume | None
    foreground_voxels: int | None
    problems: list[str]


def check_id(subject: str, where: str) -> list[str]:
    """A problem line, prefixed by ``where``, when ``subject`` is not safe as a file name (``SAFE_ID``)."""
    if SAFE_ID.fullmatch(subject):
        return []
    return [
        f"{where}: subject id {subject!r} is not safe as a file name (use letters, digits, '.', '_', '-')"
    ]


def open_volume(
    path: Path, problems: list[str], tolerance: float, max_bytes: int | None
) -> tuple[Volume, np.ndarray] | None:
    """Read and check one file (see the module docstring); append problems and return None on failure.

    ``tolerance`` bounds the qform/sform disagreement (:func:`geometry_problems`), ``max_bytes`` what
    is decompressed (:func:`patchwork.io.load_nifti`).
    """
    try:
        img = load_nifti(path, max_bytes)
        data = as_volume(np.asarray(img.get_fdata(dtype=np.float32)), path)
    except PatchworkError as err:
        problems.extend(err.problems)
        return None
    geometry = geometry_problems(path, img, tolerance)
    if geometry:
        problems.extend(geometry)
        return None
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        problems.append(f"{path}: {bad} voxels are NaN or infinite")
        return None
    volume = Volume(path=path, shape=tuple(int(n) for n in data.shape), affine=np.asarray(img.affine, float))
    return volume, data


QFORM_PRECISION = 1e-3  # mm: how closely a float32 quaternion qform can match an oblique sform


def geometry_problems(path: Path, img: nib.Nifti1Image, tolerance: float) -> list[str]:
    """Problem lines (at most one) about the geometry in the header of ``img``.

    * Voxel sizes (``pixdim[1:4]``) must be positive and finite as stored: nibabel silently reads a
      0 as 1 and a negative size as its absolute value, while ITK-based tools use the stored value
      (SimpleITK then fails on a zero spacing), so the two would disagree about the grid.
    * The affine nibabel uses must be finite and invertible (no zero-length or parallel axes).
    * When both the qform and the sform are set (codes > 0) they must agree within ``tolerance``
      (never tighter than ``QFORM_PRECISION``): nibabel and patchwork use the sform, some ITK
      versions the qform, so disagreeing forms make the result's position depend on the viewer.
      Such a file is rejected, not warned about: the fix (rewrite one form from the other, e.g.
      ``fslorient -copysform2qform``) is the user's call, and a warning is easily missed.
    """
    with nib.openers.ImageOpener(path) as stream:
        stored = type(img.header).from_fileobj(stream, check=False)
    pixdim = [float(x) for x in stored["pixdim"][1:4]]
    if not all(np.isfinite(x) and x > 0 for x in pixdim):
        sizes = ", ".join(f"{x:g}" for x in pixdim)
        return [f"{path}: voxel size ({sizes}) in the header (pixdim) must be positive"]
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        return [f"{path}: the affine holds NaN or infinite values"]
    lengths = np.linalg.norm(affine[:3, :3], axis=0)
    if np.any(lengths == 0) or abs(np.linalg.det(affine[:3, :3])) <= 1e-6 * np.prod(lengths):
        shown = ", ".join(f"{x:g}" for x in lengths)
        return [f"{path}: the affine is degenerate (voxel axes of length {shown} mm, or parallel)"]
    header = img.header
    if int(header["qform_code"]) > 0 and int(header["sform_code"]) > 0:
        limit = max(tolerance, QFORM_PRECISION)
        difference = float(np.max(np.abs(header.get_qform() - header.get_sform())))
        if difference > limit:
            return [
                f"{path}: qform and sform disagree by up to {difference:.4g} (tolerance {limit:g}); "
                "tools differ in which one they use: rewrite the file with one of them"
            ]
    return []


def same_grid(reference: Volume, other: Volume, tolerance: float) -> list[str]:
    """Problem lines when ``other`` does not share ``reference``'s shape and affine (max abs difference)."""
    if other.shape != reference.shape:
        return [f"{other.path}: shape {other.shape} differs from {reference.path.name} {reference.shape}"]
    difference = float(np.max(np.abs(other.affine - reference.affine)))
    if difference > tolerance:
        return [
            f"{other.path}: affine differs from that of {reference.path.name} by up to {difference:.4g} "
            f"(tolerance {tolerance:g})"
        ]
    return []


def label_problems(path: Path, data: np.ndarray, labels: dict[str, int]) -> list[str]:
    """A problem line naming the values of ``data`` that are not among the declared ``labels``."""
    unexpected = np.setdiff1d(np.unique(data), np.asarray(list(labels.values()), dtype=np.float32))
    if unexpected.size == 0:
        return []
    shown = ", ".join(f"{v:g}" for v in unexpected[:10]) + (" ..." if unexpected.size > 10 else "")
    declared = ", ".join(f"{name}={value}" for name, value in labels.items())
    return [f"{path}: label values {shown} are not among the declared labels ({declared})"]


def check_subject(
    subject: Subject, labels: dict[str, int], tolerance: float, max_bytes: int | None = None
) -> SubjectCheck:
    """Open every file of ``subject`` once and collect its problems (``open_volume`` for the arguments).

    Returns the first channel's grid and, for a labelled subject, the number of non-background voxels.
    An all-background label is allowed (healthy subjects exist) but logged as a warning.
    """
    problems: list[str] = []
    opened = [open_volume(path, problems, tolerance, max_bytes) for path in subject.images]
    volumes = [item[0] for item in opened if item is not None]
    reference = volumes[0] if opened[0] is not None else None
    if reference is not None:
        for volume in volumes[1:]:
            problems.extend(same_grid(reference, volume, tolerance))
    foreground = None
    if subject.label is not None:
        label = open_volume(subject.label, problems, tolerance, max_bytes)
        if label is not None:
            volume, data = label
            if reference is not None:
                problems.extend(same_grid(reference, volume, tolerance))
            problems.extend(label_problems(subject.label, data, labels))
            foreground = int(np.count_nonzero(data != labels.get("background", 0)))
            if foreground == 0 and not problems:
                log.warning("%s: label is all background (subject %s)", subject.label, subject.subject)
    return SubjectCheck(grid=reference, foreground_voxels=foreground, problems=problems)

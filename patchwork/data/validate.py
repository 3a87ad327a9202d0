"""Per-file checks of a cohort: every image and label is opened once and its problems collected.

Problems are returned as lines ``"{path}: {problem}"`` rather than raised, so that ingest can report
every problem of a dataset in one go. A subject's first channel is the reference grid: the other
channels and the label must have its shape and (within a tolerance) its affine.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from patchwork.data.cohort import Subject
from patchwork.errors import PatchworkError
from patchwork.io import load_nifti

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


def open_volume(path: Path, problems: list[str]) -> tuple[Volume, np.ndarray] | None:
    """Read a 3D NIfTI and check its values are finite; append problems and return None on failure.

    A 4D file whose 4th dimension is 1 counts as 3D (some converters write images that way).
    """
    try:
        img = load_nifti(path)
    except PatchworkError as err:
        problems.extend(err.problems)
        return None
    data = np.asarray(img.get_fdata(dtype=np.float32))
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        problems.append(f"{path}: image has shape {tuple(data.shape)}; expected a 3D image")
        return None
    bad = int(np.count_nonzero(~np.isfinite(data)))
    if bad:
        problems.append(f"{path}: {bad} voxels are NaN or infinite")
        return None
    volume = Volume(path=path, shape=tuple(int(n) for n in data.shape), affine=np.asarray(img.affine, float))
    return volume, data


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


def check_subject(subject: Subject, labels: dict[str, int], tolerance: float) -> SubjectCheck:
    """Open every file of ``subject`` once and collect its problems.

    Returns the first channel's grid and, for a labelled subject, the number of non-background voxels.
    An all-background label is allowed (healthy subjects exist) but logged as a warning.
    """
    problems: list[str] = []
    opened = [open_volume(path, problems) for path in subject.images]
    volumes = [item[0] for item in opened if item is not None]
    reference = volumes[0] if opened[0] is not None else None
    if reference is not None:
        for volume in volumes[1:]:
            problems.extend(same_grid(reference, volume, tolerance))
    foreground = None
    if subject.label is not None:
        label = open_volume(subject.label, problems)
        if label is not None:
            volume, data = label
            if reference is not None:
                problems.extend(same_grid(reference, volume, tolerance))
            problems.extend(label_problems(subject.label, data, labels))
            foreground = int(np.count_nonzero(data != labels.get("background", 0)))
            if foreground == 0 and not problems:
                log.warning("%s: label is all background (subject %s)", subject.label, subject.subject)
    return SubjectCheck(grid=reference, foreground_voxels=foreground, problems=problems)

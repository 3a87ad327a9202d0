"""The cohort as the planner sees it, and nnU-Net's rule for the target spacing.

:class:`Cohort` reads the fingerprint that ingest writes (``patchwork.data.ingest.fingerprint_of``): the
spacing (mm) and shape of every subject, the training subjects (those with a ``foreground_voxels`` entry;
all subjects if it has none), channels and labels. A cohort is 2-D when its images have two axes, or
when the median shape of the training subjects has a singleton axis (one slice per image); the plans
then cover the other two axes.

Target spacing (nnU-Net, "3d_fullres"): the median spacing of the training subjects, axis by axis.
Exception for anisotropic cohorts: when the coarsest axis of the median spacing is more than 3x the
largest of the other axes' spacings, *and* that axis has more than 3x fewer voxels than the smallest
other axis (thick slices, few of them), the median would resample the many fine-slice images of the
cohort coarser than they are. nnU-Net then takes the 10th percentile of that axis's spacings instead
(not coarser than the other axes), so most images keep their slice resolution. Example::

    cohort = Cohort.from_fingerprint(fingerprint)
    spacing = target_spacing(cohort)          # e.g. [0.8, 0.8, 4.0] for a 0.8x0.8x5 mm cohort
    shape = resampled_median_shape(cohort, spacing)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from patchwork.errors import PatchworkError

ANISOTROPY_RATIO = 3.0  # nnU-Net's anisotropy threshold (spacing ratio and voxel-count ratio)
ANISOTROPIC_PERCENTILE = 10.0  # nnU-Net: percentile of the coarse axis's spacings used as its target


@dataclass(frozen=True)
class Cohort:
    """Spacings and shapes of the training subjects (``[n, ndim]`` arrays) and what planning needs."""

    spacings: np.ndarray
    shapes: np.ndarray
    channels: int
    labels: int
    axes: tuple[int, ...]  # the image axes the plans cover (all, or the two non-singleton ones)

    @property
    def n_train(self) -> int:
        """Number of training subjects."""
        return len(self.spacings)

    @property
    def ndim(self) -> int:
        """Dimension of the plans: 2 or 3."""
        return len(self.axes)

    @classmethod
    def from_fingerprint(cls, fingerprint: Mapping[str, Any]) -> Cohort:
        """The training subjects of an ingest fingerprint; missing keys or ragged entries are errors."""
        missing = [k for k in ("spacings", "shapes", "channels", "labels") if k not in fingerprint]
        if missing:
            raise PatchworkError(f"fingerprint: missing key(s) {', '.join(missing)}")
        train = list(fingerprint.get("foreground_voxels") or fingerprint["spacings"])
        try:
            spacings = np.array([fingerprint["spacings"][s] for s in train], dtype=float)
            shapes = np.array([fingerprint["shapes"][s] for s in train], dtype=float)
        except (KeyError, ValueError) as err:
            raise PatchworkError(f"fingerprint: spacings/shapes of the training subjects: {err}") from None
        if (
            not train
            or spacings.ndim != 2
            or spacings.shape != shapes.shape
            or spacings.shape[1] not in (2, 3)
        ):
            raise PatchworkError("fingerprint: need 2-D or 3-D spacings and shapes of every training subject")
        if (spacings <= 0).any() or (shapes < 1).any():
            raise PatchworkError("fingerprint: spacings must be positive and shapes at least 1")
        median_shape = np.median(shapes, axis=0)
        axes = tuple(a for a in range(shapes.shape[1]) if median_shape[a] > 1)
        if len(axes) < 2:
            raise PatchworkError(f"fingerprint: median shape {median_shape.tolist()} has under two axes")
        return cls(spacings, shapes, len(fingerprint["channels"]), len(fingerprint["labels"]), axes)


def target_spacing(cohort: Cohort) -> list[float]:
    """nnU-Net's target spacing (mm) for every image axis (see the module docstring)."""
    target = np.median(cohort.spacings, axis=0)
    axes = list(cohort.axes)
    worst = axes[int(np.argmax(target[axes]))]
    others = [a for a in axes if a != worst]
    size = np.median(cohort.shapes, axis=0)
    anisotropic_spacing = target[worst] > ANISOTROPY_RATIO * max(target[others])
    few_slices = size[worst] * ANISOTROPY_RATIO < min(size[others])
    if anisotropic_spacing and few_slices:
        low = float(np.percentile(cohort.spacings[:, worst], ANISOTROPIC_PERCENTILE))
        target[worst] = max(low, max(target[others]))
    return [round(float(x), 6) for x in target]


def resampled_median_shape(cohort: Cohort, spacing: Sequence[float]) -> list[float]:
    """Median over the training subjects of each image's shape once resampled to ``spacing``."""
    shapes = cohort.shapes * cohort.spacings / np.asarray(spacing, dtype=float)
    return [round(float(x), 1) for x in np.median(shapes, axis=0)]

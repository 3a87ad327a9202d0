"""Distances between the surfaces of two binary masks, in mm, on the voxel grid.

Conventions (those of MONAI's ``compute_hausdorff_distance`` / ``compute_average_surface_distance``
/ ``compute_surface_dice`` with ``use_subvoxels=False``, and of DeepMind's ``surface-distance`` with
every surface element weighted one):

* The surface ∂M of a mask M is the set of its voxels that have a face neighbour outside M (M minus
  its 6-connected erosion); voxels on the image border count as surface.
* For p ∈ ∂P, d(p, ∂R) = min over r ∈ ∂R of ‖(p - r) ⊙ spacing‖₂, the Euclidean distance in mm
  between voxel centres; d(r, ∂P) likewise. These are the *directed* distances.
* Hausdorff at percentile q: HD_q = max(perc_q {d(p, ∂R)}, perc_q {d(r, ∂P)}) with numpy's linear
  interpolation; q = 100 is the classic Hausdorff distance, q = 95 is HD95.
* Average symmetric surface distance: ASSD = (Σ_p d(p, ∂R) + Σ_r d(r, ∂P)) / (|∂P| + |∂R|).
* Normalised surface Dice at tolerance τ mm:
  NSD_τ = (|{p : d(p, ∂R) ≤ τ}| + |{r : d(r, ∂P) ≤ τ}|) / (|∂P| + |∂R|).

The directed distances are nearest-neighbour queries in a k-d tree (``scipy.spatial.cKDTree``) built
on the other mask's surface voxel centres in mm: exact Euclidean distances, at a cost that follows the
number of surface voxels (S log S) rather than the volume between the masks. (A Euclidean distance
transform of the bounding box, as MONAI and ``surface-distance`` compute, costs the whole box when a false
positive lies far from the lesion.) The surfaces themselves are found in the bounding box of P ∪ R:
outside it both masks are empty, so the box's border is treated like the image's. Nothing is resampled.
Both masks must be non-empty; :mod:`patchwork.evaluation.metrics` handles empty ones.

Example::

    d = SurfaceDistances.compute(pred, ref, spacing=(1.0, 1.0, 3.0))
    d.hausdorff(95.0), d.average_symmetric(), d.surface_dice(2.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree


def bounding_box(mask: np.ndarray, margin: int = 0) -> tuple[slice, ...] | None:
    """Slices of the smallest box holding every non-zero voxel of ``mask``, grown by ``margin``
    voxels on each side (clipped to the array); None for an empty mask.

    Computed from one projection per axis (``np.any`` over the other axes), which is cheaper than
    listing the non-zero voxels of a large mask.
    """
    mask = np.asarray(mask, dtype=bool)
    box = []
    for axis, n in enumerate(mask.shape):
        others = tuple(a for a in range(mask.ndim) if a != axis)
        hits = np.flatnonzero(np.any(mask, axis=others))
        if hits.size == 0:
            return None
        box.append(slice(max(int(hits[0]) - margin, 0), min(int(hits[-1]) + 1 + margin, n)))
    return tuple(box)


def surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of the boolean ``mask`` with a face neighbour outside it (outside the array counts
    as outside): ``mask`` minus its 6-connected erosion, from 2·ndim shifted views of the padded mask."""
    mask = np.asarray(mask, dtype=bool)
    padded = np.pad(mask, 1)
    interior = mask.copy()
    for axis in range(mask.ndim):
        for start in (0, 2):
            view = [slice(1, n + 1) for n in mask.shape]
            view[axis] = slice(start, start + mask.shape[axis])
            interior &= padded[tuple(view)]
    return mask & ~interior


@dataclass(frozen=True)
class SurfaceDistances:
    """Directed surface distances (mm) between two non-empty masks.

    ``pred_to_ref[i]`` is d(p_i, ∂R) for the i-th surface voxel p_i of the prediction (C order),
    ``ref_to_pred`` the other way round. The scores below follow the module docstring.
    """

    pred_to_ref: np.ndarray
    ref_to_pred: np.ndarray

    @classmethod
    def compute(cls, pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> SurfaceDistances:
        """Distances between the surfaces of the boolean masks ``pred`` and ``ref`` (one shape,
        both non-empty), with voxel ``spacing`` in mm along each array axis."""
        if not (pred.any() and ref.any()):
            raise ValueError("surface distances need two non-empty masks")
        box = bounding_box(pred | ref)
        scale = np.asarray(spacing, dtype=np.float64)
        pred_points = np.argwhere(surface(pred[box])) * scale
        ref_points = np.argwhere(surface(ref[box])) * scale
        return cls(
            pred_to_ref=cKDTree(ref_points).query(pred_points)[0],
            ref_to_pred=cKDTree(pred_points).query(ref_points)[0],
        )

    def hausdorff(self, percentile: float = 100.0) -> float:
        """Symmetric Hausdorff distance at ``percentile`` (100: maximum, 95: HD95)."""
        return float(
            max(np.percentile(self.pred_to_ref, percentile), np.percentile(self.ref_to_pred, percentile))
        )

    def average_symmetric(self) -> float:
        """Average symmetric surface distance: the mean over the surface voxels of both masks."""
        total = self.pred_to_ref.sum() + self.ref_to_pred.sum()
        return float(total / (self.pred_to_ref.size + self.ref_to_pred.size))

    def surface_dice(self, tolerance_mm: float) -> float:
        """Normalised surface Dice: share of both surfaces within ``tolerance_mm`` of the other."""
        close = np.count_nonzero(self.pred_to_ref <= tolerance_mm) + np.count_nonzero(
            self.ref_to_pred <= tolerance_mm
        )
        return close / (self.pred_to_ref.size + self.ref_to_pred.size)

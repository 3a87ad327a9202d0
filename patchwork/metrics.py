"""Segmentation metrics per subject and label, in physical units, and their cohort summary.

For a predicted mask P and a reference mask R (one foreground label each):

* Dice = 2 |P ∩ R| / (|P| + |R|).
* Surface distances: the surface of a mask is its voxels with a face neighbour outside it (the mask
  minus its 6-connected erosion; voxels on the image border count as surface). For every surface
  voxel of P, d(p, ∂R) is the Euclidean distance in mm to the nearest surface voxel of R, and
  vice versa. Distances come from ``scipy.ndimage.distance_transform_edt`` with
  ``sampling`` = the voxel spacing, on a crop to the bounding box of P ∪ R plus one voxel (all
  surface voxels lie inside it, so the distances are exact), never by resampling.
* Hausdorff at percentile q: max(q-th percentile of d(P→R), q-th percentile of d(R→P)) — the
  symmetric form used by MONAI; q = 100 is the classic Hausdorff distance, q = 95 is HD95.
* Volumes in ml: voxel count times the product of the spacings (the column lengths of the affine,
  which for a non-sheared affine A is |det A|); lesion counts are the numbers of 26-connected
  components (the connectivity of :mod:`patchwork.ensemble`).

**Empty masks — one convention, used everywhere:**

* both P and R empty: Dice = 1, every distance = 0 (a perfect prediction of "no lesion");
* exactly one empty: Dice = 0, every distance = NaN (undefined; :func:`summarise` skips NaNs
  and its ``n`` counts only defined values).

:func:`evaluate_subject` writes the long table (``subject, model, label, metric, value``) that
:func:`summarise` reduces over subjects. New metrics plug into :func:`mask_metrics`: surface-based
ones take the :class:`SurfaceDistances` already computed there, lesion-wise ones the component labels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from patchwork.ensemble import check_same_grid, label_components
from patchwork.errors import PatchworkError
from patchwork.io import read_image

COLUMNS = ("subject", "model", "label", "metric", "value")
METRICS = (
    "dice",
    "hd95",
    "hausdorff",
    "volume_pred_ml",
    "volume_ref_ml",
    "lesion_count_pred",
    "lesion_count_ref",
)
SUMMARY_COLUMNS = ("model", "label", "metric", "n", "mean", "sd", "median", "q1", "q3")
DEFAULT_LABELS: Mapping[str, int] = {"lesion": 1}
EMPTY_MASK_CONVENTION = (
    "Both masks empty: Dice 1 and distances 0. Exactly one mask empty: Dice 0 and distances "
    "undefined (NaN, shown as n/a and left out of the cohort statistics)."
)


def spacing_from_affine(affine: np.ndarray) -> tuple[float, ...]:
    """Voxel spacing in mm: the lengths of the columns of the affine's 3x3 part."""
    return tuple(float(s) for s in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice overlap of two boolean masks; 1 when both are empty (see the module docstring)."""
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    total = int(pred.sum()) + int(ref.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(pred, ref).sum()) / total


def _surface(mask: np.ndarray) -> np.ndarray:
    """Mask voxels with a face neighbour outside the mask (outside the array counts as outside)."""
    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)


@dataclass(frozen=True)
class SurfaceDistances:
    """Directed surface distances (mm) between two non-empty masks.

    ``pred_to_ref[i]`` is the distance from the i-th surface voxel of the prediction to the nearest
    surface voxel of the reference; ``ref_to_pred`` the other way round.
    """

    pred_to_ref: np.ndarray
    ref_to_pred: np.ndarray

    @classmethod
    def compute(cls, pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> SurfaceDistances:
        """Distances between the surfaces of ``pred`` and ``ref`` (both non-empty, one shape)."""
        both = pred | ref
        lo = [max(int(idx.min()) - 1, 0) for idx in np.nonzero(both)]
        hi = [min(int(idx.max()) + 2, n) for idx, n in zip(np.nonzero(both), both.shape, strict=True)]
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        pred_surface, ref_surface = _surface(pred[box]), _surface(ref[box])
        to_ref = ndimage.distance_transform_edt(~ref_surface, sampling=spacing)
        to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=spacing)
        return cls(pred_to_ref=to_ref[pred_surface], ref_to_pred=to_pred[ref_surface])

    def hausdorff(self, percentile: float = 100.0) -> float:
        """Symmetric Hausdorff distance at ``percentile`` (100: maximum, 95: HD95)."""
        return float(
            max(np.percentile(self.pred_to_ref, percentile), np.percentile(self.ref_to_pred, percentile))
        )


def _check_pair(
    pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Return both masks as bool after checking that they share a shape and ``spacing`` fits it."""
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise PatchworkError(f"metrics: prediction shape {pred.shape} differs from reference {ref.shape}")
    if len(spacing) != ref.ndim:
        raise PatchworkError(f"metrics: spacing {tuple(spacing)} does not fit a {ref.ndim}-D mask")
    return pred, ref


def hausdorff(
    pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], percentile: float = 100.0
) -> float:
    """Hausdorff distance (mm) between the surfaces of two masks at ``percentile``.

    Empty masks follow the module convention: both empty → 0, exactly one empty → NaN.
    """
    pred, ref = _check_pair(pred, ref, spacing)
    has_pred, has_ref = bool(pred.any()), bool(ref.any())
    if not has_pred and not has_ref:
        return 0.0
    if not (has_pred and has_ref):
        return float("nan")
    return SurfaceDistances.compute(pred, ref, tuple(spacing)).hausdorff(percentile)


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> float:
    """95th-percentile Hausdorff distance (mm); see :func:`hausdorff`."""
    return hausdorff(pred, ref, spacing, percentile=95.0)


def mask_metrics(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one pair of boolean masks, surface distances computed once."""
    pred, ref = _check_pair(pred, ref, spacing)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    has_pred, has_ref = bool(pred.any()), bool(ref.any())
    if has_pred and has_ref:
        surfaces = SurfaceDistances.compute(pred, ref, tuple(spacing))
        distances = {"hd95": surfaces.hausdorff(95.0), "hausdorff": surfaces.hausdorff(100.0)}
    else:
        empty_value = 0.0 if not (has_pred or has_ref) else float("nan")
        distances = {"hd95": empty_value, "hausdorff": empty_value}
    return {
        "dice": dice(pred, ref),
        **distances,
        "volume_pred_ml": float(pred.sum()) * voxel_ml,
        "volume_ref_ml": float(ref.sum()) * voxel_ml,
        "lesion_count_pred": float(label_components(pred)[1]),
        "lesion_count_ref": float(label_components(ref)[1]),
    }


def _read_label_map(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an integer label image as ``(labels, affine)``; non-integer values are an error."""
    data, affine = read_image(path)
    if not np.all(np.isfinite(data)) or not np.array_equal(data, np.rint(data)):
        raise PatchworkError(f"{path}: expected a label map of integers (is it a probability map?)")
    return data.astype(np.int32), affine


def evaluate_subject(
    subject: str,
    reference: Path,
    predictions: Mapping[str, Path],
    labels: Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """Metrics of each model's segmentation of one subject against the reference, per label.

    Args:
        subject: subject id, copied into the ``subject`` column.
        reference: reference label map (NIfTI).
        predictions: model name → predicted label map; each must have the reference's shape and
            affine (the error names the odd file).
        labels: label name → label value of the foreground labels to score (default
            ``{"lesion": 1}``); the name goes into the ``label`` column.

    Returns:
        A long table with columns ``subject, model, label, metric, value``: one row per model, label
        and metric of :data:`METRICS`, in that order. Spacing and voxel volume come from the affine.
    """
    labels = dict(DEFAULT_LABELS if labels is None else labels)
    ref_data, ref_affine = _read_label_map(reference)
    spacing = spacing_from_affine(ref_affine)
    rows = []
    for model, path in predictions.items():
        pred_data, pred_affine = _read_label_map(path)
        check_same_grid(path, pred_data.shape, pred_affine, reference, ref_data.shape, ref_affine)
        for name, value in labels.items():
            scores = mask_metrics(pred_data == int(value), ref_data == int(value), spacing)
            rows.extend((subject, model, name, metric, scores[metric]) for metric in METRICS)
    return pd.DataFrame(rows, columns=list(COLUMNS))


def summarise(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per model, label and metric: n, mean, sd, median, q1, q3 of ``value`` over the rows.

    NaNs (undefined distances, see the empty-mask convention) are skipped and ``n`` counts the
    defined values only. ``sd`` is the sample standard deviation (NaN when n < 2). Models, labels
    and metrics keep their order of first appearance.
    """
    missing = [c for c in COLUMNS if c not in metrics.columns]
    if missing:
        raise PatchworkError(f"metrics table lacks the column(s) {', '.join(missing)}")
    values = pd.to_numeric(metrics["value"], errors="coerce")
    grouped = values.groupby([metrics["model"], metrics["label"], metrics["metric"]], sort=False)
    summary = grouped.agg(
        n="count",
        mean="mean",
        sd="std",
        median="median",
        q1=lambda v: v.quantile(0.25),
        q3=lambda v: v.quantile(0.75),
    )
    return summary.reset_index()[list(SUMMARY_COLUMNS)]

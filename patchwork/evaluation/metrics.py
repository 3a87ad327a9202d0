"""Segmentation metrics per subject and label, in physical units, and their cohort summary.

For a predicted mask P and a reference mask R (one foreground label each), :func:`mask_metrics`
gives, under the names of :data:`METRICS`:

* ``dice`` = 2 |P ∩ R| / (|P| + |R|);
* ``per_blob_dice``, ``lesion_precision``, ``lesion_recall``, ``lesion_f1``: lesion-wise scores
  of the 26-connected components, see :mod:`patchwork.evaluation.lesions`;
* ``surface_dice`` (normalised surface Dice at a tolerance in mm), ``hausdorff`` (maximum),
  ``hd95`` and ``assd`` (average symmetric surface distance): surface distances in mm, see
  :mod:`patchwork.evaluation.surface` (MONAI's conventions);
* ``volume_pred_ml``, ``volume_ref_ml``: voxel count times the voxel volume (product of the
  spacings, the column lengths of the affine), and ``volume_diff_ml`` = |V_P - V_R|;
* ``lesion_count_pred``, ``lesion_count_ref``: numbers of 26-connected components, and
  ``lesion_count_diff`` = |n_P - n_R| (the ATLAS R2.0 "blob difference");
* ``lesion_false_positives``: predicted components that touch no reference lesion.

The differences are absolute, as in the ATLAS R2.0 challenge, so that their cohort mean measures
the size of the error; the sign is in the two columns they come from.

**Empty masks — one convention, used everywhere** (:data:`EMPTY_MASK_CONVENTION`):

* both P and R empty: a perfect prediction of "no lesion": every overlap score (Dice, per-blob
  Dice, surface Dice, lesion precision, recall, F1) is 1 and every distance is 0;
* exactly one empty: every overlap score is 0 and every distance is undefined (NaN, shown as
  n/a; :func:`summarise` skips NaNs and its ``n`` counts only defined values).

Volumes, counts and their differences are always defined.

Everything is computed on the bounding box of P ∪ R grown by one voxel, which holds every voxel
that any metric looks at, so a small lesion in a large image costs little.
:func:`evaluate_subject` writes the long table (``subject, model, label, metric, value``) that
:func:`summarise` reduces over subjects.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from patchwork.errors import PatchworkError
from patchwork.evaluation.lesions import LesionMatch
from patchwork.evaluation.surface import SurfaceDistances, bounding_box
from patchwork.io import check_same_grid, read_image

COLUMNS = ("subject", "model", "label", "metric", "value")
OVERLAP_METRICS = ("dice", "per_blob_dice", "surface_dice", "lesion_precision", "lesion_recall", "lesion_f1")
DISTANCE_METRICS = ("hd95", "hausdorff", "assd")
METRICS = (
    *OVERLAP_METRICS,
    *DISTANCE_METRICS,
    "volume_pred_ml",
    "volume_ref_ml",
    "volume_diff_ml",
    "lesion_count_pred",
    "lesion_count_ref",
    "lesion_count_diff",
    "lesion_false_positives",
)
# How reports name each metric (with its unit).
METRIC_TITLES = {
    "dice": "Dice",
    "per_blob_dice": "per-blob Dice",
    "surface_dice": "surface Dice",
    "lesion_precision": "lesion precision",
    "lesion_recall": "lesion recall",
    "lesion_f1": "lesion F1",
    "hd95": "HD95 (mm)",
    "hausdorff": "Hausdorff (mm)",
    "assd": "ASSD (mm)",
    "volume_pred_ml": "volume, prediction (ml)",
    "volume_ref_ml": "volume, reference (ml)",
    "volume_diff_ml": "|volume difference| (ml)",
    "lesion_count_pred": "lesions, prediction",
    "lesion_count_ref": "lesions, reference",
    "lesion_count_diff": "|lesion count difference|",
    "lesion_false_positives": "false-positive lesions",
}
# Column headings of the ATLAS R2.0 ensemble paper's Table 1 (plus HD95), for the cohort report.
TABLE1 = {
    "dice": "Dice",
    "per_blob_dice": "Per-blob Dice",
    "lesion_count_diff": "Blob diff.",
    "volume_diff_ml": "Vol. diff. (ml)",
    "hd95": "HD95 (mm)",
}
SUMMARY_COLUMNS = ("model", "label", "metric", "n", "mean", "sd", "median", "q1", "q3", "iqr")
DEFAULT_LABELS: Mapping[str, int] = {"lesion": 1}
DEFAULT_TOLERANCE_MM = 2.0
EMPTY_MASK_CONVENTION = (
    "Both masks empty: overlap scores (Dice, per-blob Dice, surface Dice, lesion precision, recall "
    "and F1) are 1 and distances 0. Exactly one mask empty: overlap scores are 0 and distances are "
    "undefined (n/a, left out of the cohort statistics)."
)


def spacing_from_affine(affine: np.ndarray) -> tuple[float, ...]:
    """Voxel spacing in mm: the lengths of the columns of the affine's 3x3 part."""
    return tuple(float(s) for s in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice overlap of two boolean masks; 1 when both are empty (see the module docstring)."""
    pred, ref = np.asarray(pred, dtype=bool), np.asarray(ref, dtype=bool)
    total = np.count_nonzero(pred) + np.count_nonzero(ref)
    if total == 0:
        return 1.0
    return 2.0 * np.count_nonzero(pred & ref) / total


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


def _surface_scores(
    pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], tolerance_mm: float
) -> dict[str, float]:
    """Surface Dice and distances of two boolean masks, following the empty-mask convention."""
    has_pred, has_ref = bool(pred.any()), bool(ref.any())
    if has_pred and has_ref:
        d = SurfaceDistances.compute(pred, ref, spacing)
        return {
            "surface_dice": d.surface_dice(tolerance_mm),
            "hd95": d.hausdorff(95.0),
            "hausdorff": d.hausdorff(100.0),
            "assd": d.average_symmetric(),
        }
    both_empty = not (has_pred or has_ref)
    return {"surface_dice": float(both_empty)} | {
        m: 0.0 if both_empty else float("nan") for m in DISTANCE_METRICS
    }


def hausdorff(
    pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...], percentile: float = 100.0
) -> float:
    """Hausdorff distance (mm) between the surfaces of two masks at ``percentile``.

    Empty masks follow the module convention: both empty → 0, exactly one empty → NaN.
    """
    pred, ref = _check_pair(pred, ref, spacing)
    if not (pred.any() and ref.any()):
        return 0.0 if not (pred.any() or ref.any()) else float("nan")
    return SurfaceDistances.compute(pred, ref, tuple(spacing)).hausdorff(percentile)


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]) -> float:
    """95th-percentile Hausdorff distance (mm); see :func:`hausdorff`."""
    return hausdorff(pred, ref, spacing, percentile=95.0)


def mask_metrics(
    pred: np.ndarray,
    ref: np.ndarray,
    spacing: tuple[float, ...],
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
) -> dict[str, float]:
    """Every metric of :data:`METRICS` for one pair of masks with voxel ``spacing`` (mm);
    ``tolerance_mm`` is the surface Dice tolerance. Keys come in the order of :data:`METRICS`."""
    pred, ref = _check_pair(pred, ref, spacing)
    spacing = tuple(float(s) for s in spacing)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    box = bounding_box(pred | ref, margin=1)
    if box is not None:
        pred, ref = pred[box], ref[box]
    lesions = LesionMatch.compute(pred, ref)
    volume_pred, volume_ref = np.count_nonzero(pred) * voxel_ml, np.count_nonzero(ref) * voxel_ml
    scores = {
        "dice": dice(pred, ref),
        "per_blob_dice": lesions.per_blob_dice(),
        "lesion_precision": lesions.precision(),
        "lesion_recall": lesions.recall(),
        "lesion_f1": lesions.f1(),
        **_surface_scores(pred, ref, spacing, tolerance_mm),
        "volume_pred_ml": volume_pred,
        "volume_ref_ml": volume_ref,
        "volume_diff_ml": abs(volume_pred - volume_ref),
        "lesion_count_pred": float(lesions.n_pred),
        "lesion_count_ref": float(lesions.n_ref),
        "lesion_count_diff": float(abs(lesions.n_pred - lesions.n_ref)),
        "lesion_false_positives": float(lesions.false_positives()),
    }
    return {m: float(scores[m]) for m in METRICS}


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
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
) -> pd.DataFrame:
    """Metrics of each model's segmentation of one subject against the reference, per label.

    Args:
        subject: subject id, copied into the ``subject`` column.
        reference: reference label map (NIfTI).
        predictions: model name → predicted label map; each must have the reference's shape and
            affine (the error names the odd file).
        labels: label name → label value of the foreground labels to score (default
            ``{"lesion": 1}``); the name goes into the ``label`` column.
        tolerance_mm: tolerance of the normalised surface Dice.

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
            scores = mask_metrics(pred_data == int(value), ref_data == int(value), spacing, tolerance_mm)
            rows.extend((subject, model, name, metric, score) for metric, score in scores.items())
    return pd.DataFrame(rows, columns=list(COLUMNS))


def summarise(metrics: pd.DataFrame) -> pd.DataFrame:
    """Per model, label and metric: n, mean, sd, median, q1, q3 and iqr (= q3 - q1) of ``value``.

    NaNs (undefined distances, see the empty-mask convention) are skipped and ``n`` counts the
    defined values only. ``sd`` is the sample standard deviation (NaN when n < 2); quartiles use
    linear interpolation. Models, labels and metrics keep their order of first appearance.
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
    summary["iqr"] = summary["q3"] - summary["q1"]
    return summary.reset_index()[list(SUMMARY_COLUMNS)]

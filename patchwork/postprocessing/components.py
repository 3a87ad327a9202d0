"""Post-processing of a probability map: threshold, then keep the connected components that are large and
confident enough; the three settings chosen on out-of-fold predictions.

A model that finds every lesion but also marks dozens of small, hesitant blobs elsewhere (CSF-dark sulci and
ventricles look like stroke lesions on T1) loses most of its Dice to them. As nnU-Net's post-processing
decides from the cross-validation whether removing components helps, :func:`tune_postprocessing` chooses,
for one model (or the ensemble), the settings that maximise the mean Dice over its out-of-fold subjects:

* ``threshold`` t: foreground where p >= t;
* ``min_volume_mm3`` V: a 26-connected component C of the mask is kept only when ``|C| v >= V`` (v the
  voxel volume, so subjects of different voxel sizes are treated alike);
* ``min_peak`` q: and only when ``max_{x in C} p(x) >= q`` (a blob whose probability never rises far
  above the threshold is a hesitant one).

Search: per subject and threshold the mask is labelled once; for every component its volume, peak and
overlap with the reference are tabulated, so each (V, q) pair is scored from the table
(:func:`dice_grid`) without relabelling. Tuned and scored on the same subjects the tuned Dice is
optimistic; it is reported beside the untouched one (the model's own threshold, nothing removed).

Example::

    cases = [load_case(Path(f"predictions/unet/{s}_prob.nii.gz"), Path(f"labels/{s}.nii.gz")) for s in ids]
    result = tune_postprocessing(cases, model_threshold=0.5)
    mask = postprocess(prob, Postprocessing.from_dict(result["settings"]), voxel_mm3=8.0)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from scipy import ndimage

from patchwork.errors import PatchworkError
from patchwork.io import check_same_grid, read_image, save_image
from patchwork.settings import Settings, read_tuned_settings, setting

THRESHOLDS = tuple(round(float(t), 2) for t in np.arange(0.10, 0.901, 0.05))
MIN_VOLUMES_MM3 = (0.0, 10.0, 30.0, 100.0, 300.0, 1000.0)
MIN_PEAKS = (0.0, 0.6, 0.7, 0.8, 0.9, 0.95)


@dataclass(frozen=True)
class Postprocessing(Settings):
    """Threshold, smallest kept component volume (mm³) and smallest kept component peak probability.

    The defaults change nothing beyond the usual 0.5 threshold.
    """

    what: ClassVar[str] = "postprocessing"
    threshold: float = setting(0.5, minimum=0, maximum=1, doc="foreground where the probability >= this")
    min_volume_mm3: float = setting(0.0, minimum=0, doc="a component smaller than this (mm³) is removed")
    min_peak: float = setting(
        0.0, minimum=0, maximum=1, doc="a component whose highest probability is below this is removed"
    )


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the connected components of a boolean mask with full (26 in 3D) connectivity.

    Returns ``(labels, n)``: an int array with 0 for background and 1..n for the components.
    """
    structure = ndimage.generate_binary_structure(mask.ndim, mask.ndim)
    labels, n = ndimage.label(np.asarray(mask, dtype=bool), structure=structure)
    return labels, int(n)


def kept(volume: np.ndarray, peak: np.ndarray, min_volume: Any, min_peak: Any) -> np.ndarray:
    """The keep rule of every component filter here: ``volume >= min_volume`` and ``peak >= min_peak``.
    It broadcasts, so one filter (:func:`remove_components`) and the tuning's grid of them
    (:func:`dice_grid`) apply the very same comparisons."""
    return (volume >= min_volume) & (peak >= min_peak)


def remove_components(
    mask: np.ndarray,
    min_size: float,
    prob: np.ndarray | None = None,
    min_peak: float = 0.0,
    unit: float = 1.0,
) -> np.ndarray:
    """Return a boolean copy of ``mask`` without its 26-connected components C that are small,
    ``|C| unit < min_size`` (``unit`` the volume of a voxel: 1 counts voxels, ``voxel_volume`` gives mm³),
    or, given ``prob``, hesitant: ``max_{x in C} prob(x) < min_peak``.

    Sizes come from one ``bincount`` over the label image and the kept set is a lookup table indexed by
    label, so the cost does not grow with the number of components. A filter that removes nothing
    (``min_size <= unit`` and no peak test) skips the labelling.
    """
    mask = np.asarray(mask, dtype=bool)
    if prob is None and min_peak > 0:
        raise ValueError("remove_components: a minimum peak needs the probabilities (prob)")
    test_peak = min_peak > 0  # with probabilities, as checked above
    if min_size <= unit and not test_peak:
        return mask.copy()
    labels, n = label_components(mask)
    volume = np.bincount(labels.ravel(), minlength=n + 1)[1:] * unit
    peak = component_peaks(prob, labels, mask, n) if test_peak else np.ones(n)
    return np.concatenate([[False], kept(volume, peak, min_size, min_peak)])[labels]


def voxel_volume(affine: np.ndarray) -> float:
    """Volume of one voxel in mm³: ``|det|`` of the affine's 3×3 part."""
    return float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3])))


def component_peaks(prob: np.ndarray, labels: np.ndarray, mask: np.ndarray, n: int) -> np.ndarray:
    """The highest probability ``[n]`` of each of the ``n`` components ``labels`` of ``mask``, from the
    mask's voxels only (``ndimage.maximum`` sorts the whole image's labels: 10× slower here)."""
    peak = np.zeros(n + 1)
    np.maximum.at(peak, labels[mask], np.asarray(prob)[mask])
    return peak[1:]


def postprocess(prob: np.ndarray, settings: Postprocessing, voxel_mm3: float) -> np.ndarray:
    """The mask ``prob >= threshold`` without the components under ``min_volume_mm3`` or ``min_peak``."""
    prob = np.asarray(prob)
    return remove_components(
        prob >= settings.threshold, settings.min_volume_mm3, prob, settings.min_peak, voxel_mm3
    )


@dataclass(frozen=True)
class ComponentTable:
    """The components of one thresholded mask: ``voxels``, ``peak`` probability and voxels of ``overlap``
    with the reference, each ``[n]``; ``unit`` the volume of a voxel (mm³, or 1 to count voxels);
    ``reference`` the reference's voxel count."""

    voxels: np.ndarray
    peak: np.ndarray
    overlap: np.ndarray
    unit: float
    reference: int

    @classmethod
    def of(
        cls, prob: np.ndarray, reference: np.ndarray, threshold: float, unit: float = 1.0
    ) -> ComponentTable:
        """The components of ``prob >= threshold`` against the boolean ``reference``."""
        mask = np.asarray(prob) >= threshold
        labels, n = label_components(mask)
        return cls(
            voxels=np.bincount(labels.ravel(), minlength=n + 1)[1:],
            peak=component_peaks(prob, labels, mask, n),
            overlap=np.bincount(labels[reference], minlength=n + 1)[1:],
            unit=float(unit),
            reference=int(np.count_nonzero(reference)),
        )


def dice_grid(table: ComponentTable, min_volumes: Sequence[float], min_peaks: Sequence[float]) -> np.ndarray:
    """Dice ``[len(min_volumes), len(min_peaks)]`` of the mask without the components smaller than each
    volume (in ``table.unit``) or with a lower peak; an empty prediction of an empty reference scores 1."""
    keep = kept(
        table.voxels * table.unit,
        table.peak,
        np.asarray(min_volumes, dtype=float)[:, None, None],
        np.asarray(min_peaks, dtype=float)[None, :, None],
    )
    predicted = (keep * table.voxels).sum(axis=2)
    inter = (keep * table.overlap).sum(axis=2)
    total = predicted + table.reference
    return np.where(total > 0, 2.0 * inter / np.maximum(total, 1), 1.0)


@dataclass(frozen=True)
class Case:
    """One subject: foreground probability, boolean reference and voxel volume (mm³), cropped to the box
    where anything can matter (the reference and every voxel above the lowest threshold)."""

    prob: np.ndarray
    reference: np.ndarray
    voxel_mm3: float


def crop_to_support(
    arrays: np.ndarray, reference: np.ndarray, lowest: float
) -> tuple[np.ndarray, np.ndarray]:
    """``arrays [..., *S]`` (probabilities) and ``reference [*S]`` cut to the bounding box of the reference
    and of every voxel where any probability reaches ``lowest`` (a 1-voxel box when there is none), as
    contiguous copies (a search reads them many times; a view into the whole grid would be copied each
    time)."""
    support = reference | (arrays >= lowest).reshape(-1, *reference.shape).any(axis=0)
    if not support.any():
        box = tuple(slice(0, 1) for _ in reference.shape)
    else:
        box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in np.nonzero(support))
    return np.ascontiguousarray(arrays[(..., *box)]), np.ascontiguousarray(reference[box])


def load_case(prob_path: Path, reference_path: Path) -> Case:
    """Read one subject's probability map and reference (same grid, else an error naming the file)."""
    reference, ref_affine = read_image(reference_path)
    prob, affine = read_image(prob_path)
    check_same_grid(prob_path, prob.shape, affine, reference_path, reference.shape, ref_affine)
    prob, ref = crop_to_support(prob, reference > 0, min(THRESHOLDS))
    return Case(prob, ref, voxel_volume(affine))


def case_dice(case: Case, settings: Postprocessing) -> float:
    """Dice of one case post-processed with ``settings``."""
    table = ComponentTable.of(case.prob, case.reference, settings.threshold, case.voxel_mm3)
    return float(dice_grid(table, [settings.min_volume_mm3], [settings.min_peak])[0, 0])


def tune_postprocessing(cases: Sequence[Case], model_threshold: float) -> dict[str, Any]:
    """Grid-search threshold (``THRESHOLDS``), minimum volume (``MIN_VOLUMES_MM3``) and minimum peak
    (``MIN_PEAKS``) for the best mean Dice over ``cases``; ties keep the earlier (milder) choice. The
    cases are read once, one at a time (a lazy sequence such as
    :class:`patchwork.ondemand.Mapped` keeps one subject in memory).

    Returns the contents of a ``postprocessing.json``: ``settings`` (read back with
    :func:`read_postprocessing`), ``mean_dice``, ``n_subjects``, and ``untouched`` (the model's own
    ``model_threshold`` with nothing removed, and its mean Dice on the same cases).
    """
    if not cases:
        raise PatchworkError("tune-postprocessing: no subjects to tune on")
    untouched = Postprocessing(threshold=model_threshold)
    grid = np.zeros((len(THRESHOLDS), len(MIN_VOLUMES_MM3), len(MIN_PEAKS)))
    untouched_score = 0.0
    for c in cases:
        for k, threshold in enumerate(THRESHOLDS):
            grid[k] += dice_grid(
                ComponentTable.of(c.prob, c.reference, threshold, c.voxel_mm3), MIN_VOLUMES_MM3, MIN_PEAKS
            )
        untouched_score += case_dice(c, untouched)
    # the first maximum in (threshold, volume, peak) order: ties keep the lower threshold, the milder filter
    k, i, j = np.unravel_index(int(np.argmax(grid)), grid.shape)
    best_score = float(grid[k, i, j] / len(cases))
    best = Postprocessing(THRESHOLDS[k], MIN_VOLUMES_MM3[i], MIN_PEAKS[j])
    untouched = Postprocessing(threshold=model_threshold)
    return {
        "settings": best.to_dict(),
        "mean_dice": best_score,
        "n_subjects": len(cases),
        "untouched": {"settings": untouched.to_dict(), "mean_dice": float(untouched_score / len(cases))},
    }


def read_postprocessing(path: Path) -> Postprocessing:
    """The settings of a ``postprocessing.json`` written from :func:`tune_postprocessing`."""
    return read_tuned_settings(path, Postprocessing.from_dict, "a postprocessing.json of tune-postprocessing")


def postprocess_file(prob_path: Path, settings: Postprocessing, out_seg: Path) -> None:
    """Post-process a probability NIfTI into a uint8 mask NIfTI of the same grid (written atomically)."""
    prob, affine = read_image(prob_path)
    save_image(postprocess(prob, settings, voxel_volume(affine)), affine, out_seg, dtype=np.uint8)

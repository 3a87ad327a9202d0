"""Choose the ensemble's weights, threshold and minimum component size on out-of-fold predictions.

A grid search that maximises the mean Dice over subjects of the ``mean`` ensemble
(:func:`patchwork.ensemble.combine`): weights w in {0, 1, 2}^M (not all 0; only their ratios
matter), thresholds 0.10, 0.15, ..., 0.90 and minimum component sizes ``MIN_SIZES``. Tuned on the
same out-of-fold predictions it is then evaluated on, the tuned score is optimistic; the workflow
reports it beside the hand-set ensemble for that reason.

Speed: each subject is cropped once to the bounding box of its reference and of every voxel any
model gives a probability >= the lowest threshold; per (weights, threshold) the fused mask is
labelled once (26-connected) and every minimum size is scored from the component sizes and their
overlap with the reference, without relabelling (:func:`patchwork.postprocess.dice_grid`).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from patchwork.config import EnsembleSettings
from patchwork.ensemble import check_same_grid, combine
from patchwork.errors import PatchworkError
from patchwork.io import read_image, read_json
from patchwork.postprocess import ComponentTable, crop_to_support, dice_grid

WEIGHT_LEVELS = (0.0, 1.0, 2.0)
THRESHOLDS = tuple(round(float(t), 2) for t in np.arange(0.10, 0.901, 0.05))
MIN_SIZES = (0, 5, 10, 27, 50, 100)


@dataclass(frozen=True)
class Case:
    """One subject, cropped: probabilities ``[M, *box]`` of the M models and the reference mask."""

    probs: np.ndarray
    reference: np.ndarray


def load_case(prob_paths: Sequence[Path], reference_path: Path, lowest_threshold: float) -> Case:
    """Read one subject's model probabilities and reference, cropped to where they can matter."""
    reference, ref_affine = read_image(reference_path)
    probs = []
    for path in prob_paths:
        data, affine = read_image(path)
        check_same_grid(path, data.shape, affine, reference_path, reference.shape, ref_affine)
        probs.append(data)
    probs, ref = crop_to_support(np.stack(probs), reference > 0, lowest_threshold)
    return Case(probs, ref)


def _dice_per_min_size(
    prob: np.ndarray, reference: np.ndarray, threshold: float, min_sizes: Sequence[int]
) -> np.ndarray:
    """Dice of ``prob >= threshold`` without its components under each of ``min_sizes`` voxels (both
    empty: 1)."""
    return dice_grid(ComponentTable.of(prob, reference, threshold), min_sizes, [0.0])[:, 0]


def weight_grid(n_models: int) -> list[tuple[float, ...]]:
    """Weight vectors over ``WEIGHT_LEVELS``, one per distinct ratio (e.g. (1, 1) and (2, 2) once)."""
    seen, grid = set(), []
    for w in itertools.product(WEIGHT_LEVELS, repeat=n_models):
        total = sum(w)
        if total == 0:
            continue
        key = tuple(round(x / total, 9) for x in w)
        if key not in seen:
            seen.add(key)
            grid.append(w)
    return grid


def tune_ensemble(cases: Sequence[Case], models: Sequence[str], hand_set: EnsembleSettings) -> dict[str, Any]:
    """Grid-search weights, threshold and minimum component size for the best mean Dice.

    ``models`` name the probability maps of each case, in order. Returns the contents of
    ``ensemble_params.json``: ``settings`` (the hand-set :class:`EnsembleSettings` with the tuned ``mean``
    mode, weights, threshold and minimum size: read back with :func:`read_tuned`), ``mean_dice``,
    ``n_subjects``, and ``hand_set`` (its settings and mean Dice on the same cases, for comparison).
    """
    if not cases:
        raise PatchworkError("tune-ensemble: no subjects to tune on")
    best_score = -1.0
    best = (tuple(hand_set.weight(m) for m in models), hand_set.threshold, 0)
    for weights in weight_grid(len(models)):
        w = np.asarray(weights) / sum(weights)
        fused = [np.tensordot(w, case.probs, axes=1) for case in cases]
        for threshold in THRESHOLDS:
            per_case = [
                _dice_per_min_size(f, c.reference, threshold, MIN_SIZES) for f, c in zip(fused, cases)
            ]
            scores = np.mean(per_case, axis=0)
            k = int(np.argmax(scores))
            if scores[k] > best_score + 1e-12:
                best_score, best = float(scores[k]), (weights, threshold, MIN_SIZES[k])
    hand_segs = [combine(dict(zip(models, case.probs, strict=True)), hand_set)[1] for case in cases]
    hand_score = np.mean(
        [_dice_per_min_size(seg, c.reference, 0.5, [0])[0] for seg, c in zip(hand_segs, cases)]
    )
    weights, threshold, min_size = best
    tuned = dataclasses.replace(
        hand_set,
        mode="mean",
        weights=dict(zip(models, weights, strict=True)),
        threshold=threshold,
        min_component_voxels=min_size,
    )
    return {
        "settings": tuned.to_dict(),
        "mean_dice": best_score,
        "n_subjects": len(cases),
        "hand_set": {"settings": hand_set.to_dict(), "mean_dice": float(hand_score)},
    }


def read_tuned(path: Path) -> EnsembleSettings:
    """The tuned ensemble settings of an ``ensemble_params.json`` written from :func:`tune_ensemble`."""
    tuned = read_json(path)
    if not isinstance(tuned, dict) or "settings" not in tuned:
        raise PatchworkError(f"{path}: not an ensemble_params.json of tune-ensemble (no 'settings')")
    try:
        return EnsembleSettings.from_dict(tuned["settings"])
    except PatchworkError as err:
        raise PatchworkError(problems=[f"{path}: {p}" for p in err.problems]) from None

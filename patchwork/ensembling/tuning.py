"""Choose the ensemble's weights, threshold, minimum component size and peak on out-of-fold predictions.

A search that maximises the mean Dice over subjects of the ``mean`` ensemble
(:func:`patchwork.ensembling.combine.combine`): weights w in {0, 1, 2}^M (not all 0; only their ratios
matter), thresholds 0.10, 0.15, ..., 0.90, minimum component sizes ``MIN_SIZES`` and minimum component
peaks ``MIN_PEAKS`` (a component kept only when its highest fused probability reaches the peak: the
same peak filter, and the same grid, as each model's own post-processing,
:mod:`patchwork.postprocessing.components`). Tuned on the same out-of-fold predictions it is
then evaluated on, the tuned score is optimistic; the workflow reports it beside the hand-set ensemble
for that reason.

Exact, and far cheaper than labelling the fused mask of every (w, t) pair: the subjects are read one
at a time (memory holds one subject, whatever the cohort's size), first once, then once per round:

1. *Screening*: for every weight vector the fused map ``p = w·p_m`` of a subject is counted once against
   all thresholds (``P_t = #{p >= t}``, ``I_t = #{p >= t, reference}`` from one ``searchsorted``). Removing
   components can only drop voxels, so no minimum size or peak lifts the pair's Dice above the bound
   ``2 I_t / (I_t + G)`` (all false positives gone, every true positive kept; ``G`` the reference's
   voxels); its mean over subjects bounds the pair.
2. *Rounds*: the ``ROUND`` unscored pairs of highest bound are scored exactly: the fused mask labelled once
   (26-connected) and every minimum size and peak scored from its component sizes, peaks and overlap
   with the reference (:func:`patchwork.postprocessing.components.dice_grid`). The search stops when the best
   score reached is at least the bound of every pair left (branch and bound): the result is the whole
   grid's optimum.

With three models the grid has 19 weight ratios × 17 thresholds; labelling every pair took 350 s on the
20-subject demo, the bounded search a few rounds.
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
from patchwork.ensembling.combine import combine, weighted_mean
from patchwork.errors import PatchworkError
from patchwork.evaluation.metrics import dice
from patchwork.io import check_same_grid, read_image
from patchwork.postprocessing.components import (
    MIN_PEAKS,
    THRESHOLDS,
    ComponentTable,
    crop_to_support,
    dice_grid,
)
from patchwork.settings import read_tuned_settings

WEIGHT_LEVELS = (0.0, 1.0, 2.0)
MIN_SIZES = (0, 5, 10, 27, 50, 100)
ROUND = 16


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


def _dice_per_filter(prob: np.ndarray, reference: np.ndarray, threshold: float) -> np.ndarray:
    """Dice ``[len(MIN_SIZES), len(MIN_PEAKS)]`` of ``prob >= threshold`` without its components under
    each minimum size (voxels) or peak (both masks empty: 1)."""
    return dice_grid(ComponentTable.of(prob, reference, threshold), MIN_SIZES, MIN_PEAKS)


def threshold_counts(
    prob: np.ndarray, reference: np.ndarray, thresholds: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """``#{prob >= t}`` and ``#{prob >= t, reference}`` for every ``t`` of the ascending ``thresholds``,
    from one count: a voxel of value v lies above exactly the thresholds ``t <= v``."""
    above = np.searchsorted(np.asarray(thresholds), prob.ravel(), side="right")
    n = len(thresholds)
    predicted = np.cumsum(np.bincount(above, minlength=n + 1)[::-1])[::-1][1:]
    inter = np.cumsum(np.bincount(above[reference.ravel()], minlength=n + 1)[::-1])[::-1][1:]
    return predicted, inter


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, 1 where the denominator is 0 (both masks empty)."""
    return np.where(denominator > 0, numerator / np.maximum(denominator, 1), 1.0)


def dice_bound_per_threshold(
    prob: np.ndarray, reference: np.ndarray, thresholds: Sequence[float]
) -> np.ndarray:
    """The highest Dice that removing components of ``prob >= t`` could reach, per threshold:
    ``2 I / (I + G)`` (every false positive removed, every true positive kept)."""
    inter = threshold_counts(prob, reference, thresholds)[1]
    return _ratio(2.0 * inter, inter + int(np.count_nonzero(reference)))


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


def _component_scores(
    cases: Sequence[Case], grid: Sequence[tuple[float, ...]], pairs: Sequence[tuple[int, int]]
) -> np.ndarray:
    """Summed Dice ``[len(pairs), len(MIN_SIZES), len(MIN_PEAKS)]`` over ``cases`` of each (weight index,
    threshold index) pair after removing the components under each minimum size or peak; one pass over
    the cases."""
    scores = np.zeros((len(pairs), len(MIN_SIZES), len(MIN_PEAKS)))
    for case in cases:
        fused = {k: weighted_mean(case.probs, grid[k]) for k in dict.fromkeys(k for k, _ in pairs)}
        for c, (k, j) in enumerate(pairs):
            scores[c] += _dice_per_filter(fused[k], case.reference, THRESHOLDS[j])
    return scores


def tune_ensemble(cases: Sequence[Case], models: Sequence[str], hand_set: EnsembleSettings) -> dict[str, Any]:
    """Search weights, threshold, minimum component size and peak for the best mean Dice (see the
    module).

    ``cases`` are read once per pass, one at a time (a :class:`patchwork.ondemand.Mapped` streams
    them from disk); ``models`` name the probability maps of each case, in order. Returns the contents
    of ``ensemble_params.json``: ``settings`` (the hand-set :class:`EnsembleSettings` with the tuned
    ``mean`` mode, weights, threshold, minimum size and peak: read back with :func:`read_tuned`),
    ``mean_dice``, ``n_subjects``, and ``hand_set`` (its settings and mean Dice on the same cases, for
    comparison).
    """
    if not cases:
        raise PatchworkError("tune-ensemble: no subjects to tune on")
    grid = weight_grid(len(models))
    bound = np.zeros((len(grid), len(THRESHOLDS)))
    hand_score = 0.0
    for case in cases:
        for k, weights in enumerate(grid):
            fused = weighted_mean(case.probs, weights)
            bound[k] += dice_bound_per_threshold(fused, case.reference, THRESHOLDS)
        hand_seg = combine(dict(zip(models, case.probs, strict=True)), hand_set)[1]
        hand_score += dice(hand_seg, case.reference)
    order = [np.unravel_index(int(i), bound.shape) for i in np.argsort(-bound, axis=None, kind="stable")]
    best_score, best, scored = -1.0, (0, 0, 0, 0), 0
    while scored < len(order) and bound[order[scored]] > best_score + 1e-9:
        pairs = order[scored : scored + ROUND]
        scores = _component_scores(cases, grid, pairs)
        # ties: within a pair the smaller size, then the smaller peak; across pairs the higher bound (earlier)
        i, m, q = np.unravel_index(int(np.argmax(scores)), scores.shape)
        if scores[i, m, q] > best_score + 1e-9:
            best_score, best = float(scores[i, m, q]), (*pairs[i], m, q)
        scored += len(pairs)
    k, j, m, q = best
    n = len(cases)
    tuned = dataclasses.replace(
        hand_set,
        mode="mean",
        weights=dict(zip(models, grid[k], strict=True)),
        threshold=THRESHOLDS[j],
        min_component_voxels=MIN_SIZES[m],
        min_peak=MIN_PEAKS[q],
    )
    return {
        "settings": tuned.to_dict(),
        "mean_dice": best_score / n,
        "n_subjects": n,
        "hand_set": {"settings": hand_set.to_dict(), "mean_dice": float(hand_score / n)},
    }


def read_tuned(path: Path) -> EnsembleSettings:
    """The tuned ensemble settings of an ``ensemble_params.json`` written from :func:`tune_ensemble`."""
    return read_tuned_settings(path, EnsembleSettings.from_dict, "an ensemble_params.json of tune-ensemble")

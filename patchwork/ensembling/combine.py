"""Combining model outputs into one segmentation, and the post-processing that goes with it.

Two ways to combine the probability maps p_1..p_M of M models with weights w_1..w_M
(normalised to sum to one, so only their ratios matter):

``mean`` (nnU-Net's way)
    p = sum_m w_m p_m; foreground where p >= ``threshold``.

``vote`` (the ATLAS R2.0 recipe, see ``ATLAS2_RECIPE.md``)
    each model is first turned into a mask b_m = [p_m >= t_m] at its own threshold t_m, components
    smaller than ``min_component_voxels`` are removed from each b_m, and the returned "probability"
    is the weighted vote fraction v = sum_m w_m b_m; foreground where v >= ``threshold`` (0.5).
    With weights (2, 1, 1) and threshold 0.5 this is b_1 OR (b_2 AND b_3): the first model alone,
    or the other two together.

In both modes the final mask loses its components smaller than ``min_component_voxels`` and those whose
highest value of p (or v) is below ``min_peak`` (0, the default, keeps them all).
Components are 26-connected in 3D (voxels touching by a face, an edge or a corner belong
together; in general the full 3^d neighbourhood), as in the ATLAS R2.0 code's 3x3x3 max-pool labelling.

The settings travel as one :class:`~patchwork.config.EnsembleSettings` (weights and model thresholds
keyed by model name).

Example::

    settings = EnsembleSettings(mode="vote", weights={"dnp": 2.0}, min_component_voxels=27,
                                model_thresholds={"dnp": 0.35, "unet_a": 0.25, "unet_b": 0.5})
    prob, seg = combine({"dnp": p_dnp, "unet_a": p_unet1, "unet_b": p_unet2}, settings)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from patchwork.config import EnsembleSettings
from patchwork.errors import PatchworkError
from patchwork.io import check_same_grid, read_image, save_image
from patchwork.postprocessing.components import remove_components

# Vote fractions are sums of normalised weights, so an exact tie (2 of 4 equal votes = 0.5) can land
# a few ulp below the threshold or the minimum peak; comparisons with either allow this much slack.
_TIE_TOLERANCE = 1e-9


def _normalised_weights(weights: Sequence[float]) -> np.ndarray:
    """The weights (finite, >= 0, not all 0) scaled to sum to one."""
    w = np.asarray(weights, dtype=np.float64).ravel()
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise PatchworkError(f"ensemble: weights must be finite and non-negative, got {w.tolist()}")
    if w.sum() == 0:
        raise PatchworkError("ensemble: the weights sum to zero")
    return w / w.sum()


def weighted_mean(layers: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """``sum_m w_m layer_m / sum_m w_m`` in float64, summed in the layers' order (``layers``: a list, or an
    array ``[M, *S]``); layers of weight 0 are skipped, as adding ``0 * layer`` changes no value (the
    tuning's weight grid holds many zeros). The tuning fuses with this too, so its scores are combine's."""
    w = _normalised_weights(weights)
    fused = np.zeros(np.shape(layers[0]), dtype=np.float64)
    for wm, layer in zip(w, layers, strict=True):
        if wm:
            fused += wm * np.asarray(layer, dtype=np.float64)
    return fused


def combine(probs: Mapping[str, np.ndarray], settings: EnsembleSettings) -> tuple[np.ndarray, np.ndarray]:
    """Combine the probability maps of several models (see the module docstring for the maths).

    Args:
        probs: model name -> foreground-probability array, all of one shape.
        settings: mode, weights (by model name, default 1), threshold, ``min_component_voxels``,
            ``min_peak`` and, for ``vote``, each model's own threshold.

    Returns:
        ``(probability, segmentation)``: the weighted mean probability (``mean``) or weighted vote
        fraction (``vote``) as float32, and the final mask as uint8 (0/1).
    """
    if len(probs) == 0:
        raise PatchworkError("ensemble: no probability maps given")
    names = list(probs)
    shape = np.shape(probs[names[0]])
    for name in names:
        if np.shape(probs[name]) != shape:
            raise PatchworkError(
                f"ensemble: map {name} has shape {np.shape(probs[name])}, {names[0]} has {shape}"
            )
    w = [settings.weight(name) for name in names]
    min_voxels = settings.min_component_voxels
    if settings.mode == "vote":
        layers = [
            remove_components(np.asarray(probs[name]) >= settings.model_threshold(name), min_voxels)
            for name in names
        ]
    else:
        layers = [probs[name] for name in names]

    fused = weighted_mean(layers, w)
    mask = fused >= settings.threshold - _TIE_TOLERANCE
    seg = remove_components(mask, min_voxels, fused, max(settings.min_peak - _TIE_TOLERANCE, 0.0))
    return fused.astype(np.float32), seg.astype(np.uint8)


def ensemble_files(
    prob_paths: Mapping[str, Path], settings: EnsembleSettings, out_prob: Path, out_seg: Path
) -> None:
    """Combine probability NIfTIs (model name -> path) with :func:`combine`; write the probability and mask.

    All inputs must share the first one's shape and affine (the error names the odd file). The
    outputs get that affine: ``out_prob`` as float32, ``out_seg`` as uint8, both written atomically.
    """
    if len(prob_paths) == 0:
        raise PatchworkError("ensemble: no probability maps given")
    probs: dict[str, np.ndarray] = {}
    first = next(iter(prob_paths.values()))
    affine = np.eye(4)
    for name, path in prob_paths.items():
        data, aff = read_image(path)
        if probs:
            check_same_grid(path, data.shape, aff, first, next(iter(probs.values())).shape, affine)
        else:
            affine = aff
        probs[name] = data
    prob, seg = combine(probs, settings)
    save_image(prob, affine, out_prob, dtype=np.float32)
    save_image(seg, affine, out_seg, dtype=np.uint8)

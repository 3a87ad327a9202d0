"""A trained model of any registered type applied to one preprocessed case, its outputs in the original grid.

The workflow's prediction stage and the entry's ``patchwork infer`` share this one path, so that an entry
reproduces the workflow's files byte for byte: the type's ``predict`` (registry) on the preprocessed image,
then the probability mapped back to the original grid (linear, 0 outside the crop, clipped to [0, 1],
float32) and, for a type that gives one, the per-voxel spread the same way.

Example::

    image, _, record = load_preprocessed(Path("results/preprocessed"), "sub-01")
    result = predict_case(model_type("dnp"), model_path, image, record, apply, device="cpu", seed=0)
    result.probability  # [X, Y, Z] float32 in the original grid, with result.affine
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from patchwork.data.preprocess import to_original
from patchwork.models import ModelType


@dataclass(frozen=True)
class OriginalPrediction:
    """One case's probability ``[*S]`` (float32), its spread (``None`` for a type that gives none) and the
    original grid's affine."""

    probability: np.ndarray
    spread: np.ndarray | None
    affine: np.ndarray


def to_original_probability(prob: np.ndarray, record: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """A probability map on the preprocessed grid mapped back to the original grid (linear, 0 outside the
    crop, clipped to [0, 1], float32), and the original affine."""
    original, affine = to_original(prob, dict(record), interpolation="linear", fill=0.0)
    return np.clip(original, 0.0, 1.0).astype(np.float32), affine


def predict_case(
    row: ModelType,
    model_path: Path,
    image: np.ndarray,
    record: Mapping[str, Any],
    apply: Any,
    device: str | None = None,
    seed: int = 0,
    spread: bool = True,
) -> OriginalPrediction:
    """Apply the trained model ``model_path`` of type ``row`` with its application settings ``apply`` to
    the preprocessed ``image [C, *S]`` whose preprocessing ``record`` maps it back to the original grid;
    ``spread``: also map the spread back (for a type whose ``outputs`` hold ``"std"``)."""
    grid = np.asarray(record["affine"])
    prob, std = row.predict_function(model_path, image, grid, apply, device=device, seed=seed)
    probability, affine = to_original_probability(prob, record)
    if not spread or "std" not in row.outputs:
        return OriginalPrediction(probability, None, affine)
    spread_original = to_original(std, dict(record), interpolation="linear", fill=0.0)[0]
    return OriginalPrediction(probability, spread_original, affine)

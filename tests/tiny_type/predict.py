"""Application of the tiny type: a logistic of the first channel around the learnt threshold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tiny_type.settings import TinyApply, TinyParams


def predict_tiny(
    model_path: Path, image: np.ndarray, affine: np.ndarray, apply: TinyApply, **device_and_seed: object
) -> tuple[np.ndarray, None]:
    """The foreground probability ``[*S]`` of ``image [C, *S]`` (no spread)."""
    model = torch.load(model_path, map_location="cpu", weights_only=True)
    params = TinyParams.from_dict(model["params"])
    logits = params.sharpness * (image[0] - model["threshold"] - apply.shift)
    return (1 / (1 + np.exp(-logits))).astype(np.float32), None

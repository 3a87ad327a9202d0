"""Model registry: one place that maps a model spec of the config's ``models:`` list to its code.

A spec is ``{"name": str, "type": "unet", "params": {...}}``. Training writes the spec next to the
weights (``spec.json``) so that prediction needs only the model folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from patchwork.errors import PatchworkError
from patchwork.io import read_json, write_json

MODEL_TYPES = ("unet",)


def check_spec(spec: dict[str, Any], source: str = "model spec") -> dict[str, Any]:
    """Validate a model spec once (name, known type, params parse) and return it normalised."""
    if not isinstance(spec, dict) or "name" not in spec or "type" not in spec:
        raise PatchworkError(f"{source}: a model needs 'name' and 'type' (got {spec!r})")
    if spec["type"] not in MODEL_TYPES:
        known = ", ".join(MODEL_TYPES)
        raise PatchworkError(
            f"{source}: model {spec['name']!r} has unknown type {spec['type']!r} (known: {known})"
        )
    params = dict(spec.get("params") or {})
    _params_class(spec["type"]).from_dict(params)
    return {"name": str(spec["name"]), "type": spec["type"], "params": params}


def _params_class(model_type: str) -> Any:
    from patchwork.unet import UNetParams

    return {"unet": UNetParams}[model_type]


def train_model(
    spec: dict[str, Any],
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    out_dir: Path,
    seed: int,
    val_images: Sequence[np.ndarray] | None = None,
    val_labels: Sequence[np.ndarray] | None = None,
    device: str | None = None,
) -> Path:
    """Train the model ``spec`` describes into ``out_dir``; resumes from its checkpoint there."""
    spec = check_spec(spec)
    out_dir = Path(out_dir)
    write_json(out_dir / "spec.json", spec)
    if spec["type"] == "unet":
        from patchwork.unet import UNetParams, train_unet

        return train_unet(
            UNetParams.from_dict(spec["params"]),
            list(images),
            list(labels),
            out_dir,
            seed=seed,
            device=device,
            val_images=list(val_images) if val_images else None,
            val_labels=list(val_labels) if val_labels else None,
        )
    raise AssertionError(spec["type"])  # check_spec admits only MODEL_TYPES


def predict_model(model_path: Path, image: np.ndarray, device: str | None = None) -> np.ndarray:
    """Foreground probability ``[X, Y, Z]`` of a trained model for a preprocessed image ``[C, X, Y, Z]``."""
    model_path = Path(model_path)
    spec = read_json(model_path.parent / "spec.json")
    if spec["type"] == "unet":
        from patchwork.unet import predict_unet

        return predict_unet(model_path, image, device=device)
    raise PatchworkError(f"{model_path.parent / 'spec.json'}: unknown model type {spec['type']!r}")

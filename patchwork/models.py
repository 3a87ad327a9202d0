"""Model registry: one place that maps a model spec of the config's ``models:`` list to its code.

A spec is ``{"name": str, "type": "unet" | "dnp", "params": {...}}``. Training writes the spec next
to the weights (``spec.json``) so that prediction needs only the model file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from patchwork.errors import PatchworkError
from patchwork.io import read_json, write_json

MODEL_TYPES = ("unet", "dnp")


def _params_class(model_type: str) -> Any:
    """The settings dataclass of a model type (imported lazily: torch loads only when needed)."""
    if model_type == "unet":
        from patchwork.unet import UNetParams

        return UNetParams
    from patchwork.dnp.params import DNPParams

    return DNPParams


def parse_spec(spec: dict[str, Any], source: str = "model spec") -> tuple[dict[str, Any], Any]:
    """Validate a model spec (name, known type, params) once: the spec normalised and its parsed settings
    (:class:`~patchwork.unet.UNetParams` or :class:`~patchwork.dnp.params.DNPParams`)."""
    if not isinstance(spec, dict) or "name" not in spec or "type" not in spec:
        raise PatchworkError(f"{source}: a model needs 'name' and 'type' (got {spec!r})")
    if spec["type"] not in MODEL_TYPES:
        known = ", ".join(MODEL_TYPES)
        raise PatchworkError(
            f"{source}: model {spec['name']!r} has unknown type {spec['type']!r} (known: {known})"
        )
    params = dict(spec.get("params") or {})
    try:
        parsed = _params_class(spec["type"]).from_dict(params)
    except PatchworkError as err:
        raise PatchworkError(problems=[f"{source}: {problem}" for problem in err.problems]) from None
    return {"name": str(spec["name"]), "type": spec["type"], "params": params}, parsed


def train_model(
    spec: dict[str, Any],
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    affines: Sequence[np.ndarray],
    out_dir: Path,
    seed: int,
    val: tuple[Sequence[np.ndarray], Sequence[np.ndarray], Sequence[np.ndarray]] | None = None,
    device: str | None = None,
) -> Path:
    """Train the model ``spec`` describes into ``out_dir`` (resuming from its checkpoint there).

    ``images`` [C, X, Y, Z] are preprocessed, ``labels`` [X, Y, Z] integer, ``affines`` their 4×4
    grids; ``val`` is an optional ``(images, labels, affines)`` validation set for the log.
    """
    spec, params = parse_spec(spec)
    out_dir = Path(out_dir)
    write_json(out_dir / "spec.json", spec)
    val_images, val_labels, val_affines = (list(v) for v in val) if val else (None, None, None)
    shared = {"seed": seed, "device": device, "val_images": val_images, "val_labels": val_labels}
    if spec["type"] == "unet":
        from patchwork.unet import train_unet

        return train_unet(params, list(images), list(labels), out_dir, **shared)
    from patchwork.dnp.train import train_dnp

    return train_dnp(
        params, list(images), list(labels), list(affines), out_dir, val_affines=val_affines, **shared
    )


def predict_model(
    model_path: Path, image: np.ndarray, affine: np.ndarray, device: str | None = None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray | None]:
    """Foreground probability ``[X, Y, Z]`` of a trained model for a preprocessed ``image`` [C, X, Y, Z]
    in the grid ``affine``, and its per-voxel spread where the model gives one (DNP), else ``None``."""
    model_path = Path(model_path)
    spec_path = model_path.parent / "spec.json"
    model_type = read_json(spec_path).get("type")
    if model_type == "unet":
        from patchwork.unet import predict_unet

        return predict_unet(model_path, image, device=device), None
    if model_type == "dnp":
        from patchwork.dnp.predict import predict_dnp

        return predict_dnp(model_path, image, affine, device=device, seed=seed)
    raise PatchworkError(f"{spec_path}: unknown model type {model_type!r}")

"""Trained-model and checkpoint files shared by every model type: device choice, checked loading, identity.

A model file is a plain dict that loads with ``torch.load(path, weights_only=True)``; its ``"format"`` names
the model type (``"patchwork-unet"``, ``"patchwork-dnp"``, ...) and ``"version"`` the layout. Every problem
reading one becomes a :class:`~patchwork.errors.PatchworkError` naming the file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from patchwork.errors import PatchworkError

log = logging.getLogger(__name__)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def read_model(path: Path, model_format: str, version: int, what: str) -> dict[str, Any]:
    """Load and check a ``model.pt`` dict; every problem becomes a :class:`PatchworkError` naming the file.

    ``model_format``/``version``/``what`` let other trained-model and checkpoint files (Deep Neural
    Patchworks) be read with the same checks.
    """
    path = Path(path)
    if not path.exists():
        raise PatchworkError(f"{path}: file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise PatchworkError(f"{path}: cannot read model file ({type(err).__name__}: {err})") from None
    if not isinstance(obj, dict) or obj.get("format") != model_format or "state_dict" not in obj:
        raise PatchworkError(f"{path}: not a patchwork {what} file")
    if obj.get("version") != version:
        raise PatchworkError(f"{path}: {what} file version {obj.get('version')!r}, this code reads {version}")
    return obj


def check_same_training(path: Path, obj: dict[str, Any], identity: dict[str, Any]) -> None:
    """Refuse a checkpoint written by another training: every ``identity`` entry must match ``obj``'s."""
    differ = [key for key, value in identity.items() if obj.get(key) != value]
    if differ:
        raise PatchworkError(
            f"{path}: written by a training with different {', '.join(differ)}; delete it to start over"
        )


def finished_model(
    path: Path,
    params: dict[str, Any],
    seed: int,
    model_format: str,
    version: int,
    what: str,
) -> bool:
    """Whether ``path`` holds the finished model of this very training (same ``params`` dict and ``seed``).

    An unreadable file is trained again (with a warning); a readable one of other settings is an error, so
    a finished model is never overwritten silently.
    """
    if not path.exists():
        return False
    try:
        obj = read_model(path, model_format, version, what)
    except PatchworkError as err:
        log.warning("%s; training again", err)
        return False
    if obj["params"] != params or obj["seed"] != seed:
        raise PatchworkError(
            f"{path}: exists but was trained with other params or seed; delete it to retrain"
        )
    return True

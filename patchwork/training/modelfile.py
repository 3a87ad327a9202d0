"""Trained-model and checkpoint files shared by every model type: device choice, checked loading, identity.

A model file is a plain dict that loads with ``torch.load(path, weights_only=True)``; its ``"format"`` names
the model type (``"patchwork-unet"``, ``"patchwork-dnp"``, ...) and ``"version"`` the layout. Every problem
reading one becomes a one-line :class:`~patchwork.errors.PatchworkError` naming the file.

A checkpoint records the identity of its training (settings, seed, and the training data: counts and a
SHA-256 of the arrays, :func:`content_digest`) and is resumed only by a training of the same identity, so a
checkpoint is never continued on data that changed, even when another normalisation kept every count.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from patchwork.errors import PatchworkError
from patchwork.io import atomic_path, remove_partials

log = logging.getLogger(__name__)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def write_model_file(path: Path, obj: dict[str, Any]) -> None:
    """``torch.save`` a model or checkpoint dict to ``path`` atomically (:func:`patchwork.io.atomic_path`).

    The dict goes through an open file, not a file name: given a name, ``torch.save`` names the zip archive's
    folder after it (here the random temporary name), so the same weights would give other bytes.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as stream:
        torch.save(obj, stream)


def _read_dict(path: Path, model_format: str, version: int, what: str) -> dict[str, Any]:
    """Load ``path`` (``weights_only``) and check that it is a dict of ``model_format`` and ``version``."""
    if not path.exists():
        raise PatchworkError(f"{path}: file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for truncated or foreign files, some over many lines
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise PatchworkError(f"{path}: cannot read model file ({type(err).__name__}: {first})") from None
    if not isinstance(obj, dict) or obj.get("format") != model_format:
        raise PatchworkError(f"{path}: not a patchwork {what} file")
    if obj.get("version") != version:
        raise PatchworkError(f"{path}: {what} file version {obj.get('version')!r}, this code reads {version}")
    return obj


def read_model(path: Path, model_format: str, version: int, what: str) -> dict[str, Any]:
    """Load and check a ``model.pt`` dict; every problem becomes a :class:`PatchworkError` naming the file.

    ``model_format``/``version``/``what`` let other trained-model and checkpoint files (Deep Neural
    Patchworks) be read with the same checks.
    """
    path = Path(path)
    obj = _read_dict(path, model_format, version, what)
    if "state_dict" not in obj:
        raise PatchworkError(f"{path}: not a patchwork {what} file")
    return obj


def content_digest(arrays: Iterable[np.ndarray | torch.Tensor]) -> str:
    """Hex SHA-256 over the dtype, shape and bytes of each array in turn (CPU tensors or NumPy arrays).

    A training's data identity: equal exactly when the arrays are equal bit for bit, in the same order
    (about 1 s per GB).
    """
    digest = hashlib.sha256()
    for array in arrays:
        data = np.ascontiguousarray(np.asarray(array))
        digest.update(f"{data.dtype.str}{data.shape}".encode())
        digest.update(data.reshape(-1).view(np.uint8))
    return digest.hexdigest()


def check_same_training(path: Path, obj: dict[str, Any], identity: dict[str, Any]) -> None:
    """Refuse a checkpoint written by another training: every ``identity`` entry must match ``obj``'s."""
    differ = [key for key, value in identity.items() if obj.get(key) != value]
    if differ:
        raise PatchworkError(
            f"{path}: written by a training with different {', '.join(differ)}; delete it to start over"
        )


def read_checkpoint(
    path: Path, checkpoint_format: str, version: int, what: str, identity: dict[str, Any]
) -> dict[str, Any] | None:
    """The checkpoint at ``path`` of the training ``identity`` describes, or ``None`` when there is none.

    Temporary files that a killed job left while writing it are removed first. An unreadable or foreign
    file, or one of another training, is an error (one line) that names the file to delete; it is not
    silently replaced, since it may hold days of training.
    """
    path = Path(path)
    for partial in remove_partials(path):
        log.info("removed %s (a checkpoint write that was killed)", partial)
    if not path.exists():
        return None
    try:
        obj = _read_dict(path, checkpoint_format, version, what)
    except PatchworkError as err:
        raise PatchworkError(f"{err.problems[0]}; delete it to start this training over") from None
    check_same_training(path, obj, identity)
    return obj


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

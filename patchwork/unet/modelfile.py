"""The trained-model file ``model.pt``: what it holds, how it is written and read back.

``model.pt`` is a plain dict that loads with ``torch.load(path, weights_only=True)``::

    {"format": "patchwork-unet", "version": 1, "params": UNetParams.to_dict(),
     "in_channels": int, "seed": int, "state_dict": {name: tensor}}
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from patchwork.errors import PatchworkError
from patchwork.io import atomic_path
from patchwork.unet.network import UNet3D
from patchwork.unet.params import UNetParams

log = logging.getLogger(__name__)

MODEL_FORMAT = "patchwork-unet"
MODEL_VERSION = 1


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` if given, else CUDA when available, else CPU."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def build_network(params: UNetParams, in_channels: int) -> UNet3D:
    """The :class:`UNet3D` that ``params`` describes (weights not yet initialised)."""
    return UNet3D(
        in_channels=in_channels,
        out_channels=params.out_channels,
        base_features=params.base_features,
        max_features=params.max_features,
        n_stages=params.n_stages,
        deep_supervision=params.deep_supervision,
    )


def save_model(path: Path, params: UNetParams, in_channels: int, seed: int, model: torch.nn.Module) -> None:
    """Write ``model.pt`` atomically (weights moved to CPU so the file loads anywhere)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    obj = {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "params": params.to_dict(),
        "in_channels": in_channels,
        "seed": seed,
        "state_dict": state,
    }
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def read_model(
    path: Path, model_format: str = MODEL_FORMAT, version: int = MODEL_VERSION, what: str = "U-Net model"
) -> dict[str, Any]:
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
    model_format: str = MODEL_FORMAT,
    version: int = MODEL_VERSION,
    what: str = "U-Net model",
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


def load_unet(model_path: Path, device: str | torch.device | None = None) -> tuple[UNet3D, UNetParams]:
    """Network (in eval mode, on ``device``) and settings stored in ``model_path``."""
    obj = read_model(model_path)
    params = UNetParams.from_dict(obj["params"])
    model = build_network(params, int(obj["in_channels"]))
    model.load_state_dict(obj["state_dict"])
    return model.to(resolve_device(device), memory_format=torch.channels_last_3d).eval(), params

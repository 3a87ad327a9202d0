"""The trained-model file ``model.pt``: what it holds, how it is written and read back.

``model.pt`` is a plain dict that loads with ``torch.load(path, weights_only=True)``::

    {"format": "patchwork-unet", "version": 2, "params": UNetParams.to_dict(),
     "in_channels": int, "seed": int, "state_dict": {name: tensor}}
"""

from __future__ import annotations

from pathlib import Path

import torch

from patchwork.models.unet.settings import UNetParams
from patchwork.networks import UNet3D
from patchwork.training.modelfile import read_model, resolve_device, write_model_file

MODEL_FORMAT = "patchwork-unet"
MODEL_VERSION = 2  # 2: the application settings left UNetParams (UNetApply, given at prediction)


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
    write_model_file(path, obj)


def load_unet(model_path: Path, device: str | torch.device | None = None) -> tuple[UNet3D, UNetParams]:
    """Network (in eval mode, on ``device``) and settings stored in ``model_path``."""
    obj = read_model(model_path, MODEL_FORMAT, MODEL_VERSION, "U-Net model")
    params = UNetParams.from_dict(obj["params"])
    model = build_network(params, int(obj["in_channels"]))
    model.load_state_dict(obj["state_dict"])
    return model.to(resolve_device(device), memory_format=torch.channels_last_3d).eval(), params

"""The trained-DNP file ``model.pt``: written once at the end of training, read back for application.

``model.pt`` is a plain dict that loads with ``torch.load(path, weights_only=True)``::

    {"format": "patchwork-dnp", "version": 2, "params": DNPParams.to_dict() (what decides the weights),
     "seed": int, "in_channels": int, "state_dict": {name: tensor}}

A researcher's ``blockCreator``/``finalBlock`` is stored by name (:class:`~.settings.CallableRef`), so the
file holds no code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from patchwork.errors import PatchworkError
from patchwork.models.dnp.model import PatchWorkModel, build_model
from patchwork.models.dnp.settings import DNPParams
from patchwork.training.modelfile import read_model, resolve_device, write_model_file

# version 2: the training settings are stored once (``params``, without ``apply``), with ``in_channels``
MODEL_FORMAT, VERSION = "patchwork-dnp", 2
CHANNELS_LAST = {2: torch.channels_last, 3: torch.channels_last_3d}


def save_model(path: Path, identity: dict[str, Any], model: PatchWorkModel) -> None:
    """Write ``model.pt`` atomically: the training's settings and seed once, the image channels, the weights
    on CPU (loadable with ``weights_only=True``)."""
    obj = {
        "format": MODEL_FORMAT,
        "version": VERSION,
        "params": identity["params"],
        "seed": identity["seed"],
        "in_channels": model.in_channels,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    write_model_file(path, obj)


def load_dnp(model_path: Path, device: str | torch.device | None = None) -> tuple[PatchWorkModel, DNPParams]:
    """The trained model (eval mode, on ``device``: default CUDA if present) and its training settings.

    A researcher's ``blockCreator``/``finalBlock`` is imported by the name stored in the settings, so its
    module must be importable here as it was in training."""
    obj = read_model(Path(model_path), MODEL_FORMAT, VERSION, "DNP model")
    try:
        params = DNPParams.from_dict(obj["params"])
        model = build_model(params, obj["in_channels"])
    except PatchworkError as err:
        raise PatchworkError(problems=[f"{model_path}: {p}" for p in err.problems]) from None
    model.load_state_dict(obj["state_dict"])
    memory_format = CHANNELS_LAST[params.crop.ndim]  # as in training: faster CPU convolutions
    return model.to(resolve_device(device), memory_format=memory_format).eval(), params

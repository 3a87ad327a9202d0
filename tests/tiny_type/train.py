"""Training of the tiny type: the midpoint of the mean foreground and background intensities."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from patchwork.training.modelfile import write_model_file
from patchwork.training.trainlog import plot_curve, write_train_log
from tiny_type.settings import TinyParams

MODEL_FORMAT = "tiny"


def train_tiny(params: TinyParams, images: Any, labels: Any, *where: Any, **unused: Any) -> Path:
    """Write ``model.pt`` (the threshold), ``train_log.tsv`` and ``curve.png`` into ``out_dir`` (the
    registry's train signature: ``where`` is ``affines, out_dir, seed``; device and validation unused)."""
    _, out_dir, _ = where
    foreground = [
        float(image[0][label > 0].mean()) for image, label in zip(images, labels) if (label > 0).any()
    ]
    background = [float(image[0][label == 0].mean()) for image, label in zip(images, labels)]
    threshold = (np.mean(foreground or background) + np.mean(background)) / 2
    path = Path(out_dir) / "model.pt"
    write_model_file(
        path, {"format": MODEL_FORMAT, "params": params.to_dict(), "threshold": float(threshold)}
    )
    rows = [
        {
            "iteration": 1,
            "train_loss": 0.0,
            "val_loss": float("nan"),
            "val_dice": float("nan"),
            "lr": 0.0,
            "seconds": 0.0,
        }
    ]
    write_train_log(Path(out_dir) / "train_log.tsv", rows)
    plot_curve(Path(out_dir) / "curve.png", rows, "tiny")
    return path

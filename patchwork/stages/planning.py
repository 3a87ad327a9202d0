"""The planning stage: ``results/plans.json`` from the cohort's fingerprint and a memory budget
(:mod:`patchwork.planning`, nnU-Net's self-configuration)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from patchwork.config import PlanningSettings, PreprocessSettings
from patchwork.io import read_json, write_json

log = logging.getLogger(__name__)


def budget(settings: PlanningSettings, device: str | None) -> dict[str, Any]:
    """The budget of one training step: CUDA when ``device`` asks for it or (``None``) a GPU is here, with
    ``memory_gb`` or else the GPU's whole memory; otherwise the CPU with ``memory_gb`` or
    ``cpu_memory_gb``."""
    import torch

    cuda = device.startswith("cuda") if device else torch.cuda.is_available()
    if not cuda:
        return {"device": "cpu", "memory_gb": settings.memory_gb or settings.cpu_memory_gb}
    if settings.memory_gb is not None:
        return {"device": "cuda", "memory_gb": settings.memory_gb}
    index = torch.device(device or "cuda").index or 0
    return {"device": "cuda", "memory_gb": torch.cuda.get_device_properties(index).total_memory / 2**30}


def plan(
    fingerprint_json: Path,
    settings: PlanningSettings,
    preprocess: PreprocessSettings,
    device: str | None,
    out: Path,
) -> dict[str, Any]:
    """Write and return the plans of every model type for the cohort of ``fingerprint_json``, at the
    target spacing preprocessing uses (the config's, else nnU-Net's rule)."""
    from patchwork.models.plans import plan as make_plans

    fingerprint = read_json(Path(fingerprint_json))
    spacing = preprocess.resolved(fingerprint).target_spacing
    plans = make_plans(fingerprint, budget(settings, device), spacing)
    write_json(Path(out), plans)
    log.info("plans for %s at %s mm: %s", plans["budget"], plans["target_spacing"], plans["models"])
    return plans

"""What training the tiny type costs: one pass over the cases."""

from __future__ import annotations

from patchwork.training.cost import TrainingCost, cases_bytes
from tiny_type.settings import TinyParams


def training_cost(params: TinyParams, n_cases: int, case_voxels: int, channels: int) -> TrainingCost:
    """One step over one case at a time: 4 bytes a voxel of each channel."""
    return TrainingCost(
        steps=n_cases, step_voxels=case_voxels, held_bytes=cases_bytes(4 * channels, 1, case_voxels)
    )

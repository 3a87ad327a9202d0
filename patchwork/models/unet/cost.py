"""What training a U-Net costs, without torch (the registry's ``cost`` of the ``unet`` type).

Steps are ``iterations``, each on ``batch_size`` patches of ``patch_size``; the trainer holds about
:data:`BYTES_PER_VOXEL` bytes per voxel of each training case in use (the memory-mapped image and label,
and the foreground voxels the sampler keeps), nothing else that grows with the cohort.

Example::

    training_cost(UNetParams(iterations=300), n_cases=40, case_voxels=80**3, channels=1).seconds(False)
"""

from __future__ import annotations

from math import prod

from patchwork.models.unet.settings import UNetParams
from patchwork.training.cost import TrainingCost, cases_bytes

BYTES_PER_VOXEL = 5


def training_cost(params: UNetParams, n_cases: int, case_voxels: int, channels: int) -> TrainingCost:
    """The cost of training ``params`` on ``n_cases`` cases of ``case_voxels`` voxels and ``channels``
    channels (see the module docstring)."""
    return TrainingCost(
        steps=params.iterations,
        step_voxels=params.batch_size * prod(params.patch_size),
        held_bytes=cases_bytes(BYTES_PER_VOXEL, n_cases, case_voxels),
    )

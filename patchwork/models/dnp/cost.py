"""What training a Deep Neural Patchwork costs, without torch (the registry's ``cost`` of the ``dnp`` type).

Steps are ``epochs x num_its``, each on ``batch_size`` trees of one patch per level. Besides up to
:data:`BYTES_PER_VOXEL` bytes per voxel of each training case in use (image, label channels, the prepared
volume's sites; the measured 17-25 B, the upper end), the trainer holds its prepared volumes (up to
``volume_cache_mb``, twice with ``parallel`` cropping) and the trees of an outer iteration: the fresh ones
and the hard-mining pool, ``num_patches`` from each of the images a set draws from (all, or
``cases_per_iteration``), each tree the image channels, a label and a prediction channel per level.

Example::

    training_cost(DNPParams(), n_cases=40, case_voxels=80**3, channels=1).memory_bytes()
"""

from __future__ import annotations

from math import prod

from patchwork.models.dnp.settings import DNPParams
from patchwork.training.cost import TrainingCost, cases_bytes

BYTES_PER_VOXEL = 25


def tree_voxels(params: DNPParams) -> int:
    """Input voxels of one tree: a patch per level (one size for every level, or one per level)."""
    return sum(prod(size) for size in params.crop.scheme.sizes(params.crop.depth))


def training_cost(params: DNPParams, n_cases: int, case_voxels: int, channels: int) -> TrainingCost:
    """The cost of training ``params`` on ``n_cases`` cases of ``case_voxels`` voxels and ``channels``
    channels (see the module docstring)."""
    train, tree = params.train, tree_voxels(params)
    cache = train.volume_cache_mb * 1e6 * (2 if train.parallel else 1)
    images = min(n_cases, train.cases_per_iteration or n_cases)
    trees = 2 * images * train.num_patches * tree * (channels + 2) * 4  # fresh trees + hard-mined pool
    return TrainingCost(
        steps=train.epochs * train.num_its,
        step_voxels=train.batch_size * tree,
        held_bytes=cases_bytes(BYTES_PER_VOXEL, n_cases, case_voxels) + cache + trees,
    )

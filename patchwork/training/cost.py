"""What one training run costs, estimated without torch: the memory it holds and its wall time.

The workflow requests memory and time for each training job from these estimates (``mem_mb``,
``runtime``; ``workflow/resources.py``); every model type gives its :class:`TrainingCost` from its
(planned) settings and the cohort (the registry row's ``cost``). The constants are generous round numbers,
not fitted: a run's ``results/benchmarks/train/*.tsv`` (``max_rss``, ``s``) are what to calibrate them
against.

* memory: what the trainer holds (``held_bytes``: the training cases in use, :func:`cases_bytes`, and a
  type's own caches and tree sets) and :data:`STEP_BYTES` for one step's tensors;
* time: ``steps`` optimiser steps of ``step_voxels`` input voxels at the device's throughput
  (:data:`VOXELS_PER_S`), plus 25 % (validation, checkpoints) and :data:`START_SECONDS`.

Example::

    cost = TrainingCost(steps=250, step_voxels=2 * 48**3, held_bytes=cases_bytes(5, 16, 80**3))
    cost.memory_bytes(), cost.seconds(on_gpu=False)
"""

from __future__ import annotations

from dataclasses import dataclass

from patchwork.training.cases import OPEN_CASES

STEP_BYTES = 2 * 2**30  # one step's tensors (activations, gradients, optimiser state), an upper guess
VOXELS_PER_S = {"cpu": 2e5, "gpu": 2e7}  # input voxels per second of forward + backward
START_SECONDS = 120.0  # process start-up, reading the cases, writing the model


@dataclass(frozen=True)
class TrainingCost:
    """A training run: ``steps`` optimiser steps that each see ``step_voxels`` input voxels (batch x patch),
    and ``held_bytes`` held besides one step's tensors."""

    steps: int
    step_voxels: int
    held_bytes: float

    def memory_bytes(self) -> float:
        """Bytes held while training: what it holds and one step's tensors."""
        return self.held_bytes + STEP_BYTES

    def seconds(self, on_gpu: bool) -> float:
        """Wall time on a GPU or a CPU."""
        throughput = VOXELS_PER_S["gpu" if on_gpu else "cpu"]
        return 1.25 * self.steps * self.step_voxels / throughput + START_SECONDS


def cases_bytes(bytes_per_voxel: float, n_cases: int, case_voxels: int) -> float:
    """Bytes of the training cases in use: at most :data:`~patchwork.training.cases.OPEN_CASES` of the
    ``n_cases``, each ``case_voxels`` voxels (its resampled grid) of ``bytes_per_voxel``."""
    return bytes_per_voxel * case_voxels * min(n_cases, OPEN_CASES)

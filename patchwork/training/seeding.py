"""Random streams derived from ``(seed, index, stream)``, so no RNG state has to be saved.

Every random draw of a training run (weight initialisation, patch positions, augmentation of
iteration ``i``, validation patches) comes from a generator seeded by ``numpy.random.SeedSequence``
over ``(seed, index, stream)``. A run resumed at iteration ``i`` therefore draws exactly what an
uninterrupted run draws, and distinct streams are statistically independent.
"""

from __future__ import annotations

import numpy as np
import torch

STREAM_INIT = 0
STREAM_PATCHES = 1
STREAM_AUGMENT = 2
STREAM_VALIDATION = 3
STREAM_FOREGROUND_SUBSET = 4


def numpy_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    """NumPy generator for draw ``index`` of ``stream`` under ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([seed, index, stream]))


def torch_generator(seed: int, index: int, stream: int) -> torch.Generator:
    """CPU ``torch.Generator`` for draw ``index`` of ``stream`` under ``seed``."""
    state = np.random.SeedSequence([seed, index, stream]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 31 | int(state[1]) >> 1)

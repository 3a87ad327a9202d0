"""The tiny type plans nothing: it has no size to fit a memory budget."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def plan_tiny(
    median_shape: Sequence[float],
    spacing: Sequence[float],
    n_train: int,
    in_channels: int,
    n_labels: int,
    device: str,
    usable: int,
) -> dict[str, Any]:
    """No planned params; the estimate of a step is nothing."""
    return {"params": {}, "derived": {"memory_gb": 0.0}}

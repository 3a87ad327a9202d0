"""Learning-rate schedules both trainers share: a linear warm-up, then poly, cosine or no decay.

Step ``i`` of ``total`` (0-based) with ``w`` warm-up steps and base rate ``lr``::

    i < w:   lr_i = lr (i + 1) / w                          (linear warm-up)
    then     t = (i - w) / (total - w)  in [0, 1)
             poly:     lr_i = lr (1 - t) ** 0.9              (nnU-Net)
             cosine:   lr_i = lr (1 + cos(pi t)) / 2         (SGDR without restarts)
             constant: lr_i = lr

The warm-up keeps the first steps of a freshly initialised network from jumping into the all-background
solution that a rare foreground invites; the decay lets the last steps settle, so the weights at the end of
training do not depend on where the last noisy step happened to land. Only the step number enters, so a
resumed training follows the same curve.
"""

from __future__ import annotations

import math

SCHEDULES = ("poly", "cosine", "constant")
POLY_EXPONENT = 0.9


def learning_rate(base: float, step: int, total: int, schedule: str = "poly", warmup: int = 0) -> float:
    """The learning rate of ``step`` (0-based) of ``total`` (see the module docstring)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule {schedule!r}: expected one of {', '.join(SCHEDULES)}")
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(total - warmup, 1)
    if schedule == "poly":
        return base * max(1.0 - t, 0.0) ** POLY_EXPONENT
    if schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))
    return base

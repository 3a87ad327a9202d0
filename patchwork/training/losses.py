"""Soft Dice, the overlap score both model types train on.

With predicted probabilities ``p`` and one-hot targets ``t`` of a class, summed over voxels (and, for
"batch Dice", over every sample of the batch)::

    TP = Σ p t,  FP = Σ p (1 - t),  FN = Σ (1 - p) t,
    Dice = (2 TP + ε) / (2 TP + FP + FN + ε),  ε = 1e-5.
"""

from __future__ import annotations

import torch

SMOOTH = 1e-5


def soft_dice(prob: torch.Tensor, target: torch.Tensor, batch: bool = True) -> torch.Tensor:
    """Soft Dice per channel: ``prob`` and ``target`` are ``[B, K, ...]``.

    ``batch=True`` sums over the whole batch and returns ``[K]``; ``batch=False`` scores every sample on
    its own and returns ``[B, K]`` (Deep Neural Patchworks rank patches by it for hard mining).
    """
    dims = [*([0] if batch else []), *range(2, prob.ndim)]
    tp = (prob * target).sum(dims)
    fp = (prob * (1 - target)).sum(dims)
    fn = ((1 - prob) * target).sum(dims)
    return (2 * tp + SMOOTH) / (2 * tp + fp + fn + SMOOTH).clamp_min(1e-8)

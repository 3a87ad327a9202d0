"""Soft Dice, the overlap score both model types train on.

With predicted probabilities ``p`` and one-hot targets ``t`` of a class, summed over voxels (and, for
"batch Dice", over every sample of the batch)::

    TP = Σ p t,  FP = Σ p (1 - t),  FN = Σ (1 - p) t,
    Dice = (2 TP + ε) / (2 TP + FP + FN + ε),  ε = 1e-5.

A batch's Dice is ruled by its large lesions: a lesion of 10 voxels beside one of 10,000 moves it by 0.1 %.
The lesion-wise Dice of "blob loss" (Kofler et al., *blob loss: instance imbalance aware loss functions for
semantic segmentation*, IPMI 2023) scores every lesion ``k`` (a 26-connected component of the target) on
its own, against the background only (the other lesions are left out, so a prediction on one lesion is no
false positive for another)::

    TP_k = Σ_{v ∈ k} p,  FN_k = Σ_{v ∈ k} (1 - p),  FP = Σ_{v ∈ background} p,
    lesion Dice = mean_k (2 TP_k + ε) / (2 TP_k + FP + FN_k + ε),

so every lesion counts once in the mean, whatever its size. Its share of the gradient is not equal (the
background's FP enters every lesion's score), but a small lesion gets several times the share batch Dice
gives it.
"""

from __future__ import annotations

import numpy as np
import torch

from patchwork.postprocessing.components import label_components

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


def lesion_components(labels: torch.Tensor) -> torch.Tensor:
    """The 26-connected lesions (label > 0) of every sample of ``labels [B, ...]``, numbered ``1..n_b`` per
    sample (0 = background), as an int64 tensor on the labels' device. Labelled on the CPU (SciPy)."""
    found = np.stack([label_components(sample > 0)[0] for sample in labels.cpu().numpy()])
    return torch.from_numpy(found.astype(np.int64)).to(labels.device)


def lesion_dice(prob: torch.Tensor, components: torch.Tensor) -> torch.Tensor:
    """Mean lesion-wise soft Dice (module docstring) of the foreground probability ``prob [B, ...]``
    against ``components [B, ...]`` (:func:`lesion_components`); 1 when the batch holds no lesion, so
    ``1 - lesion_dice`` adds nothing to its loss."""
    scores = []
    for p, found in zip(prob.flatten(1), components.flatten(1), strict=True):
        n = int(found.max())
        if n == 0:
            continue
        onehot = torch.nn.functional.one_hot(found, n + 1).to(p.dtype)  # [V, n + 1], column 0 background
        inside = p @ onehot  # Σ p over each lesion (and, in column 0, the background: FP)
        tp, fp, fn = inside[1:], inside[0], onehot[:, 1:].sum(0) - inside[1:]
        scores.append((2 * tp + SMOOTH) / (2 * tp + fp + fn + SMOOTH))
    if not scores:
        return prob.new_ones(())
    return torch.cat(scores).mean()

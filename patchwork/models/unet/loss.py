"""Dice + cross-entropy loss, nnU-Net style, for a sigmoid or a softmax head.

Soft Dice is computed over the whole batch at once ("batch Dice"): with predicted probabilities
``p`` and one-hot targets ``t`` of a class, summed over every sample and voxel,

    TP = Σ p t,  FP = Σ p (1 - t),  FN = Σ (1 - p) t,
    Dice = (2 TP + ε) / (2 TP + FP + FN + ε),  ε = 1e-5,

so a batch whose patches happen to hold no foreground does not produce a noisy per-sample score.

* ``head="sigmoid"``: one logit channel, target ``label > 0``;
  ``loss = BCE-with-logits + (1 - Dice(sigmoid))``.
* ``head="softmax"``: ``K`` logit channels, target the label map;
  ``loss = CE + (1 - mean_{c >= 1} Dice_c(softmax))`` (background left out of the Dice, as nnU-Net).

A perfect, confident prediction gives a loss near 0. With deep supervision the losses of the
outputs at full, 1/2, 1/4, ... resolution are weighted ``1, 1/2, 1/4, ...`` (normalised to sum 1),
against the label map subsampled by nearest neighbour (every ``2**i``-th voxel). With
``lesion_dice_weight`` ``w > 0`` training adds ``w`` :func:`lesion_dice_loss` of the full-resolution output.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from patchwork.models.unet.predict import foreground_probability
from patchwork.training.losses import lesion_components, lesion_dice, soft_dice


def dice_ce_loss(logits: torch.Tensor, labels: torch.Tensor, head: str) -> torch.Tensor:
    """Dice + (B)CE of ``logits [B, K, ...]`` against integer ``labels [B, ...]`` (scalar tensor)."""
    logits = logits.float()
    if head == "sigmoid":
        target = (labels > 0).to(logits.dtype)[:, None]
        bce = F.binary_cross_entropy_with_logits(logits, target)
        return bce + 1 - soft_dice(torch.sigmoid(logits), target).mean()
    target = labels.long()
    ce = F.cross_entropy(logits, target)
    onehot = F.one_hot(target, logits.shape[1]).movedim(-1, 1).to(logits.dtype)
    return ce + 1 - soft_dice(torch.softmax(logits, dim=1), onehot)[1:].mean()


def deep_supervision_loss(outputs: Sequence[torch.Tensor], labels: torch.Tensor, head: str) -> torch.Tensor:
    """Weighted sum of :func:`dice_ce_loss` over outputs at full, 1/2, 1/4, ... resolution."""
    weights = torch.tensor([0.5**i for i in range(len(outputs))])
    weights = weights / weights.sum()
    total = torch.zeros((), device=labels.device)
    for i, (w, logits) in enumerate(zip(weights.tolist(), outputs, strict=True)):
        step = 2**i
        total = total + w * dice_ce_loss(logits, labels[:, ::step, ::step, ::step], head)
    return total


def lesion_dice_loss(logits: torch.Tensor, labels: torch.Tensor, head: str) -> torch.Tensor:
    """``1 -`` blob loss's lesion-wise Dice (:func:`patchwork.training.losses.lesion_dice`) of the foreground
    probability of ``logits [B, K, ...]`` over the lesions (label > 0) of ``labels [B, ...]``."""
    prob = foreground_probability(logits.float(), head, dim=1)
    return 1 - lesion_dice(prob, lesion_components(labels))

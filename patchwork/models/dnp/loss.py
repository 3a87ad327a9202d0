"""Per-level losses of a patchwork with don't-care voxels: Dice, cross-entropy, or both.

Targets are label channels ``t`` [N, L, *s] (float, 1 = label present) whose don't-care voxels are NaN.
The voxel mask ``m`` is 1 where every channel is finite; NaNs are then replaced by 0 so they never reach a
gradient. With ``p`` the probabilities (sigmoid per label, or softmax over ``L + 1`` classes with the one-hot
class target ``y``, class 0 = no label):

* ``'ce'``: ``sum_v m_v ce_v / sum_v m_v`` with ``ce_v`` the binary cross-entropy averaged over labels
  (sigmoid) or the cross-entropy of the class (softmax);
* ``'dice'``: ``1 - mean_k Dice_k`` with the soft Dice of :func:`patchwork.training.losses.soft_dice` on
  ``(m p, m y)`` (labels for sigmoid, foreground classes for softmax), so masked voxels add nothing;
* ``'dice+ce'``: their sum;
* with ``lesion_dice_weight`` ``w > 0``, ``w (1 - lesion Dice)`` is added on every level: blob loss's
  lesion-wise Dice (:mod:`patchwork.training.losses`) over the lesions of each patch, so a small lesion
  counts as much as a large one.

:func:`level_loss` scores a batch (Dice summed over the batch, as the U-Net baseline); :func:`patch_losses`
scores each patch on its own (the ranking of hard mining). :func:`patch_f1` is the per-patch hard F1.

The training takes any :data:`LevelLoss` ``loss(pred, target, level) -> scalar`` (``pred`` the prediction
logits [N, P, *s] of level ``level``, ``target`` its label channels [N, L, *s] with NaN = don't care);
:class:`ConfiguredLoss` is the settings' one. Hard mining ranks trees by :func:`patch_scores`: a loss's own
``per_patch(pred, target, level) -> [N]`` if it has one, else the loss of every patch on its own.

Example::

    def weighted_bce(pred, target, level):  # a researcher's loss for sigmoid heads
        care = torch.isfinite(target)
        return F.binary_cross_entropy_with_logits(pred[care], target[care], pos_weight=torch.tensor(5.0))

    train_dnp(params, images, labels, affines, out_dir, seed=0, loss=weighted_bce)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from patchwork.training.losses import lesion_components, lesion_dice, soft_dice

Tensor = torch.Tensor
LevelLoss = Callable[[Tensor, Tensor, int], Tensor]


def _terms(logits: Tensor, targets: Tensor, activation: str) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(p, y, mask, ce)``: ``p``, ``y`` [N, K, *] (softmax: classes >= 1), ``mask``, ``ce`` [N, 1, *]."""
    mask = torch.isfinite(targets).all(dim=1, keepdim=True).to(logits.dtype)
    clean = torch.nan_to_num(targets, nan=0.0).to(logits.dtype)
    if activation == "sigmoid":
        ce = F.binary_cross_entropy_with_logits(logits, clean, reduction="none").mean(dim=1, keepdim=True)
        return torch.sigmoid(logits), clean, mask, ce
    background = (clean.sum(dim=1, keepdim=True) <= 0).to(clean.dtype)
    index = torch.cat([background, clean], dim=1).argmax(dim=1)
    ce = F.cross_entropy(logits, index, reduction="none")[:, None]
    onehot = F.one_hot(index, logits.shape[1]).movedim(-1, 1).to(logits.dtype)
    return torch.softmax(logits, dim=1)[:, 1:], onehot[:, 1:], mask, ce


def _combine(kind: str, ce: Tensor, dice: Tensor) -> Tensor:
    """``'ce'``, ``'dice'`` (``1 - dice``) or their sum."""
    if kind == "ce":
        return ce
    if kind == "dice":
        return 1.0 - dice
    return ce + 1.0 - dice


def level_loss(logits: Tensor, targets: Tensor, activation: str, kind: str) -> Tensor:
    """Scalar loss of a batch: masked mean cross-entropy and batch soft Dice (module docstring)."""
    p, y, mask, ce = _terms(logits.float(), targets, activation)
    ce_mean = (ce * mask).sum() / mask.sum().clamp(min=1.0)
    return _combine(kind, ce_mean, soft_dice(p * mask, y * mask).mean())


def patch_losses(logits: Tensor, targets: Tensor, activation: str, kind: str) -> Tensor:
    """Loss of every patch on its own, ``[N]`` (per-patch mean cross-entropy and soft Dice)."""
    p, y, mask, ce = _terms(logits.float(), targets, activation)
    dims = tuple(range(1, ce.ndim))
    ce_mean = (ce * mask).sum(dims) / mask.sum(dims).clamp(min=1.0)
    return _combine(kind, ce_mean, soft_dice(p * mask, y * mask, batch=False).mean(dim=1))


def level_lesion_dice(logits: Tensor, targets: Tensor, activation: str) -> Tensor:
    """Lesion-wise soft Dice (:func:`patchwork.training.losses.lesion_dice`) of a level's foreground (any
    label) over the lesions of every patch; don't-care voxels are neither lesion nor background."""
    p, y, mask, _ = _terms(logits.float(), targets, activation)
    foreground = (p.sum(dim=1) if activation == "softmax" else p.amax(dim=1)) * mask[:, 0]
    lesions = lesion_components((y.amax(dim=1) > 0.5) & (mask[:, 0] > 0))
    return lesion_dice(foreground, lesions)


def patch_f1(logits: Tensor, targets: Tensor, activation: str) -> Tensor:
    """Hard F1 ``2TP / (2TP + FP + FN)`` of every patch over its labels (probability >= 0.5), ``[N]``.

    A patch with neither labels nor predictions scores 1.
    """
    p, y, mask, _ = _terms(logits.float(), targets, activation)
    pred, truth = (p >= 0.5).float() * mask, (y > 0.5).float() * mask
    dims = tuple(range(1, p.ndim))
    tp = (pred * truth).sum(dims)
    wrong = (pred * (1 - truth)).sum(dims) + ((1 - pred) * truth).sum(dims)
    return torch.where(tp + wrong > 0, 2 * tp / (2 * tp + wrong).clamp(min=1e-12), torch.ones_like(tp))


@dataclass(frozen=True)
class ConfiguredLoss:
    """The settings' :data:`LevelLoss`: :func:`level_loss` of kind ``kinds[level]`` under ``activation``
    (``'sigmoid'`` | ``'softmax'``), with :func:`patch_losses` as its ``per_patch``."""

    activation: str
    kinds: Sequence[str]
    lesion_dice_weight: float = 0.0

    def __call__(self, pred: Tensor, target: Tensor, level: int) -> Tensor:
        loss = level_loss(pred, target, self.activation, self.kinds[level])
        if self.lesion_dice_weight > 0:
            loss = loss + self.lesion_dice_weight * (1 - level_lesion_dice(pred, target, self.activation))
        return loss

    def per_patch(self, pred: Tensor, target: Tensor, level: int) -> Tensor:
        """The loss of every patch on its own, ``[N]``."""
        return patch_losses(pred, target, self.activation, self.kinds[level])


def patch_scores(loss: LevelLoss, pred: Tensor, target: Tensor, level: int) -> Tensor:
    """The loss of every patch, ``[N]``: ``loss.per_patch`` where defined, else ``loss`` patch by patch."""
    per_patch = getattr(loss, "per_patch", None)
    if per_patch is not None:
        return per_patch(pred, target, level)
    return torch.stack(
        [loss(pred[i : i + 1], target[i : i + 1], level).reshape(()) for i in range(len(pred))]
    )

"""Dice + CE loss: near zero for a perfect prediction, larger for worse ones, both heads."""

from __future__ import annotations

import torch

from patchwork.models.unet.loss import deep_supervision_loss, dice_ce_loss, soft_dice


def _labels() -> torch.Tensor:
    y = torch.zeros(2, 8, 8, 8, dtype=torch.uint8)
    y[0, 2:5, 2:5, 2:5] = 1
    y[1, 4:7, 1:3, 3:6] = 2
    return y


def test_sigmoid_perfect_is_near_zero_and_worse_is_larger():
    y = _labels()
    perfect = torch.where(y > 0, 20.0, -20.0)[:, None]
    assert float(dice_ce_loss(perfect, y, "sigmoid")) < 1e-4
    half = perfect.clone()
    half[1] = -20.0  # misses the second sample's object
    assert float(dice_ce_loss(half, y, "sigmoid")) > 0.1
    assert float(dice_ce_loss(-perfect, y, "sigmoid")) > float(dice_ce_loss(half, y, "sigmoid"))


def test_softmax_perfect_is_near_zero_and_confusion_costs():
    y = _labels()
    onehot = torch.nn.functional.one_hot(y.long(), 3).movedim(-1, 1).float()
    assert float(dice_ce_loss(onehot * 40 - 20, y, "softmax")) < 1e-4
    swapped = onehot[:, [0, 2, 1]] * 40 - 20  # classes 1 and 2 confused
    assert float(dice_ce_loss(swapped, y, "softmax")) > 1.0


def test_soft_dice_is_over_the_whole_batch():
    target = torch.zeros(2, 1, 4, 4, 4)
    target[0, 0, :2] = 1
    prob = target.clone()
    prob[1, 0, 0, 0, 0] = 1  # one false positive in a sample without foreground
    expected = (2 * 32 + 1e-5) / (2 * 32 + 1 + 1e-5)
    assert torch.allclose(soft_dice(prob, target), torch.tensor([expected]))


def test_deep_supervision_weights_and_downsampled_targets():
    y = _labels()
    full = torch.where(y > 0, 20.0, -20.0)[:, None]
    assert torch.allclose(deep_supervision_loss([full], y, "sigmoid"), dice_ce_loss(full, y, "sigmoid"))
    bad_half = torch.zeros(2, 1, 4, 4, 4)
    combined = deep_supervision_loss([full, bad_half], y, "sigmoid")
    expected = (
        2 * dice_ce_loss(full, y, "sigmoid") + dice_ce_loss(bad_half, y[:, ::2, ::2, ::2], "sigmoid")
    ) / 3
    assert torch.allclose(combined, expected)

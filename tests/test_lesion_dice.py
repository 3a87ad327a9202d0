"""Blob loss's lesion-wise Dice: every lesion scored on its own, so a small lesion is not drowned by a large
one; the U-Net and the DNP add it to their losses when ``lesion_dice_weight > 0``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from patchwork.models.dnp.loss import ConfiguredLoss, level_lesion_dice, level_loss
from patchwork.models.unet.settings import UNetParams
from patchwork.models.unet.train import TrainingRun
from patchwork.training.losses import SMOOTH, lesion_components, lesion_dice, soft_dice


def _two_lesions() -> torch.Tensor:
    """One sample with a large lesion (6³ = 216 voxels) and a small one (2 voxels, touching diagonally),
    and one sample without foreground."""
    labels = torch.zeros(2, 16, 16, 16, dtype=torch.uint8)
    labels[0, 1:7, 1:7, 1:7] = 1
    labels[0, 12, 12, 12] = labels[0, 13, 13, 13] = 1  # 26-connected: one lesion
    return labels


def test_components_are_26_connected_and_numbered_per_sample():
    components = lesion_components(_two_lesions())
    assert components.dtype == torch.int64
    assert int(components[0].max()) == 2 and int(components[1].max()) == 0
    assert components[0, 12, 12, 12] == components[0, 13, 13, 13] != components[0, 3, 3, 3]


def test_a_missed_small_lesion_costs_as_much_as_a_missed_large_one():
    labels = _two_lesions()
    components = lesion_components(labels)
    large = components == components[0, 3, 3, 3]
    small = (labels > 0) & ~large
    only_large, only_small = large.float(), small.float()
    # Batch Dice barely notices the small lesion; the lesion-wise Dice gives each lesion half.
    target = (labels > 0).float()[:, None]
    assert float(soft_dice(only_large[:, None], target)) > 0.99
    expected = (1.0 + SMOOTH / (2 + SMOOTH)) / 2  # lesion 1 found (Dice 1), lesion 2 missed (ε / (2 + ε))
    assert float(lesion_dice(only_large, components)) == pytest.approx(expected, abs=1e-6)
    assert float(lesion_dice(only_small, components)) == pytest.approx(
        (1.0 + SMOOTH / (216 + SMOOTH)) / 2, abs=1e-6
    )


def test_other_lesions_are_not_false_positives_but_background_is():
    labels = _two_lesions()
    components = lesion_components(labels)
    perfect = (labels > 0).float()
    assert float(lesion_dice(perfect, components)) == pytest.approx(1.0)
    stray = perfect.clone()
    stray[0, 10, 1, 1] = 1.0  # one background voxel: FP = 1 in both lesions' scores
    small = (2 * 2 + SMOOTH) / (2 * 2 + 1 + SMOOTH)
    large = (2 * 216 + SMOOTH) / (2 * 216 + 1 + SMOOTH)
    assert float(lesion_dice(stray, components)) == pytest.approx((small + large) / 2, rel=1e-6)


def test_a_batch_without_lesions_adds_nothing():
    prob = torch.rand(2, 8, 8, 8, requires_grad=True)
    score = lesion_dice(prob, torch.zeros(2, 8, 8, 8, dtype=torch.int64))
    assert float(score) == 1.0
    assert not score.requires_grad or torch.autograd.grad(score, prob, allow_unused=True)[0] is None


def test_the_gradient_pulls_a_small_lesion_far_harder_than_batch_dice_does():
    labels = _two_lesions()
    components = lesion_components(labels)
    small = (labels > 0) & (components != components[0, 3, 3, 3])

    def small_share(loss_of) -> float:
        """The small lesion's share of the pull (negative gradient) on all lesion voxels."""
        prob = torch.full((2, 16, 16, 16), 0.01, requires_grad=True)
        loss_of(prob).backward()
        pull = -prob.grad
        assert bool((pull[labels > 0] > 0).all())
        return float(pull[small].sum() / pull[labels > 0].sum())

    batch = small_share(lambda p: 1 - soft_dice(p[:, None], (labels > 0).float()[:, None]).mean())
    lesion_wise = small_share(lambda p: 1 - lesion_dice(p, components))
    assert batch == pytest.approx(2 / 218, rel=1e-3)  # its share of the voxels
    assert lesion_wise > 5 * batch


def test_dnp_level_loss_adds_the_weighted_term_and_ignores_dont_care_voxels():
    labels = _two_lesions()
    target = (labels > 0).float()[:, None]
    logits = torch.where(target > 0, 12.0, -12.0)
    logits[0, 0, 12, 12, 12] = logits[0, 0, 13, 13, 13] = -12.0  # the small lesion missed
    plain = ConfiguredLoss("sigmoid", ("dice+ce",))
    weighted = ConfiguredLoss("sigmoid", ("dice+ce",), lesion_dice_weight=0.5)
    assert torch.equal(plain(logits, target, 0), level_loss(logits, target, "sigmoid", "dice+ce"))
    lesion = level_lesion_dice(logits, target, "sigmoid")
    assert float(lesion) == pytest.approx(0.5, abs=1e-3)
    assert torch.allclose(weighted(logits, target, 0), plain(logits, target, 0) + 0.5 * (1 - lesion))
    dont_care = target.clone()
    dont_care[0, 0, 12:14, 12:14, 12:14] = float("nan")  # the missed lesion is don't-care: nothing missed
    assert float(level_lesion_dice(logits, dont_care, "sigmoid")) == pytest.approx(1.0, abs=1e-3)
    softmax = torch.cat([-logits, logits], dim=1)
    assert float(level_lesion_dice(softmax, target, "softmax")) == pytest.approx(float(lesion), abs=1e-3)


@pytest.mark.parametrize("head", ["sigmoid", "softmax"])
def test_unet_step_with_the_lesion_term_trains_other_weights(head: str):
    rng = np.random.default_rng(0)
    images = [rng.normal(size=(1, 16, 16, 16)).astype(np.float32) for _ in range(2)]
    labels = [np.zeros((16, 16, 16), np.uint8) for _ in range(2)]
    labels[0][2:8, 2:8, 2:8] = 1
    labels[1][10, 10, 10] = 1
    weights = []
    for weight in (0.0, 1.0):
        params = UNetParams.from_dict({
            "head": head, "patch_size": [16, 16, 16], "n_stages": 2, "base_features": 4, "iterations": 3,
            "oversample_foreground": 1.0, "lesion_dice_weight": weight, "augment": False,
        })  # fmt: skip
        run = TrainingRun.create(params, images, labels, seed=0, device=torch.device("cpu"))
        losses = [run.step(i, 1e-2) for i in range(2)]
        assert all(np.isfinite(losses))
        weights.append(torch.cat([p.detach().flatten() for p in run.model.parameters()]))
    assert not torch.equal(weights[0], weights[1])


def test_models_trained_before_the_setting_keep_their_identity():
    from patchwork.models.dnp.settings import TrainParams

    assert "lesion_dice_weight" not in UNetParams().to_dict()
    assert "lesion_dice_weight" not in TrainParams().to_dict()
    assert UNetParams.from_dict({"lesion_dice_weight": 1.0}).to_dict()["lesion_dice_weight"] == 1.0

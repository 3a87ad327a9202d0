"""DNP for researchers: their own optimiser, scheduler, loss and blocks; label channels; softmax and
multi-label training end to end."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from dnp_blocks import ConvBlock, Scale, conv_block
from test_dnp_train import Interrupted, cases, crash_in_outer_iteration, settings

from patchwork.errors import PatchworkError
from patchwork.evaluation.metrics import dice
from patchwork.models.dnp.apply import apply_dnp
from patchwork.models.dnp.callableref import CallableRef
from patchwork.models.dnp.cases import check_cases, label_targets
from patchwork.models.dnp.crop import CropGenerator
from patchwork.models.dnp.loss import level_loss
from patchwork.models.dnp.model import check_model
from patchwork.models.dnp.modelfile import load_dnp
from patchwork.models.dnp.settings import DNPParams, ModelParams
from patchwork.models.dnp.train import train_dnp
from patchwork.models.dnp.trees import Drawer
from patchwork.training.seeding import STREAM_PATCHES, torch_generator


def sgd(params):
    """A researcher's optimiser."""
    return torch.optim.SGD(params, lr=0.05, momentum=0.9)


def halving(optimizer):
    """A researcher's scheduler: the rate halves every second outer iteration."""
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)


def log_column(path: Path, name: str) -> list[float]:
    """Column ``name`` of ``train_log.tsv`` in ``path``."""
    rows = [line.split("\t") for line in (path / "train_log.tsv").read_text().splitlines()]
    return [float(r[rows[0].index(name)]) for r in rows[1:]]


def test_own_optimizer_scheduler_and_loss_train_and_resume_bitwise(tmp_path, monkeypatch):
    """SGD with a step schedule (stepped per outer iteration) and a loss of its own, which also ranks hard
    mining; a killed run resumes to bitwise the uninterrupted weights (optimiser and scheduler state)."""
    params = settings(2, num_its=3, hard_mining=0.25)
    levels = []

    def loss(pred, target, level):
        levels.append(level)
        return 2.0 * level_loss(pred, target, "sigmoid", "ce")

    own = {"optimizer": sgd, "scheduler": halving, "loss": loss}
    straight = torch.load(train_dnp(params, *cases(2), tmp_path / "a", seed=3, **own), weights_only=True)
    assert log_column(tmp_path / "a", "lr") == [0.05, 0.05, 0.025]
    assert set(levels) == {0, 1} and log_column(tmp_path / "a", "total")[-1] < 1.2  # ce of 0.5 gives 1.39

    crash_in_outer_iteration(monkeypatch, 3)
    with pytest.raises(Interrupted):
        train_dnp(params, *cases(2), tmp_path / "b", seed=3, **own)
    checkpoint = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert (
        checkpoint["scheduler"]["last_epoch"] == 2
        and checkpoint["optimizer"]["param_groups"][0]["lr"] == 0.025
    )
    monkeypatch.undo()
    resumed = torch.load(train_dnp(params, *cases(2), tmp_path / "b", seed=3, **own), weights_only=True)
    assert all(torch.equal(v, resumed["state_dict"][k]) for k, v in straight["state_dict"].items())
    assert log_column(tmp_path / "b", "lr") == log_column(tmp_path / "a", "lr")


def test_the_configured_schedule_scales_an_own_optimizers_rate(tmp_path):
    params = settings(2, num_its=3, warmup_its=2)
    train_dnp(params, *cases(2), tmp_path, seed=0, optimizer=sgd)
    assert log_column(tmp_path, "lr") == pytest.approx([0.025, 0.05, 0.05])


def test_own_blocks_are_stored_by_name_and_rebuilt_by_load_dnp(tmp_path):
    base = settings(2, num_its=1).to_dict()
    model = {
        **base["model"],
        "blockCreator": {"target": "dnp_blocks:conv_block", "kwargs": {"width": 3}},
        "finalBlock": {"target": "dnp_blocks:final_scale"},
        "finalBlock_all_levels": False,
    }
    params = DNPParams.from_dict({**base, "model": model})
    assert DNPParams.from_dict(params.to_dict()) == params
    path = train_dnp(params, *cases(2), tmp_path, seed=0)
    stored = torch.load(path, weights_only=True)  # a reference, no pickled code
    assert stored["params"]["model"]["blockCreator"] == {
        "target": "dnp_blocks:conv_block",
        "kwargs": {"width": 3},
    }
    loaded, again = load_dnp(path, device="cpu")
    assert again == params and all(isinstance(b, ConvBlock) for b in loaded.blocks)
    assert loaded.blocks[0][0].out_channels == 3 and isinstance(loaded.finalBlock, Scale)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in stored["state_dict"].items())
    assert "finalBlock.scale" in stored["state_dict"]

    stored["params"]["model"]["blockCreator"]["target"] = "dnp_blocks:no_such_block"
    torch.save(stored, tmp_path / "moved.pt")
    with pytest.raises(
        PatchworkError, match=r"blockCreator 'dnp_blocks:no_such_block' cannot be imported"
    ) as err:
        load_dnp(tmp_path / "moved.pt")
    assert "\n" not in str(err.value)


def test_block_references_are_checked_and_unset_ones_left_out():
    by_function = ModelParams(blockCreator=conv_block, finalBlock="dnp_blocks:final_scale")
    assert by_function.blockCreator == CallableRef("dnp_blocks:conv_block")
    assert by_function.finalBlock == CallableRef("dnp_blocks:final_scale", {})
    with pytest.raises(PatchworkError, match="dnp model: blockCreator 'no_such_module:f' cannot be imported"):
        check_model(DNPParams.from_dict({"model": {"blockCreator": {"target": "no_such_module:f"}}}))
    with pytest.raises(PatchworkError, match="cannot be stored by name"):
        ModelParams(blockCreator=lambda *args: None)
    with pytest.raises(PatchworkError, match="package.module:function"):
        DNPParams.from_dict({"model": {"finalBlock": {"target": "dnp_blocks"}}})
    with pytest.raises(PatchworkError, match="JSON-able"):
        CallableRef("dnp_blocks:conv_block", {"width": object()})
    assert not {"blockCreator", "finalBlock", "finalBlock_all_levels"} & set(DNPParams().to_dict()["model"])


def test_label_channels_may_overlap_and_are_checked():
    crop = settings(2).crop
    two = DNPParams.from_dict({"crop": {**crop.to_dict(), "num_labels": 2}}).crop
    channels = np.array(
        [[[1, 1, 0], [0, np.nan, 0]], [[0, 1, 1], [-1, 0, 0]]]
    )  # [L=2, 2, 3], overlap at (0, 1)
    targets = label_targets(channels, two, dontcare=True)
    assert targets.shape == (2, 2, 3) and targets[:, 0].tolist() == [[1, 1, 0], [0, 1, 1]]
    assert torch.isnan(targets[0, 1, 1]) and torch.isnan(targets[1, 1, 0])
    softmax = DNPParams.from_dict({"crop": {**crop.to_dict(), "num_labels": 2, "categorical": True}}).crop
    for crop_, labels, message in (
        (crop, channels, "labels have 2 channels, the model 1"),
        (two, channels * 2, "must hold 0 or 1"),
        (softmax, channels, "must not overlap"),
    ):
        with pytest.raises(PatchworkError, match=message):
            label_targets(labels, crop_, dontcare=True)
    picked = DNPParams.from_dict({"crop": {**crop.to_dict(), "categorial_label": [1, 2]}})
    with pytest.raises(
        PatchworkError, match="training case 0: categorial_label picks values of one label map"
    ):
        check_cases([np.zeros((1, 2, 3))], [channels], [np.eye(3)], picked, "training")


def test_training_trees_keep_the_categorial_label_order():
    """The training cropper gets label channels already picked by ``categorial_label``: its trees equal
    those a cropper with ``categorial_label`` crops from the integer map itself."""
    images, masks, affines = cases(2)
    maps = [np.where(m > 0, 5, 0) + np.where(np.roll(m, 3, axis=1) > 0, 2, 0) for m in masks]  # 0, 2, 5, 7
    params = settings(2, balance={"ratio": 1.0})
    params = DNPParams.from_dict(
        {**params.to_dict(), "crop": {**params.crop.to_dict(), "categorial_label": [5, 2]}}
    )
    trees = Drawer(params.crop, check_cases(images, maps, affines, params, "t"), params.train, 0).get(0)
    direct, generator = CropGenerator(params.crop), torch_generator(0, 0, STREAM_PATCHES)
    for i, (image, label, affine) in enumerate(zip(images, maps, affines, strict=True)):
        volume = direct.prepare(image, label, torch.as_tensor(affine))
        patches = direct.sample(volume, num_patches=4, generate_type="random", balance=params.train.balance,
                                generator=generator)  # fmt: skip
        for n, level in enumerate(patches.levels):
            assert torch.equal(level.labels, trees.labels[n][4 * i : 4 * i + 4]), (i, n)
    assert (
        trees.labels[-1].shape[1] == 2
        and trees.labels[-1][:, 0].sum() > 0
        and trees.labels[-1][:, 1].sum() > 0
    )


def two_labels(size: int = 32) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A noisy 2D image of overlapping discs ``a`` (intensity 1) and ``b`` (intensity 2), and their masks."""
    yy, xx = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    a = (yy - 12) ** 2 + (xx - 12) ** 2 <= 36
    b = (yy - 19) ** 2 + (xx - 19) ** 2 <= 64
    image = a + 2.0 * b + np.random.default_rng(0).normal(0, 0.2, a.shape)
    return image[None].astype(np.float32), a, b


def train_and_apply(tmp_path: Path, crop: dict, image: np.ndarray, label: np.ndarray) -> np.ndarray:
    """Train a small 2-level patchwork on one image, apply it to that image: probabilities [L, *S]."""
    scheme = {"patch_size": [16, 16], "fov_rel": 0.9, "destvox_rel": 1.0}
    params = DNPParams.from_dict({
        "crop": {"depth": 2, "ndim": 2, "scheme": scheme, **crop},
        "model": {"block_features": 8, "block_max_features": 16, "block_stages": 2, "intermediate_out": 4},
        "train": {"num_its": 10, "num_patches": 10, "epochs": 2, "batch_size": 8, "lr": 1e-2},
    })  # fmt: skip
    path = train_dnp(params, [image], [label], [np.eye(3)], tmp_path, seed=0, device="cpu")
    model, _ = load_dnp(path, device="cpu")
    return apply_dnp(model, image, np.eye(3), generator=0).probabilities.numpy()


def assert_learnt(probabilities: np.ndarray, truths: list[np.ndarray]) -> None:
    """Every label's Dice is high and far above the trivial all-foreground predictor's."""
    for p, truth in zip(probabilities, truths, strict=True):
        trivial = dice(np.ones_like(truth), truth)
        assert dice(p > 0.5, truth) > max(0.85, trivial + 0.5), (dice(p > 0.5, truth), trivial)


def test_softmax_training_on_two_labels_end_to_end(tmp_path):
    image, a, b = two_labels()
    label = np.where(a, 1, np.where(b, 2, 0)).astype(np.int16)  # a in front of b: disjoint classes
    probabilities = train_and_apply(tmp_path, {"categorial_label": [1, 2], "categorical": True}, image, label)
    assert probabilities.shape == (2, *label.shape)
    assert_learnt(probabilities, [label == 1, label == 2])


def test_multi_label_training_on_overlapping_channels_end_to_end(tmp_path):
    image, a, b = two_labels()
    probabilities = train_and_apply(tmp_path, {"num_labels": 2}, image, np.stack([a, b]).astype(np.float32))
    assert_learnt(probabilities, [a, b])
    assert ((probabilities[0] > 0.5) & (probabilities[1] > 0.5)).sum() > 0.5 * (a & b).sum()  # the overlap

"""DNP training: loss goes down (2D, 3D), don't care, hard mining, exact resume, parallel cropping, files."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from dnp_images import SHAPES, ball

from patchwork.errors import PatchworkError
from patchwork.models.dnp.apply_settings import DNPApply
from patchwork.models.dnp.cases import check_cases, label_targets
from patchwork.models.dnp.hardmining import hardness, select_hard
from patchwork.models.dnp.loss import level_loss, patch_losses
from patchwork.models.dnp.model import build_model, check_model
from patchwork.models.dnp.modelfile import load_dnp
from patchwork.models.dnp.predict import predict_dnp
from patchwork.models.dnp.settings import DNPParams
from patchwork.models.dnp.train import next_pool, train_dnp, train_on_set
from patchwork.models.dnp.trees import Drawer, TreeSet


def settings(ndim: int, **train) -> DNPParams:
    """Tiny 2-level patchworks of 8-voxel patches and 2-stage U-Net blocks."""
    scheme = {"patch_size": [8] * ndim, "fov_rel": 0.9, "destvox_rel": 1.0}
    return DNPParams.from_dict({
        "crop": {"depth": 2, "ndim": ndim, "scheme": scheme},
        "model": {"block_features": 4, "block_max_features": 8, "block_stages": 2, "intermediate_out": 2},
        "train": {"num_its": 4, "num_patches": 4, "epochs": 2, "batch_size": 4, "lr": 1e-2, **train},
    })  # fmt: skip


def cases(ndim: int, count: int = 2) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]]:
    """Noisy bright balls and their masks, voxel size 2 (2D: a 3x3 affine)."""
    images, labels = [], []
    for i in range(count):
        mask = ball(SHAPES[ndim], 4.0 + i).roll(i, 0).numpy()
        noise = np.random.default_rng(i).normal(0, 0.2, mask.shape)
        images.append((2 * mask + noise)[None].astype(np.float32))
        labels.append(mask.astype(np.int16))
    affine = np.diag([2.0] * ndim + [1.0])
    return images, labels, [affine] * count


@pytest.mark.parametrize("ndim", [2, 3])
def test_training_reduces_the_loss_and_writes_its_files(tmp_path, ndim):
    params = settings(ndim, num_its=5, hard_mining=0.25, lr_schedule="cosine", warmup_its=2)
    images, labels, affines = cases(ndim)
    path = train_dnp(params, images, labels, affines, tmp_path, seed=0, val_images=images[:1],
                     val_labels=labels[:1], val_affines=affines[:1])  # fmt: skip
    rows = [line.split("\t") for line in (tmp_path / "train_log.tsv").read_text().splitlines()]
    assert rows[0] == ["iteration", "loss_level0", "loss_level1", "total", "lr", "seconds", "patches",
                       "hard_mined", "val_loss", "val_dice"]  # fmt: skip
    totals = [float(r[3]) for r in rows[1:]]
    assert len(totals) == 5 and totals[-1] < 0.8 * totals[0]
    # two warm-up outer iterations (lr/2, lr), then cosine decay over three: lr (1 + cos(pi k / 3)) / 2
    expected = [5e-3, 1e-2, 1e-2, 7.5e-3, 2.5e-3]
    assert [float(r[4]) for r in rows[1:]] == pytest.approx(expected)
    assert [int(r[7]) for r in rows[1:]] == [0, 2, 2, 2, 2] and int(rows[2][6]) == 10
    assert all(0.0 <= float(r[9]) <= 1.0 for r in rows[1:])
    assert (tmp_path / "curve.png").stat().st_size > 0 and not (tmp_path / "checkpoint.pt").exists()
    obj = torch.load(path, weights_only=True)
    # the params that decide the weights: without volume_cache_mb (memory only) and cases_per_iteration (64 >=
    # the images here: it changes nothing)
    decisive = params.to_dict()
    decisive["train"] = {
        k: v for k, v in decisive["train"].items() if k not in ("volume_cache_mb", "cases_per_iteration")
    }
    assert obj["version"] == 2 and obj["params"] == decisive and obj["in_channels"] == 1
    assert set(obj) == {"format", "version", "params", "seed", "in_channels", "state_dict"}  # settings once
    model, again = load_dnp(path, device="cpu")
    assert again == params and not model.training


def test_dontcare_voxels_give_no_loss_gradient():
    labels = np.array([[0, 1, -1], [np.nan, 1, 0]])
    targets = label_targets(labels, DNPParams().crop, dontcare=True)
    assert targets.shape == (1, 2, 3) and torch.isnan(targets[0, [0, 1], [2, 0]]).all()
    with pytest.raises(PatchworkError, match="dontcare is off"):
        label_targets(labels, DNPParams().crop, dontcare=False)
    for activation, channels in (("sigmoid", 1), ("softmax", 2)):
        logits = torch.randn(2, channels, 4, 4, generator=torch.Generator().manual_seed(1)).requires_grad_()
        target = (torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(2)) > 0.5).float()
        target[0, 0, :2] = float("nan")
        for kind in ("dice", "ce", "dice+ce"):
            logits.grad = None
            loss = level_loss(logits, target, activation, kind)
            loss.backward()
            assert math.isfinite(float(loss.detach()))
            assert torch.all(logits.grad[0, :, :2] == 0) and torch.any(logits.grad[0, :, 2:] != 0)
            assert torch.isfinite(patch_losses(logits, target, activation, kind)).all()


def test_hardness_orders_and_maxage():
    loss = torch.tensor([0.1, 0.9, 0.5, 0.7])
    f1 = torch.tensor([0.9, 0.2, 0.1, 0.5])
    voxels = torch.tensor([[0.0, 10.0], [0.0, 10.0], [5.0, 0.0], [0.0, 0.0]])  # tree 2 holds all of label 0
    age = torch.zeros(4, dtype=torch.long)
    assert select_hard(hardness("loss", loss, f1, voxels), age, 0.5, 3).tolist() == [1, 3]
    assert select_hard(hardness("f1", loss, f1, voxels), age, 0.5, 3).tolist() == [1, 2]
    assert select_hard(hardness("balance", loss, f1, voxels), age, 0.25, 3).tolist() == [2]
    old = torch.tensor([0, 3, 2, 3])  # trees 1 and 3 were kept maxage=3 times already
    assert select_hard(hardness("loss", loss, f1, voxels), old, 0.5, 3).tolist() == [0, 2]
    assert select_hard(loss, age, 0.0, 3).numel() == 0
    with pytest.raises(PatchworkError, match="hard_mining_order"):
        hardness("size", loss, f1, voxels)


def test_next_pool_keeps_the_hardest_trees_and_ages_them(ndim):
    params = settings(ndim, hard_mining=0.5, hard_mining_order="f1")
    trees = Drawer(params.crop, check_cases(*cases(ndim), params, "t"), params.train, 0).get(0)
    model = build_model(params, 1)
    optimizer = torch.optim.AdamW(model.parameters())
    result = train_on_set(model, optimizer, trees, params.train, torch.Generator().manual_seed(0))
    assert len(result.level_losses) == 2 and torch.isfinite(result.tree_loss).all()
    pool = next_pool(trees, result, params.train)
    hardest = torch.sort(result.tree_f1, stable=True).indices[:4].sort().values
    assert len(pool) == 4 and pool.age.tolist() == [1] * 4
    assert torch.equal(pool.inputs[1], trees.inputs[1][hardest])
    assert next_pool(trees, result, settings(ndim).train) is None
    aged = TreeSet(trees.inputs, trees.labels, trees.relative, torch.full((8,), 3))
    assert next_pool(aged, result, params.train) is None  # every tree reached hard_mining_maxage


def test_without_intermediate_loss_coarse_predictions_get_no_gradient():
    """Level 0's prediction head only reaches the loss through its children's crop: with crop_fdim leaving
    the prediction channel out and intermediate_loss off, its weights get no gradient."""
    for intermediate, changed in ((False, False), (True, True)):
        base = settings(2, weight_decay=0).to_dict()
        model_settings = {**base["model"], "intermediate_loss": intermediate, "crop_fdim": [1, 2]}
        params = DNPParams.from_dict({**base, "model": model_settings})
        trees = Drawer(params.crop, check_cases(*cases(2), params, "t"), params.train, 0).get(0)
        model = build_model(params, 1)
        head = model.blocks[0].heads[0].weight
        before = head.detach().clone()
        train_on_set(model, torch.optim.AdamW(model.parameters(), weight_decay=0), trees, params.train,
                     torch.Generator().manual_seed(0))  # fmt: skip
        assert torch.equal(head[0], before[0]) != changed  # channel 0: the prediction
        assert not torch.equal(head[1:], before[1:])  # the passed features learn either way


class Interrupted(Exception):
    """A training killed on purpose (:func:`crash_in_outer_iteration`)."""


def crash_in_outer_iteration(monkeypatch: pytest.MonkeyPatch, k: int) -> None:
    """Make the next DNP training raise :class:`Interrupted` as it starts outer iteration ``k`` (from 1)."""
    import patchwork.models.dnp.train as module

    real, calls = module.train_on_set, []

    def crashing(*args, **kwargs):
        calls.append(1)
        if len(calls) == k:
            raise Interrupted
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "train_on_set", crashing)


def test_resume_equals_uninterrupted_bitwise(tmp_path, monkeypatch):
    params = settings(2, num_its=4, hard_mining=0.25)
    data = cases(2)
    straight = torch.load(train_dnp(params, *data, tmp_path / "a", seed=3), weights_only=True)
    crash_in_outer_iteration(monkeypatch, 3)
    with pytest.raises(Interrupted):
        train_dnp(params, *data, tmp_path / "b", seed=3)
    checkpoint = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert checkpoint["iteration"] == 2 and len(checkpoint["pool"]["age"]) == 2  # 0.25 of 8 trees
    monkeypatch.undo()
    resumed = torch.load(train_dnp(params, *data, tmp_path / "b", seed=3), weights_only=True)
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    rows = (tmp_path / "b" / "train_log.tsv").read_text().splitlines()
    assert [r.split("\t")[3] for r in rows] == [
        r.split("\t")[3] for r in (tmp_path / "a" / "train_log.tsv").read_text().splitlines()
    ]
    other = torch.load(train_dnp(params, *data, tmp_path / "c", seed=4), weights_only=True)
    assert any(not torch.equal(v, other["state_dict"][k]) for k, v in straight["state_dict"].items())
    with pytest.raises(PatchworkError, match="other params or seed"):
        train_dnp(params, *data, tmp_path / "a", seed=5)


def test_parallel_cropping_draws_the_serial_trees():
    params = settings(3, parallel=True, augment={"dphi": 0.2, "flip": [1, 0, 0]})
    data = check_cases(*cases(3), params, "t")
    serial = Drawer(params.crop, data, settings(3, augment={"dphi": 0.2, "flip": [1, 0, 0]}).train, 7)
    parallel = Drawer(params.crop, data, params.train, 7)
    try:
        parallel.prefetch(1)
        for it in (0, 1):
            a, b = serial.get(it), parallel.get(it)
            for name in ("inputs", "labels", "relative"):
                assert all(torch.equal(x, y) for x, y in zip(getattr(a, name), getattr(b, name), strict=True))
        assert not torch.equal(serial.get(0).inputs[0], serial.get(1).inputs[0])
    finally:
        parallel.close()


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("train", {"num_its": 0}, "dnp params: train: num_its"),
        ("train", {"loss": ["dice"]}, "1 entries for depth 3"),
        ("train", {"hard_mining": 1.5}, "hard_mining"),
        ("train", {"hard_mining_order": "size"}, "hard_mining_order"),
        ("train", {"lr_schedule": "step"}, "dnp params: train: lr_schedule"),
        (
            "train",
            {"num_its": 4, "warmup_its": 4},
            "dnp params: train: warmup_its=4: must be in \\[0, num_its\\)",
        ),
        ("train", {"balance": {"ratio": 2}}, "dnp params: train: balance: ratio"),
        ("train", {"augment": {"dphi": [0.1, 0.2]}}, "dnp params: train: augment.dphi"),
        ("train", {"epoch": 2}, "dnp params: train: unknown key\\(s\\) epoch"),
        ("model", {"forward_type": "sum"}, "dnp params: model: forward_type"),
        ("crop", {"depth": 0}, "dnp params: crop: depth"),
        (
            "crop",
            {"scheme": {"patch_size": [8, 8, 8], "fov_rel": "all"}},
            "dnp params: crop: scheme: fov_rel",
        ),
        ("apply", {"window": "cos"}, "dnp params: unknown key\\(s\\) apply"),
    ],
)
def test_bad_params_are_named(section, values, message):
    with pytest.raises(PatchworkError, match=message):
        DNPParams.from_dict({section: values})


@pytest.mark.parametrize(
    ("model", "scheme", "message"),
    [
        ({"crop_fdim": [0, 40]}, None, "dnp model: crop_fdim"),
        ({}, {"patch_size": [30, 30, 30], "fov_rel": 0.9, "destvox_rel": 1.0}, "dnp model: .*divisible"),
    ],
)
def test_settings_that_need_the_model_are_checked_by_check_model(model, scheme, message):
    params = DNPParams.from_dict({"model": model, "crop": {"scheme": scheme} if scheme else {}})
    with pytest.raises(PatchworkError, match=message):
        check_model(params)


def test_params_round_trip_and_bad_data(tmp_path):
    params = DNPParams.from_dict({"train": {"loss": ["ce", "dice", "dice+ce"], "augment": {"dphi": 0.1}}})
    assert DNPParams.from_dict(params.to_dict()) == params
    images, labels, affines = cases(2)
    with pytest.raises(PatchworkError, match="label shape"):
        train_dnp(settings(2), images, [labels[0][:-1]] * 2, affines, tmp_path, seed=0)
    with pytest.raises(PatchworkError, match="case 1: affine"):
        train_dnp(settings(2), images, labels, [affines[0], np.eye(5)], tmp_path, seed=0)
    assert check_cases(images, labels, [np.diag([2.0, 2.0, 2.0, 1.0])] * 2, settings(2), "t")[
        0
    ].affine.shape == (3, 3)


def test_application_settings_change_without_retraining(tmp_path):
    """How a model is applied is given at prediction time: the model file and training stay untouched."""
    params = settings(2, num_its=1)
    data = cases(2)
    path = train_dnp(params, *data, tmp_path, seed=0)
    stored = path.read_bytes()
    image, affine = data[0][0], data[2][0]
    one = predict_dnp(path, image, affine, DNPApply(num_patches=1, augment=None, window=None), seed=0)
    many = predict_dnp(path, image, affine, DNPApply.from_dict({"num_patches": 3, "window": "cos2"}), seed=0)
    assert one[0].shape == many[0].shape == image.shape[1:] and not np.array_equal(one[0], many[0])
    assert train_dnp(params, *data, tmp_path, seed=0) == path and path.read_bytes() == stored
    with pytest.raises(PatchworkError, match="out_typ='mask'"):
        predict_dnp(path, image, affine, DNPApply(out_typ="mask"))

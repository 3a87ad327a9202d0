"""Training: overfitting a tiny volume with both heads, bitwise resume, files, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from patchwork.errors import PatchworkError
from patchwork.models.unet import UNetParams, predict_unet, train_unet
from patchwork.models.unet.sampler import PatchSampler
from patchwork.training.schedule import learning_rate

TINY = {"patch_size": [16, 16, 16], "n_stages": 3, "base_features": 8, "max_features": 16, "batch_size": 2}


def cube_volume(seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Noise with a bright cube (label 1) and, to tell the classes apart, a dark slab (label 2)."""
    rng = np.random.default_rng(seed)
    image = rng.normal(0.0, 0.3, (1, size, size, size)).astype(np.float32)
    label = np.zeros((size, size, size), dtype=np.uint8)
    lo = rng.integers(4, size - 14, 3)
    label[lo[0] : lo[0] + 10, lo[1] : lo[1] + 10, lo[2] : lo[2] + 10] = 1
    label[2:5, :, : size // 2] = 2
    image[0][label == 1] += 2.0
    image[0][label == 2] -= 2.0
    return image, label


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * float((a & b).sum()) / float(a.sum() + b.sum())


@pytest.mark.parametrize("head", ["sigmoid", "softmax"])
def test_tiny_training_overfits(tmp_path, head):
    data = [cube_volume(s) for s in range(2)]
    settings = {"head": head, "num_classes": 3, "patch_size": [24, 24, 24], "iterations": 60, "lr": 1e-2}
    params = UNetParams.from_dict(
        {**TINY, **settings, "augment": False, "oversample_foreground": 0.5, "val_every": 30}
    )
    model_path = train_unet(params, [d[0] for d in data], [d[1] for d in data], None, tmp_path, seed=0)
    for image, label in data:
        prob, _ = predict_unet(model_path, image)
        assert dice(prob >= 0.5, label > 0) > 0.8
    log = (tmp_path / "train_log.tsv").read_text().splitlines()
    assert log[0].split("\t") == ["iteration", "train_loss", "val_loss", "val_dice", "lr", "seconds"]
    assert [row.split("\t")[0] for row in log[1:]] == ["30", "60"]
    assert float(log[2].split("\t")[1]) < float(log[1].split("\t")[1])  # the loss went down
    assert (tmp_path / "curve.png").read_bytes()[:4] == b"\x89PNG"
    assert not (tmp_path / "checkpoint.pt").exists()


RESUME = {**TINY, "iterations": 12, "checkpoint_every": 4, "val_every": 3, "val_patches": 2,
          "deep_supervision": True, "rotation_deg": 180, "gamma": True}  # fmt: skip


def _run(out_dir, seed=3):
    train, val = cube_volume(0), cube_volume(1)
    return train_unet(
        UNetParams.from_dict(RESUME),
        [train[0]],
        [train[1]],
        None,
        out_dir,
        seed,
        val_images=[val[0]],
        val_labels=[val[1]],
    )


class Interrupted(Exception):
    pass


def test_resume_equals_uninterrupted_bitwise(tmp_path, monkeypatch):
    straight = torch.load(_run(tmp_path / "a"), weights_only=True)

    original = PatchSampler.batch
    seen: list[int] = []

    def flaky(self, index):
        seen.append(index)
        if index == 6 and self.stream == 1:
            raise Interrupted
        return original(self, index)

    monkeypatch.setattr(PatchSampler, "batch", flaky)
    with pytest.raises(Interrupted):
        _run(tmp_path / "b")
    checkpoint = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert checkpoint["iteration"] == 4 and isinstance(checkpoint["model"], dict)
    assert not (tmp_path / "b" / "model.pt").exists()

    seen.clear()
    monkeypatch.setattr(
        PatchSampler, "batch", lambda self, index: (seen.append(index), original(self, index))[1]
    )
    resumed = torch.load(_run(tmp_path / "b"), weights_only=True)
    assert min(i for i in seen if i > 0) == 4  # training batches restarted at the checkpoint
    assert resumed["params"] == straight["params"] and resumed["in_channels"] == 1
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    columns = slice(0, 5)  # all but the wall time
    rows_a = [r.split("\t")[columns] for r in (tmp_path / "a" / "train_log.tsv").read_text().splitlines()]
    rows_b = [r.split("\t")[columns] for r in (tmp_path / "b" / "train_log.tsv").read_text().splitlines()]
    assert rows_a == rows_b and len(rows_a) == 5


def test_other_seed_gives_other_weights_and_finished_model_returns_at_once(tmp_path, monkeypatch):
    path = _run(tmp_path / "a", seed=3)
    other = torch.load(_run(tmp_path / "c", seed=4), weights_only=True)["state_dict"]
    mine = torch.load(path, weights_only=True)["state_dict"]
    assert not all(torch.equal(mine[k], other[k]) for k in mine)

    def fail(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr("patchwork.models.unet.train.TrainingRun.step", fail)
    stamp = path.stat().st_mtime_ns
    assert _run(tmp_path / "a", seed=3) == path and path.stat().st_mtime_ns == stamp
    with pytest.raises(PatchworkError, match="other params or seed"):
        _run(tmp_path / "a", seed=5)


def test_checkpoint_of_other_settings_is_refused(tmp_path, monkeypatch):
    def stop(self, index):
        raise Interrupted

    original = PatchSampler.batch
    monkeypatch.setattr(PatchSampler, "batch", lambda self, i: stop(self, i) if i == 5 else original(self, i))
    with pytest.raises(Interrupted):
        _run(tmp_path)
    monkeypatch.setattr(PatchSampler, "batch", original)
    with pytest.raises(PatchworkError, match="different seed"):
        _run(tmp_path, seed=9)


def test_bad_training_data_is_named(tmp_path):
    image, label = cube_volume(0)
    params = UNetParams.from_dict({**TINY, "head": "softmax", "num_classes": 2})
    cases = [
        ([image], [label[:-1]], "label shape"),
        ([image[0]], [label], "image shape"),
        ([image], [label], "label 2 exceeds num_classes-1 = 1"),
        ([np.full_like(image, np.nan)], [np.minimum(label, 1)], "NaN"),
        ([image, image], [label], "2 images but 1 label maps"),
        ([], [], "no images"),
    ]
    for images, labels, message in cases:
        with pytest.raises(PatchworkError, match=message):
            train_unet(params, images, labels, None, tmp_path, seed=0)


def test_learning_rate_schedules():
    assert learning_rate(0.01, 0, 100) == 0.01
    assert learning_rate(0.01, 50, 100) == pytest.approx(0.01 * 0.5**0.9)
    assert learning_rate(0.01, 99, 100) > 0
    # warm-up: linear from lr/w to lr, then the decay runs over the remaining steps
    assert [learning_rate(0.01, i, 110, "cosine", warmup=10) for i in (0, 4, 9)] == pytest.approx(
        [0.001, 0.005, 0.01]
    )
    assert learning_rate(0.01, 10, 110, "cosine", warmup=10) == pytest.approx(0.01)
    assert learning_rate(0.01, 60, 110, "cosine", warmup=10) == pytest.approx(0.005)
    assert learning_rate(0.01, 60, 110, "poly", warmup=10) == pytest.approx(0.01 * 0.5**0.9)
    assert learning_rate(0.01, 60, 110, "constant", warmup=10) == 0.01
    with pytest.raises(ValueError, match="schedule 'step'"):
        learning_rate(0.01, 0, 10, "step")

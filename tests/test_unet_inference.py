"""Sliding-window inference, Gaussian weighting, model file loading and prediction."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from patchwork.errors import PatchworkError
from patchwork.models.unet import (
    UNetApply,
    UNetParams,
    gaussian_weight,
    load_unet,
    predict_unet,
    sliding_window_inference,
)
from patchwork.models.unet.modelfile import build_network, save_model
from patchwork.models.unet.predict import foreground_probability, window_starts
from patchwork.networks import init_weights


class Identity(torch.nn.Module):
    """Returns its input: sliding-window blending must then reproduce the image."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(len(x))
        return x


@pytest.mark.parametrize("size", [(8, 8, 8), (9, 12, 17)])
def test_gaussian_weight_peak_symmetry_positivity(size):
    w = gaussian_weight(size)
    assert w.shape == size and w.dtype == torch.float32
    assert (w > 0).all()
    assert float(w.max()) == pytest.approx(1.0)
    for axis in range(3):
        assert torch.equal(w, w.flip(axis))
    centre = tuple((n - 1) // 2 for n in size)
    assert float(w[centre]) == float(w.max())
    assert float(w[0, 0, 0]) < 1e-3  # sigma = patch / 8: the corners weigh almost nothing


def test_gaussian_sigma_is_an_eighth_of_the_patch():
    w = gaussian_weight((1, 1, 33))[0, 0]
    sigma = 33 / 8
    assert float(w[16 + 4] / w[16]) == pytest.approx(np.exp(-16 / (2 * sigma**2)), rel=1e-5)


@pytest.mark.parametrize(
    ("size", "patch", "overlap"),
    [(20, 8, 0.5), (20, 8, 0.0), (8, 8, 0.5), (5, 8, 0.5), (37, 16, 0.25), (100, 48, 0.5)],
)
def test_window_starts_cover_every_voxel(size, patch, overlap):
    starts = window_starts(size, patch, overlap)
    covered = np.zeros(max(size, patch), dtype=bool)
    for s in starts:
        covered[s : s + patch] = True
    assert covered[:size].all()
    assert starts[0] == 0 and starts[-1] == max(size - patch, 0)
    if len(starts) > 1:
        assert max(np.diff(starts)) <= patch * (1 - overlap) + 1e-9 or overlap == 0


@pytest.mark.parametrize(
    ("shape", "patch", "overlap", "batch"),
    [
        ((16, 16, 16), (8, 8, 8), 0.5, 2),
        ((13, 19, 22), (8, 8, 8), 0.5, 3),
        ((13, 19, 22), (8, 12, 16), 0.25, 2),
        ((5, 6, 7), (8, 8, 8), 0.5, 2),  # smaller than the patch on every axis
        ((5, 20, 9), (8, 8, 8), 0.0, 4),  # smaller on some axes only
    ],
)
def test_identity_model_reproduces_the_image(shape, patch, overlap, batch):
    image = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0)) * 10 - 5
    model = Identity()
    out = sliding_window_inference(model, image, patch, overlap=overlap, batch_size=batch)
    assert out.shape == image.shape
    assert torch.allclose(out, image, rtol=1e-6, atol=1e-6)
    n_windows = np.prod(
        [len(window_starts(max(s, p), p, overlap)) for s, p in zip(shape, patch, strict=True)]
    )
    assert sum(model.calls) >= n_windows and set(model.calls) == {batch}  # full batches only


def test_mirroring_averages_flipped_predictions():
    image = torch.rand(1, 10, 12, 9, generator=torch.Generator().manual_seed(1))
    out = sliding_window_inference(Identity(), image, (8, 8, 8), mirror=True)
    assert torch.allclose(out, image, atol=1e-6)

    class AxisRamp(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            ramp = torch.arange(x.shape[2], dtype=x.dtype).view(1, 1, -1, 1, 1)
            return x * 0 + ramp  # not mirror equivariant: flipped outputs average to a constant

    flat = sliding_window_inference(AxisRamp(), torch.zeros(1, 8, 8, 8), (8, 8, 8), mirror=True)
    assert torch.allclose(flat, torch.full_like(flat, 3.5))


def test_foreground_probability_for_both_heads():
    logits = torch.tensor([[0.0, 2.0], [1.0, 0.0]])  # [K=2, 2 voxels]
    assert torch.allclose(foreground_probability(logits[:1], "sigmoid"), torch.sigmoid(logits[0]))
    soft = torch.softmax(logits, dim=0)
    assert torch.allclose(foreground_probability(logits, "softmax"), soft[1])


@pytest.fixture
def model_file(tmp_path):
    params = UNetParams(patch_size=(16, 16, 16), n_stages=3, base_features=4, max_features=8, head="softmax")
    net = build_network(params, in_channels=2)
    init_weights(net, torch.Generator().manual_seed(0))
    path = tmp_path / "model.pt"
    save_model(path, params, 2, 0, net)
    return path, net


def test_model_file_loads_with_weights_only(model_file):
    path, net = model_file
    obj = torch.load(path, weights_only=True)
    assert obj["in_channels"] == 2 and obj["params"]["head"] == "softmax" and obj["version"] == 2
    model, params = load_unet(path)
    assert params.patch_size == (16, 16, 16) and not model.training
    for (k, v), (k2, v2) in zip(model.state_dict().items(), net.state_dict().items(), strict=True):
        assert k == k2 and torch.equal(v, v2)


def test_predict_returns_probability_map_of_the_image_shape(model_file):
    path, net = model_file
    image = np.random.default_rng(0).standard_normal((2, 20, 11, 18)).astype(np.float32)
    prob, spread = predict_unet(path, image)
    assert prob.shape == (20, 11, 18) and prob.dtype == np.float32 and spread is None
    assert (prob >= 0).all() and (prob <= 1).all()
    mirrored, _ = predict_unet(path, image, apply=UNetApply(test_time_mirroring=True))
    assert not np.array_equal(prob, mirrored)
    sparse, _ = predict_unet(path, image, apply=UNetApply(overlap=0.0, sw_batch_size=1))
    assert not np.array_equal(prob, sparse)  # fewer windows: other weights where windows meet


def test_predict_rejects_wrong_channels_and_bad_files(model_file, tmp_path):
    path, _ = model_file
    with pytest.raises(PatchworkError, match="C=2"):
        predict_unet(path, np.zeros((1, 8, 8, 8), dtype=np.float32))
    with pytest.raises(PatchworkError, match="NaN"):
        predict_unet(path, np.full((2, 8, 8, 8), np.nan, dtype=np.float32))
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(PatchworkError, match="cannot read model file"):
        load_unet(bad)
    torch.save({"something": torch.zeros(1)}, bad)
    with pytest.raises(PatchworkError, match="not a patchwork U-Net model"):
        load_unet(bad)


def test_every_voxel_gets_weight_even_at_patch_corners():
    image = torch.zeros(1, 30, 30, 30)
    starts = list(itertools.product(*(window_starts(30, 16, 0.5),) * 3))
    assert len(starts) == 27
    out = sliding_window_inference(lambda x: x + 1, image, (16, 16, 16))
    assert torch.isfinite(out).all() and torch.allclose(out, torch.ones_like(out))

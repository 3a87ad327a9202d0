"""PatchSampler: foreground oversampling fraction, determinism, padding of small images."""

from __future__ import annotations

import numpy as np
import pytest

from patchwork.errors import PatchworkError
from patchwork.models.unet.sampler import PatchSampler, crop


def _tiny_foreground(n: int = 4) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    images = [rng.standard_normal((1, 40, 40, 40)).astype(np.float32) for _ in range(n)]
    labels = []
    for i in range(n):
        lab = np.zeros((40, 40, 40), dtype=np.uint8)
        lab[5 + i, 30, 7] = 1  # a single foreground voxel, off-centre
        labels.append(lab)
    return images, labels


@pytest.mark.parametrize("batch_size", [2, 3, 5])
def test_oversampling_fraction_is_one_third(batch_size):
    images, labels = _tiny_foreground()
    sampler = PatchSampler(images, labels, (8, 8, 8), batch_size, 1 / 3, seed=1)
    hits = total = 0
    for index in range(300):
        _, y = sampler.batch(index)
        hits += int((y.reshape(batch_size, -1) > 0).any(axis=1).sum())
        total += batch_size
    # a uniform 8³ patch holds the single voxel with probability < 1 %, so hits ≈ forced patches
    assert abs(hits / total - 1 / 3) < 0.05


def test_forced_patches_are_centred_on_foreground():
    images, labels = _tiny_foreground()
    sampler = PatchSampler(images, labels, (8, 8, 8), 3, 1 / 3, seed=2)
    which, centres, forced = sampler.centres(0)
    assert forced.sum() == 1
    k, c = which[forced][0], centres[forced][0]
    assert labels[k][tuple(c)] == 1
    _, y = sampler.batch(0)
    assert y[np.flatnonzero(forced)[0], 4, 4, 4] == 1  # centre voxel of the patch = lo + size // 2


def test_same_seed_same_batches_other_seed_differs():
    images, labels = _tiny_foreground()
    a = PatchSampler(images, labels, (8, 8, 8), 2, 1 / 3, seed=5)
    b = PatchSampler(images, labels, (8, 8, 8), 2, 1 / 3, seed=5)
    c = PatchSampler(images, labels, (8, 8, 8), 2, 1 / 3, seed=6)
    for index in (0, 7, 3):  # any order: a batch depends on (seed, index) only
        assert np.array_equal(a.batch(index)[0], b.batch(index)[0])
    assert not np.array_equal(a.batch(0)[0], c.batch(0)[0])


def test_uniform_patches_stay_inside_large_images():
    images, labels = _tiny_foreground()
    sampler = PatchSampler(images, labels, (16, 16, 16), 4, 0.0, seed=0)
    for index in range(50):
        _, centres, _ = sampler.centres(index)
        assert (centres - 8 >= 0).all() and (centres + 8 <= 40).all()


def test_small_image_is_padded_with_channel_minimum_and_background():
    image = np.stack([np.full((5, 6, 7), 3.0), np.arange(210.0).reshape(5, 6, 7)]).astype(np.float32)
    label = np.ones((5, 6, 7), dtype=np.uint8)
    sampler = PatchSampler([image], [label], (8, 8, 8), 2, 0.0, seed=0, crop_size=(12, 12, 12))
    x, y = sampler.batch(0)
    assert x.shape == (2, 2, 12, 12, 12) and y.shape == (2, 12, 12, 12)
    assert y.sum(axis=(1, 2, 3)).tolist() == [210, 210]  # the whole image inside every crop
    assert set(np.unique(x[:, 0])) == {3.0}
    assert x[:, 1].min() == 0.0 and np.isclose(x[:, 1].sum(axis=(1, 2, 3)), 209 * 210 / 2).all()


def test_crop_outside_the_image_is_all_fill():
    out = crop(np.ones((1, 4, 4, 4)), (10, 0, 0), (2, 2, 2), np.array([-1.0]))
    assert (out == -1).all()


def test_crop_size_must_exceed_patch_by_an_even_number():
    images, labels = _tiny_foreground(1)
    with pytest.raises(PatchworkError, match="even"):
        PatchSampler(images, labels, (8, 8, 8), 2, 0.5, seed=0, crop_size=(9, 8, 8))


def _large_and_small_lesion() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One image whose label has a 1000-voxel lesion and, apart from it, a 1-voxel lesion."""
    image = np.zeros((1, 40, 40, 40), dtype=np.float32)
    label = np.zeros((40, 40, 40), dtype=np.uint8)
    label[5:15, 5:15, 5:15] = 1
    label[30, 30, 30] = 1
    return [image], [label]


@pytest.mark.parametrize(("by_lesion", "low", "high"), [(False, 0.0, 0.01), (True, 0.4, 0.6)])
def test_sampling_by_lesion_gives_a_small_lesion_its_share(by_lesion, low, high):
    """Voxel-uniform foreground centres hit the 1-voxel lesion 1 time in 1001; by lesion, half the time."""
    images, labels = _large_and_small_lesion()
    sampler = PatchSampler(images, labels, (8, 8, 8), 4, 1.0, seed=3, by_lesion=by_lesion)
    centres = np.concatenate([sampler.centres(index)[1] for index in range(200)])
    small = np.mean(np.all(centres == 30, axis=1))
    assert low <= small <= high
    assert np.all(labels[0][tuple(centres.T)] == 1)  # every centre is a foreground voxel


def test_sampling_by_lesion_is_reproducible_and_keeps_the_voxel_default():
    images, labels = _large_and_small_lesion()
    first = PatchSampler(images, labels, (8, 8, 8), 4, 0.5, seed=4, by_lesion=True)
    again = PatchSampler(images, labels, (8, 8, 8), 4, 0.5, seed=4, by_lesion=True)
    for index in range(5):
        np.testing.assert_array_equal(first.batch(index)[0], again.batch(index)[0])
        np.testing.assert_array_equal(first.centres(index)[1], again.centres(index)[1])

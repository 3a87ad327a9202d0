"""Tests of patchwork.ensembling.combine: weighted mean, vote, 26-connected component removal, file I/O."""

from __future__ import annotations

import re

import nibabel as nib
import numpy as np
import pytest

from patchwork.config import EnsembleSettings
from patchwork.ensembling.combine import combine, ensemble_files
from patchwork.errors import PatchworkError
from patchwork.io import save_image
from patchwork.postprocessing.components import label_components, remove_components


def mix(probs, weights, model_thresholds=None, **settings):
    """``combine`` of maps named m0, m1, ... with these weights (and model thresholds, in order); the weighted
    mean without component removal unless the settings say otherwise (the defaults are ATLAS R2.0's vote)."""
    settings = {"mode": "mean", "min_component_voxels": 0, **settings}
    names = [f"m{i}" for i in range(len(probs))]
    cuts = dict(zip(names, model_thresholds or [], strict=False))
    ensemble = EnsembleSettings(
        weights=dict(zip(names, weights, strict=False)), model_thresholds=cuts, **settings
    )
    return combine(dict(zip(names, probs, strict=True)), ensemble)


def test_weighted_mean_is_exact_and_weights_are_normalised():
    a = np.array([[[0.2, 0.8], [0.0, 1.0]]], dtype=np.float32)
    b = np.array([[[0.6, 0.4], [1.0, 0.0]]], dtype=np.float32)
    prob, seg = mix([a, b], [3, 1])
    np.testing.assert_allclose(prob, 0.75 * a + 0.25 * b, atol=1e-7)
    assert prob.dtype == np.float32 and seg.dtype == np.uint8
    np.testing.assert_array_equal(seg, [[[0, 1], [0, 1]]])
    for weights in ([6, 2], [0.75, 0.25]):
        np.testing.assert_allclose(mix([a, b], weights)[0], prob, atol=1e-7)


def test_threshold_is_inclusive():
    p = np.array([[[0.29, 0.3, 0.31]]])
    np.testing.assert_array_equal(mix([p], [1], threshold=0.3)[1], [[[0, 1, 1]]])
    np.testing.assert_array_equal(mix([p], [1])[1], [[[0, 0, 0]]])


def test_diagonal_neighbours_form_one_component():
    mask = np.zeros((4, 4, 4), dtype=bool)
    mask[0, 0, 0] = mask[1, 1, 1] = True  # corner contact only
    assert label_components(mask)[1] == 1
    np.testing.assert_array_equal(remove_components(mask, 2), mask)
    assert not remove_components(mask, 3).any()
    mask[3, 3, 3] = True  # two voxels away: a separate component
    assert label_components(mask)[1] == 2


def test_small_components_removed_large_kept():
    mask = np.zeros((10, 10, 10), dtype=bool)
    mask[0, 0, 0:3] = True  # 3 voxels
    mask[5, 5, 2:6] = True  # 4 voxels
    mask[8, 1:6, 8] = True  # 5 voxels
    kept = remove_components(mask, 4)
    assert kept.dtype == bool
    assert not kept[0, 0, 0:3].any()
    assert kept[5, 5, 2:6].all() and kept[8, 1:6, 8].all()
    assert kept.sum() == 9
    np.testing.assert_array_equal(remove_components(mask, 0), mask)


def test_vote_equals_dnp_or_both_unets():
    rng = np.random.default_rng(0)
    dnp, u1, u2 = (rng.random((12, 12, 12)) for _ in range(3))
    prob, seg = mix([dnp, u1, u2], [2, 1, 1], mode="vote", model_thresholds=[0.35, 0.25, 0.5])
    b1, b2, b3 = dnp >= 0.35, u1 >= 0.25, u2 >= 0.5
    np.testing.assert_array_equal(seg.astype(bool), b1 | (b2 & b3))
    np.testing.assert_allclose(prob, 0.5 * b1 + 0.25 * b2 + 0.25 * b3, atol=1e-7)


def test_vote_removes_small_components_per_model_and_at_the_end():
    dnp = np.zeros((12, 12, 12))
    dnp[1, 1, 1:3] = 0.9  # 2 voxels: dropped from the DNP mask before the vote
    dnp[4:7, 4:7, 4:7] = 0.9
    unet = np.zeros_like(dnp)
    unet[0:3, 0:3, 0:4] = 0.9
    unet[6:9, 6:9, 6:9] = 0.9  # meets the DNP cube in the single voxel (6, 6, 6)
    kwargs = {"mode": "vote", "model_thresholds": [0.5, 0.5], "threshold": 0.75}
    prob, seg = mix([dnp, unet], [1, 1], min_component_voxels=3, **kwargs)
    assert prob[1, 1, 1] == pytest.approx(0.5)  # only the U-Net's vote is left
    assert prob[6, 6, 6] == pytest.approx(1.0)
    assert seg.sum() == 0  # the one-voxel agreement is removed at the end
    seg_kept = mix([dnp, unet], [1, 1], min_component_voxels=0, **kwargs)[1]
    assert seg_kept[1, 1, 1] == 1 and seg_kept[6, 6, 6] == 1 and seg_kept.sum() == 3


def test_mean_mode_removes_small_components():
    p = np.zeros((8, 8, 8))
    p[0, 0, 0] = 0.9
    p[4:6, 4:6, 4:6] = 0.9
    seg = mix([p], [1], min_component_voxels=2)[1]
    assert seg[0, 0, 0] == 0 and seg.sum() == 8


def test_min_peak_removes_hesitant_components_of_any_size():
    """A component whose highest ensemble probability stays below ``min_peak`` goes, however large; the
    confident one stays whole, its faint border included; 0 (the default) keeps both."""
    p = np.zeros((12, 12, 12))
    p[1:4, 1:4, 1:4] = 0.55  # 27 voxels, never above 0.55
    p[6:11, 6:11, 6:11] = 0.6
    p[8, 8, 8] = 0.95  # one confident voxel makes the 125-voxel component a lesion
    seg = mix([p, p], [1, 1], threshold=0.5, min_peak=0.9)[1]
    assert seg[1:4, 1:4, 1:4].sum() == 0 and seg[6:11, 6:11, 6:11].all() and seg.sum() == 125
    assert mix([p], [1], threshold=0.5)[1].sum() == 125 + 27
    vote = mix([p, p], [1, 1], [0.5, 0.5], mode="vote", threshold=0.5, min_peak=0.9)[1]
    assert vote.sum() == 125 + 27  # both models vote for both: a vote fraction of 1 passes any peak
    half = np.where(p >= 0.9, 0.95, 0.0)  # the second model votes for the one confident voxel alone
    vote = mix([p, half], [1, 1], [0.5, 0.5], mode="vote", threshold=0.5, min_peak=0.9)[1]
    assert vote.sum() == 125  # the 27 voxels got half the vote (0.5 < 0.9), the large blob a full one


def test_min_peak_allows_the_ulps_of_a_sum():
    """Six equal votes of 1/6 sum to a hair under 1 in floating point; a peak of 1 keeps a unanimous
    component, as the threshold allows the same slack."""
    p = np.full((2, 2, 2), 0.9)
    vote = mix([p] * 6, [1] * 6, [0.5] * 6, mode="vote", threshold=1.0, min_peak=1.0)[1]
    assert vote.all()


def test_min_peak_is_left_out_of_the_settings_while_it_is_zero():
    """Files written before the setting existed (hand-set ensembles, entries) keep their contents."""
    assert "min_peak" not in EnsembleSettings().to_dict()
    tuned = EnsembleSettings(mode="mean", min_peak=0.8)
    assert tuned.to_dict()["min_peak"] == 0.8 and EnsembleSettings.from_dict(tuned.to_dict()) == tuned
    with pytest.raises(PatchworkError, match=re.escape("min_peak=1.5: must be <= 1")):
        EnsembleSettings.from_dict({"min_peak": 1.5})


def test_remove_components_by_volume_and_peak():
    mask = np.zeros((10, 10, 10), dtype=bool)
    prob = np.zeros(mask.shape)
    mask[0, 0, 0:3] = True  # 3 voxels, peak 0.9
    prob[0, 0, 1] = 0.9
    mask[5, 5, 2:8] = True  # 6 voxels, peak 0.6
    prob[5, 5, 2:8] = 0.6
    kept = remove_components(mask, 30.0, unit=8.0)  # mm³: 3 voxels are 24 mm³, 6 are 48 mm³
    assert kept.sum() == 6 and kept[5, 5, 2:8].all()
    assert remove_components(mask, 0, prob, 0.7).sum() == 3
    assert remove_components(mask, 0, prob, 0.6).sum() == 9  # a peak equal to the minimum is kept
    assert not remove_components(mask, 30.0, prob, 0.7, unit=8.0).any()
    np.testing.assert_array_equal(remove_components(mask, 0, prob, 0.0), mask)
    with pytest.raises(ValueError, match="needs the probabilities"):
        remove_components(mask, 0, min_peak=0.5)


@pytest.mark.parametrize(
    ("probs", "weights", "kwargs", "message"),
    [
        ([np.zeros((2, 2, 2)), np.zeros((2, 2, 3))], [1, 1], {}, "shape"),
        ([np.zeros((2, 2, 2))] * 2, [1, -1], {}, "weights.m1=-1: must be >= 0"),
        ([np.zeros((2, 2, 2))] * 2, [0, 0], {}, "zero"),
        ([np.zeros((2, 2, 2))] * 2, [1, 1], {"mode": "max"}, "mode='max': expected one of mean, vote"),
        ([np.zeros((2, 2, 2))] * 2, [1, 1], {"threshold": 1.5}, "threshold=1.5: must be <= 1"),
        ([np.zeros((2, 2, 2))] * 2, [1, 1], {"model_thresholds": [0.5, 2]}, "model_thresholds.m1=2"),
        ([], [], {}, "no probability"),
    ],
)
def test_combine_rejects_bad_input(probs, weights, kwargs, message):
    with pytest.raises(PatchworkError, match=re.escape(message)):
        mix(probs, weights, **kwargs)


def test_missing_weight_is_one_and_missing_model_threshold_is_the_default():
    a, b = np.full((1, 1, 2), 0.9), np.array([[[0.0, 0.6]]])
    prob = combine({"a": a, "b": b}, EnsembleSettings(mode="mean", weights={"a": 3.0}))[0]
    np.testing.assert_allclose(prob, 0.75 * a + 0.25 * b, atol=1e-7)
    vote = combine(
        {"a": a, "b": b}, EnsembleSettings(mode="vote", min_component_voxels=0, model_thresholds={"a": 0.95})
    )[0]
    np.testing.assert_allclose(vote, [[[0.0, 0.5]]])  # a below its own 0.95; b cut at 0.5


def test_ensemble_files_round_trip(tmp_path):
    affine = np.diag([1.0, 1.5, 2.0, 1.0])
    affine[:3, 3] = [-10, 5, 3]
    a = np.zeros((6, 5, 4), dtype=np.float32)
    a[1:4, 1:4, 1:3] = 0.8
    b = np.full_like(a, 0.1)
    paths = {"a": tmp_path / "a.nii.gz", "b": tmp_path / "b.nii.gz"}
    save_image(a, affine, paths["a"])
    save_image(b, affine, paths["b"])
    out_prob, out_seg = tmp_path / "out" / "prob.nii.gz", tmp_path / "out" / "seg.nii.gz"
    mean = EnsembleSettings(mode="mean", weights={"a": 3, "b": 1}, min_component_voxels=0)
    ensemble_files(paths, mean, out_prob, out_seg)
    prob_img, seg_img = nib.load(out_prob), nib.load(out_seg)
    assert prob_img.get_data_dtype() == np.float32 and seg_img.get_data_dtype() == np.uint8
    np.testing.assert_allclose(prob_img.affine, affine)
    np.testing.assert_allclose(seg_img.affine, affine)
    np.testing.assert_allclose(prob_img.get_fdata(), 0.75 * a + 0.25 * b, atol=1e-6)
    np.testing.assert_array_equal(
        np.asanyarray(seg_img.dataobj), (0.75 * a + 0.25 * b >= 0.5).astype(np.uint8)
    )
    assert sorted(p.name for p in out_prob.parent.iterdir()) == ["prob.nii.gz", "seg.nii.gz"]


def test_ensemble_files_rejects_other_affine(tmp_path):
    data = np.zeros((4, 4, 4), dtype=np.float32)
    shifted = np.eye(4)
    shifted[0, 3] = 1.0
    save_image(data, np.eye(4), tmp_path / "a.nii.gz")
    save_image(data, shifted, tmp_path / "b.nii.gz")
    with pytest.raises(PatchworkError, match=r"b\.nii\.gz: affine differs"):
        ensemble_files(
            {"a": tmp_path / "a.nii.gz", "b": tmp_path / "b.nii.gz"},
            EnsembleSettings(),
            tmp_path / "p.nii.gz",
            tmp_path / "s.nii.gz",
        )
    assert not (tmp_path / "p.nii.gz").exists()

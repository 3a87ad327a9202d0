"""Tests of patchwork.metrics on shapes with known answers, in mm, with the empty-mask convention."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from patchwork.errors import PatchworkError
from patchwork.io import save_image
from patchwork.metrics import METRICS, dice, evaluate_subject, hausdorff, hd95, mask_metrics, summarise


def ball(shape: tuple[int, int, int], centre: tuple[float, float, float], radius: float) -> np.ndarray:
    """Voxels whose centre lies within ``radius`` voxels of ``centre``."""
    grid = np.indices(shape, dtype=np.float64)
    return sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2


def box(shape: tuple[int, int, int], lo: tuple[int, int, int], hi: tuple[int, int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return mask


def test_identical_balls():
    a = ball((32, 32, 32), (16, 16, 16), 10)
    assert dice(a, a) == 1.0
    assert hausdorff(a, a, (1, 1, 1)) == 0.0
    assert hd95(a, a, (1, 1, 1)) == 0.0


def test_shifted_balls_match_the_analytic_values():
    shape = (48, 32, 32)
    a, b = ball(shape, (20, 16, 16), 10), ball(shape, (24, 16, 16), 10)
    # Hausdorff distance of two spheres of radius r whose centres are d apart is d.
    assert abs(hausdorff(a, b, (1, 1, 1)) - 4.0) <= 1.0
    assert hd95(a, b, (1, 1, 1)) <= hausdorff(a, b, (1, 1, 1))
    # Lens volume of two balls: pi (4r + d)(2r - d)^2 / 12.
    lens = math.pi * (4 * 10 + 4) * (2 * 10 - 4) ** 2 / 12
    assert dice(a, b) == pytest.approx(lens / (4 / 3 * math.pi * 10**3), abs=0.02)


@pytest.mark.parametrize(
    ("spacing", "axis", "expected"), [((1, 1, 3), 2, 6.0), ((1, 1, 3), 0, 2.0), ((2, 1, 1), 0, 4.0)]
)
def test_distances_are_in_mm(spacing, axis, expected):
    lo, hi = [4, 4, 4], [12, 12, 10]
    a = box((20, 20, 16), tuple(lo), tuple(hi))
    lo[axis] += 2
    hi[axis] += 2
    b = box((20, 20, 16), tuple(lo), tuple(hi))  # shifted by two voxels along ``axis``
    assert hausdorff(a, b, spacing) == pytest.approx(expected)
    assert hd95(a, b, spacing) <= expected


def test_distance_between_far_apart_voxels_is_exact():
    a, b = np.zeros((30, 5, 5), dtype=bool), np.zeros((30, 5, 5), dtype=bool)
    a[0, 0, 0] = b[20, 3, 4] = True
    assert hausdorff(a, b, (2.0, 1.0, 0.5)) == pytest.approx(math.hypot(40.0, 3.0, 2.0))


def test_empty_mask_convention():
    empty, full = np.zeros((8, 8, 8), dtype=bool), box((8, 8, 8), (2, 2, 2), (5, 5, 5))
    assert dice(empty, empty) == 1.0
    assert hausdorff(empty, empty, (1, 1, 1)) == 0.0 and hd95(empty, empty, (1, 1, 1)) == 0.0
    for pred, ref in ((empty, full), (full, empty)):
        assert dice(pred, ref) == 0.0
        assert math.isnan(hausdorff(pred, ref, (1, 1, 1))) and math.isnan(hd95(pred, ref, (1, 1, 1)))
        scores = mask_metrics(pred, ref, (1, 1, 1))
        assert scores["dice"] == 0.0 and math.isnan(scores["hd95"]) and math.isnan(scores["hausdorff"])
    both_empty = mask_metrics(empty, empty, (1, 1, 1))
    assert both_empty["dice"] == 1.0 and both_empty["hd95"] == 0.0 and both_empty["lesion_count_pred"] == 0


def test_shape_mismatch_is_an_error():
    with pytest.raises(PatchworkError, match="shape"):
        hausdorff(np.ones((4, 4, 4)), np.ones((4, 4, 5)), (1, 1, 1))
    with pytest.raises(PatchworkError, match="spacing"):
        hd95(np.ones((4, 4, 4)), np.ones((4, 4, 4)), (1, 1))


def test_evaluate_subject(tmp_path):
    affine = np.diag([1.0, 1.0, 3.0, 1.0])
    ref = np.zeros((20, 20, 10), dtype=np.uint8)
    ref[2:6, 2:6, 2:4] = 1  # 32 voxels
    ref[12:16, 12:16, 5:7] = 1  # 32 voxels, a second lesion
    ref[8:10, 8:10, 8] = 2  # 4 voxels of another label
    pred = np.zeros_like(ref)
    pred[2:6, 2:6, 2:4] = 1
    save_image(ref, affine, tmp_path / "ref.nii.gz", dtype=np.uint8)
    save_image(pred, affine, tmp_path / "pred.nii.gz", dtype=np.uint8)
    save_image(ref, affine, tmp_path / "perfect.nii.gz", dtype=np.uint8)
    table = evaluate_subject(
        "s01",
        tmp_path / "ref.nii.gz",
        {"unet": tmp_path / "pred.nii.gz", "oracle": tmp_path / "perfect.nii.gz"},
        labels={"lesion": 1, "other": 2},
    )
    assert list(table.columns) == ["subject", "model", "label", "metric", "value"]
    assert len(table) == 2 * 2 * len(METRICS) and set(table["subject"]) == {"s01"}
    value = table.set_index(["model", "label", "metric"])["value"]
    assert value["unet", "lesion", "dice"] == pytest.approx(2 * 32 / 96)
    assert value["unet", "lesion", "volume_pred_ml"] == pytest.approx(32 * 3 / 1000)
    assert value["unet", "lesion", "volume_ref_ml"] == pytest.approx(64 * 3 / 1000)
    assert (
        value["unet", "lesion", "lesion_count_pred"] == 1 and value["unet", "lesion", "lesion_count_ref"] == 2
    )
    assert value["unet", "other", "dice"] == 0.0 and math.isnan(value["unet", "other", "hd95"])
    assert value["oracle", "other", "dice"] == 1.0 and value["oracle", "lesion", "hausdorff"] == 0.0
    default = evaluate_subject("s01", tmp_path / "ref.nii.gz", {"unet": tmp_path / "pred.nii.gz"})
    assert set(default["label"]) == {"lesion"}


@pytest.mark.parametrize(
    ("shape", "affine", "message"),
    [((20, 20, 9), np.eye(4), "shape"), ((20, 20, 10), np.diag([1.0, 1.0, 2.0, 1.0]), "affine")],
)
def test_evaluate_subject_rejects_other_grid(tmp_path, shape, affine, message):
    save_image(np.zeros((20, 20, 10), np.uint8), np.eye(4), tmp_path / "ref.nii.gz")
    save_image(np.zeros(shape, np.uint8), affine, tmp_path / "odd.nii.gz")
    with pytest.raises(PatchworkError, match=rf"odd\.nii\.gz: {message}"):
        evaluate_subject("s", tmp_path / "ref.nii.gz", {"m": tmp_path / "odd.nii.gz"})


def test_evaluate_subject_rejects_probabilities(tmp_path):
    save_image(np.zeros((4, 4, 4), np.uint8), np.eye(4), tmp_path / "ref.nii.gz")
    save_image(np.full((4, 4, 4), 0.3, np.float32), np.eye(4), tmp_path / "prob.nii.gz")
    with pytest.raises(PatchworkError, match=r"prob\.nii\.gz: expected a label map"):
        evaluate_subject("s", tmp_path / "ref.nii.gz", {"m": tmp_path / "prob.nii.gz"})


def test_summarise_skips_nan():
    dice_values = [0.5, 0.7, 0.9, 0.6]
    rows = [(f"s{i}", "unet", "lesion", "dice", v) for i, v in enumerate(dice_values)]
    rows += [(f"s{i}", "unet", "lesion", "hd95", v) for i, v in enumerate([2.0, float("nan"), 4.0, 6.0])]
    rows += [("s0", "dnp", "lesion", "dice", 0.8)]
    summary = summarise(pd.DataFrame(rows, columns=["subject", "model", "label", "metric", "value"]))
    assert list(summary.columns) == ["model", "label", "metric", "n", "mean", "sd", "median", "q1", "q3"]
    assert list(summary["model"]) == ["unet", "unet", "dnp"]
    row = summary.set_index(["model", "metric"])
    assert row.loc[("unet", "dice"), "n"] == 4
    assert row.loc[("unet", "dice"), "mean"] == pytest.approx(np.mean(dice_values))
    assert row.loc[("unet", "dice"), "sd"] == pytest.approx(np.std(dice_values, ddof=1))
    assert row.loc[("unet", "dice"), "median"] == pytest.approx(0.65)
    assert row.loc[("unet", "dice"), "q1"] == pytest.approx(np.quantile(dice_values, 0.25))
    assert row.loc[("unet", "dice"), "q3"] == pytest.approx(np.quantile(dice_values, 0.75))
    assert row.loc[("unet", "hd95"), "n"] == 3 and row.loc[("unet", "hd95"), "mean"] == pytest.approx(4.0)
    assert row.loc[("dnp", "dice"), "n"] == 1 and math.isnan(row.loc[("dnp", "dice"), "sd"])
    with pytest.raises(PatchworkError, match="value"):
        summarise(pd.DataFrame({"subject": [], "model": [], "label": [], "metric": []}))

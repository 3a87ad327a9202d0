"""Tests of patchwork.evaluation.metrics, .surface and .lesions on shapes with known answers, in mm."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from patchwork.errors import PatchworkError
from patchwork.evaluation.lesions import LesionMatch
from patchwork.evaluation.metrics import (
    DISTANCE_METRICS,
    METRICS,
    OVERLAP_METRICS,
    dice,
    evaluate_subject,
    hausdorff,
    hd95,
    mask_metrics,
    summarise,
)
from patchwork.evaluation.surface import SurfaceDistances, bounding_box, surface
from patchwork.io import save_image


def ball(
    shape: tuple[int, int, int], spacing: tuple[float, ...], centre_mm: np.ndarray, radius_mm: float
) -> np.ndarray:
    """Voxels whose centre (index times spacing, in mm) lies within ``radius_mm`` of ``centre_mm``."""
    grid = np.indices(shape, dtype=np.float64)
    return sum((g * s - c) ** 2 for g, s, c in zip(grid, spacing, centre_mm, strict=True)) <= radius_mm**2


def box(shape: tuple[int, int, int], lo: tuple[int, int, int], hi: tuple[int, int, int]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]] = True
    return mask


def sphere_points(centre: np.ndarray, radius: float, n: int = 20000) -> np.ndarray:
    """``n`` points spread evenly over a sphere (Fibonacci lattice: equal area per point)."""
    k = np.arange(n) + 0.5
    z = 1 - 2 * k / n
    phi = np.pi * (1 + 5**0.5) * k
    r = np.sqrt(1 - z**2)
    return centre + radius * np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=1)


def analytic_ball_pair(a: float, b: float, offset: np.ndarray) -> dict[str, float]:
    """Dice, Hausdorff, HD95 and ASSD of two continuous balls of radii ``a`` and ``b`` whose centres
    are ``offset`` apart (|offset| < a + b, neither inside the other).

    The distance of a point p to the sphere of centre c and radius r is | |p - c| - r | exactly; the
    surfaces are sampled by area, and the ASSD pools both surfaces weighted by their areas.
    """
    d = float(np.linalg.norm(offset))
    lens = math.pi * (a + b - d) ** 2 * (d**2 + 2 * d * (a + b) - 3 * (a - b) ** 2) / (12 * d)
    to_b = np.abs(np.linalg.norm(sphere_points(np.zeros(3), a) - offset, axis=1) - b)
    to_a = np.abs(np.linalg.norm(sphere_points(offset, b), axis=1) - a)
    return {
        "dice": 2 * lens / (4 / 3 * math.pi * (a**3 + b**3)),
        "hausdorff": max(to_b.max(), to_a.max()),
        "hd95": max(np.percentile(to_b, 95), np.percentile(to_a, 95)),
        "assd": (a**2 * to_b.mean() + b**2 * to_a.mean()) / (a**2 + b**2),
    }


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.8, 1.0, 2.0)])
def test_two_balls_match_the_analytic_values(spacing):
    """Two balls of 9 and 12 mm, 7 mm apart obliquely: within one voxel of the continuous answer."""
    shape = tuple(int(60 / s) for s in spacing)
    centre = np.array([28.0, 29.0, 30.0])
    offset = np.array([4.0, -3.0, 4.9])
    a, b = 9.0, 12.0
    pred, ref = ball(shape, spacing, centre, a), ball(shape, spacing, centre + offset, b)
    scores = mask_metrics(pred, ref, spacing)
    expected = analytic_ball_pair(a, b, offset)
    voxel = max(spacing)
    assert scores["dice"] == pytest.approx(expected["dice"], abs=0.03)
    for metric in ("hausdorff", "hd95", "assd"):
        assert abs(scores[metric] - expected[metric]) <= voxel, metric
    assert scores["hd95"] <= scores["hausdorff"]


def test_concentric_balls_are_their_radius_difference_apart():
    spacing = (1.0, 1.0, 1.5)
    centre = np.array([20.0, 20.0, 21.0])
    pred, ref = ball((40, 40, 28), spacing, centre, 8.0), ball((40, 40, 28), spacing, centre, 12.0)
    scores = mask_metrics(pred, ref, spacing, tolerance_mm=2.0)
    for metric in ("hausdorff", "hd95", "assd"):
        assert abs(scores[metric] - 4.0) <= 1.5, metric
    assert scores["dice"] == pytest.approx(2 * 8**3 / (8**3 + 12**3), abs=0.03)
    assert scores["surface_dice"] < 0.2  # the surfaces are about 4 mm apart: almost none within 2 mm
    assert mask_metrics(pred, ref, spacing, tolerance_mm=6.0)["surface_dice"] == 1.0


def brute_force(
    pred: np.ndarray, ref: np.ndarray, spacing: tuple[float, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """Directed surface distances from all pairs of surface voxel centres (the definition itself)."""
    p = np.argwhere(surface(pred)) * np.asarray(spacing)
    r = np.argwhere(surface(ref)) * np.asarray(spacing)
    pairs = cdist(p, r)
    return pairs.min(axis=1), pairs.min(axis=0)


@pytest.mark.parametrize("shape", [(9, 7), (8, 6, 5)])
def test_surface_is_the_mask_minus_its_face_connected_erosion(shape):
    """Outside the array counts as outside: a voxel on the border is always surface."""
    mask = np.random.default_rng(len(shape)).random(shape) < 0.6
    structure = ndimage.generate_binary_structure(len(shape), 1)
    expected = mask & ~ndimage.binary_erosion(mask, structure=structure, border_value=0)
    np.testing.assert_array_equal(surface(mask), expected)
    assert surface(np.ones(shape, dtype=bool))[(0,) * len(shape)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_surface_scores_equal_the_definition(seed):
    """Random blobs, one touching the image border, anisotropic spacing: exact to 1e-9 mm."""
    rng = np.random.default_rng(seed)
    shape, spacing = (14, 16, 12), (0.7, 1.3, 2.1)
    pred = rng.random(shape) < 0.03
    pred[3:7, 4:9, 2:5] = True
    ref = np.zeros(shape, dtype=bool)
    ref[0:5, 6:12, 4:9] = True  # touches the border at x = 0
    ref[10:12, 1:3, 10:12] = True
    to_ref, to_pred = brute_force(pred, ref, spacing)
    d = SurfaceDistances.compute(pred, ref, spacing)
    np.testing.assert_allclose(np.sort(d.pred_to_ref), np.sort(to_ref), atol=1e-9)
    np.testing.assert_allclose(np.sort(d.ref_to_pred), np.sort(to_pred), atol=1e-9)
    scores = mask_metrics(pred, ref, spacing, tolerance_mm=1.5)
    pooled = np.concatenate([to_ref, to_pred])
    assert scores["hausdorff"] == pytest.approx(pooled.max(), abs=1e-9)
    assert scores["hd95"] == pytest.approx(
        max(np.percentile(to_ref, 95), np.percentile(to_pred, 95)), abs=1e-9
    )
    assert scores["assd"] == pytest.approx(pooled.mean(), abs=1e-9)
    assert scores["surface_dice"] == pytest.approx(np.mean(pooled <= 1.5), abs=1e-12)


def test_metrics_do_not_depend_on_the_margin_around_the_masks():
    spacing = (1.0, 2.0, 1.5)
    pred = ball((20, 12, 16), spacing, np.array([9.0, 11.0, 12.0]), 6.0)
    ref = ball((20, 12, 16), spacing, np.array([11.0, 12.0, 11.0]), 5.0)
    big_pred, big_ref = np.zeros((50, 40, 45), bool), np.zeros((50, 40, 45), bool)
    big_pred[10:30, 20:32, 5:21], big_ref[10:30, 20:32, 5:21] = pred, ref
    small, big = mask_metrics(pred, ref, spacing), mask_metrics(big_pred, big_ref, spacing)
    assert list(small) == list(METRICS)
    assert small == pytest.approx(big, abs=1e-12)


def test_distances_along_one_axis_are_in_mm():
    a = box((20, 20, 16), (4, 4, 4), (12, 12, 10))
    b = box((20, 20, 16), (4, 4, 6), (12, 12, 12))  # shifted by two voxels of 3 mm along z
    assert hausdorff(a, b, (1, 1, 3)) == pytest.approx(6.0)
    assert hd95(a, b, (1, 1, 3)) <= 6.0
    far_a, far_b = np.zeros((30, 5, 5), dtype=bool), np.zeros((30, 5, 5), dtype=bool)
    far_a[0, 0, 0] = far_b[20, 3, 4] = True
    assert hausdorff(far_a, far_b, (2.0, 1.0, 0.5)) == pytest.approx(math.hypot(40.0, 3.0, 2.0))


def test_bounding_box():
    mask = box((10, 12, 8), (2, 3, 0), (5, 4, 8))
    assert bounding_box(mask) == (slice(2, 5), slice(3, 4), slice(0, 8))
    assert bounding_box(mask, margin=1) == (slice(1, 6), slice(2, 5), slice(0, 8))
    assert bounding_box(np.zeros((3, 3, 3))) is None
    with pytest.raises(ValueError, match="non-empty"):
        SurfaceDistances.compute(mask, np.zeros_like(mask), (1, 1, 1))


def test_empty_mask_convention_holds_for_every_metric():
    empty, full = np.zeros((8, 8, 8), dtype=bool), box((8, 8, 8), (2, 2, 2), (5, 5, 5))
    both_empty = mask_metrics(empty, empty, (1, 1, 1))
    assert all(both_empty[m] == 1.0 for m in OVERLAP_METRICS)
    assert all(both_empty[m] == 0.0 for m in DISTANCE_METRICS)
    assert both_empty["volume_diff_ml"] == 0.0 and both_empty["lesion_count_diff"] == 0.0
    assert dice(empty, empty) == 1.0 and hausdorff(empty, empty, (1, 1, 1)) == 0.0
    for pred, ref in ((empty, full), (full, empty)):
        one_empty = mask_metrics(pred, ref, (1, 1, 2))
        assert all(one_empty[m] == 0.0 for m in OVERLAP_METRICS)
        assert all(math.isnan(one_empty[m]) for m in DISTANCE_METRICS)
        assert one_empty["volume_diff_ml"] == pytest.approx(27 * 2 / 1000)
        assert one_empty["lesion_count_diff"] == 1.0
        assert math.isnan(hd95(pred, ref, (1, 1, 1)))


def test_lesion_wise_scores():
    ref = np.zeros((30, 30, 10), dtype=bool)
    ref[2:6, 2:6, 2:6] = True  # R1, 64 voxels: half found by P1
    ref[10:12, 10:12, 2:4] = True  # R2, 8 voxels: found exactly by P2
    ref[20:22, 20:22, 2:4] = True  # R3, 8 voxels: missed
    pred = np.zeros_like(ref)
    pred[2:6, 2:6, 4:8] = True  # P1, 64 voxels, 32 shared with R1
    pred[10:12, 10:12, 2:4] = True  # P2
    pred[25:27, 2:4, 2:4] = True  # P3: a false positive
    match = LesionMatch.compute(pred, ref)
    assert (match.n_ref, match.n_pred) == (3, 3)
    assert match.recall() == pytest.approx(2 / 3) and match.precision() == pytest.approx(2 / 3)
    assert match.f1() == pytest.approx(2 / 3)
    assert match.per_blob_dice() == pytest.approx((2 * 32 / 128 + 1.0 + 0.0) / 3)
    scores = mask_metrics(pred, ref, (1, 1, 1))
    assert scores["lesion_count_diff"] == 0.0 and scores["lesion_f1"] == pytest.approx(2 / 3)
    assert match.false_positives() == 1 and scores["lesion_false_positives"] == 1.0
    bridge = pred.copy()
    for t in range(6, 11):
        bridge[t, t, 4] = True  # a diagonal chain joins P1 and P2 into one component of 77 voxels
    bridged = LesionMatch.compute(bridge, ref)
    assert bridged.n_pred == 2 and bridged.precision() == pytest.approx(1 / 2)
    assert bridged.recall() == pytest.approx(2 / 3)
    expected = (2 * 32 / (64 + 77) + 2 * 8 / (8 + 77) + 0.0) / 3
    assert bridged.per_blob_dice() == pytest.approx(expected)


def test_shape_mismatch_is_an_error():
    with pytest.raises(PatchworkError, match="shape"):
        hausdorff(np.ones((4, 4, 4)), np.ones((4, 4, 5)), (1, 1, 1))
    with pytest.raises(PatchworkError, match="spacing"):
        mask_metrics(np.ones((4, 4, 4)), np.ones((4, 4, 4)), (1, 1))


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
    assert list(table["metric"][: len(METRICS)]) == list(METRICS)
    value = table.set_index(["model", "label", "metric"])["value"]
    assert value["unet", "lesion", "dice"] == pytest.approx(2 * 32 / 96)
    assert value["unet", "lesion", "volume_pred_ml"] == pytest.approx(32 * 3 / 1000)
    assert value["unet", "lesion", "volume_ref_ml"] == pytest.approx(64 * 3 / 1000)
    assert value["unet", "lesion", "volume_diff_ml"] == pytest.approx(32 * 3 / 1000)
    assert (
        value["unet", "lesion", "lesion_count_diff"] == 1 and value["unet", "lesion", "lesion_recall"] == 0.5
    )
    assert value["unet", "lesion", "per_blob_dice"] == pytest.approx(0.5)
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
    assert list(summary.columns) == [
        "model",
        "label",
        "metric",
        "n",
        "mean",
        "sd",
        "median",
        "q1",
        "q3",
        "iqr",
    ]
    assert list(summary["model"]) == ["unet", "unet", "dnp"]
    row = summary.set_index(["model", "metric"])
    assert row.loc[("unet", "dice"), "n"] == 4
    assert row.loc[("unet", "dice"), "mean"] == pytest.approx(np.mean(dice_values))
    assert row.loc[("unet", "dice"), "sd"] == pytest.approx(np.std(dice_values, ddof=1))
    assert row.loc[("unet", "dice"), "median"] == pytest.approx(0.65)
    q1, q3 = np.quantile(dice_values, [0.25, 0.75])
    assert row.loc[("unet", "dice"), "q1"] == pytest.approx(q1) and row.loc[
        ("unet", "dice"), "q3"
    ] == pytest.approx(q3)
    assert row.loc[("unet", "dice"), "iqr"] == pytest.approx(q3 - q1)
    assert row.loc[("unet", "hd95"), "n"] == 3 and row.loc[("unet", "hd95"), "mean"] == pytest.approx(4.0)
    assert row.loc[("dnp", "dice"), "n"] == 1 and math.isnan(row.loc[("dnp", "dice"), "sd"])
    with pytest.raises(PatchworkError, match="value"):
        summarise(pd.DataFrame({"subject": [], "model": [], "label": [], "metric": []}))

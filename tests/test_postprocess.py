"""Post-processing: components removed by volume (mm³) and peak probability, tuned on out-of-fold cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from patchwork.cli import main
from patchwork.errors import PatchworkError
from patchwork.io import read_image, save_image, write_json
from patchwork.postprocessing.components import (
    Case,
    ComponentTable,
    Postprocessing,
    dice_grid,
    postprocess,
    read_postprocessing,
    tune_postprocessing,
    voxel_volume,
)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * (a & b).sum() / total


def scene() -> tuple[np.ndarray, np.ndarray]:
    """A lesion found with confidence (p 0.95, 4³ voxels), a large hesitant blob (p 0.6, 3³) and a small
    confident speck (p 0.97, 1 voxel), on a 20³ grid."""
    prob = np.zeros((20, 20, 20), dtype=np.float32)
    reference = np.zeros(prob.shape, dtype=bool)
    prob[2:6, 2:6, 2:6] = 0.95
    reference[2:6, 2:6, 3:7] = True
    prob[10:13, 10:13, 10:13] = 0.6
    prob[17, 17, 17] = 0.97
    return prob, reference


def test_postprocess_removes_components_by_volume_in_mm3_and_by_peak() -> None:
    prob, _ = scene()
    assert postprocess(prob, Postprocessing(), 1.0).sum() == 64 + 27 + 1
    # 2 voxels of 8 mm³ = 16 mm³: the 1-voxel speck (8 mm³) goes, the 27-voxel blob stays
    assert postprocess(prob, Postprocessing(min_volume_mm3=16.0), 8.0).sum() == 64 + 27
    # the same limit at 1 mm³ voxels also removes nothing else
    assert postprocess(prob, Postprocessing(min_volume_mm3=16.0), 1.0).sum() == 64 + 27
    assert postprocess(prob, Postprocessing(min_peak=0.9), 1.0).sum() == 64 + 1
    assert postprocess(prob, Postprocessing(threshold=0.7), 1.0).sum() == 64 + 1


def test_components_touching_by_a_corner_are_one() -> None:
    prob = np.zeros((4, 4, 4), dtype=np.float32)
    prob[0, 0, 0], prob[1, 1, 1] = 0.9, 0.9
    assert postprocess(prob, Postprocessing(min_volume_mm3=2.0), 1.0).sum() == 2


def test_dice_grid_equals_dice_of_each_postprocessed_mask() -> None:
    rng = np.random.default_rng(0)
    from scipy import ndimage

    prob = ndimage.gaussian_filter(rng.random((24, 24, 24)), 1.5).astype(np.float32)
    prob = (prob - prob.min()) / (prob.max() - prob.min())
    reference = prob > 0.6
    reference[:4] = True
    volumes, peaks = [0.0, 16.0, 80.0, 400.0], [0.0, 0.6, 0.7, 0.9]
    grid = dice_grid(ComponentTable.of(prob, reference, 0.5, unit=8.0), volumes, peaks)
    for i, v in enumerate(volumes):
        for j, q in enumerate(peaks):
            mask = postprocess(prob, Postprocessing(0.5, v, q), 8.0)
            assert grid[i, j] == pytest.approx(_dice(mask, reference))


def test_tuning_removes_the_false_positives_and_reports_the_untouched_score() -> None:
    prob, reference = scene()
    cases = [Case(prob, reference, 1.0), Case(prob[::-1].copy(), reference[::-1].copy(), 1.0)]
    result = tune_postprocessing(cases, model_threshold=0.5)
    settings = Postprocessing.from_dict(result["settings"])
    mask = postprocess(prob, settings, 1.0)
    assert result["mean_dice"] == pytest.approx(_dice(mask, reference))
    lesion_alone = prob == np.float32(0.95)
    assert result["mean_dice"] == pytest.approx(_dice(lesion_alone, reference))
    assert result["untouched"]["mean_dice"] == pytest.approx(_dice(prob >= 0.5, reference))
    assert result["mean_dice"] > result["untouched"]["mean_dice"] + 0.1
    assert result["n_subjects"] == 2


def test_empty_cohort_and_bad_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(PatchworkError, match="no subjects"):
        tune_postprocessing([], 0.5)
    write_json(tmp_path / "pp.json", {"settings": {"threshold": 2.0}})
    with pytest.raises(PatchworkError, match=r"pp.json: postprocessing: threshold"):
        read_postprocessing(tmp_path / "pp.json")
    write_json(tmp_path / "other.json", {"weights": {}})
    with pytest.raises(PatchworkError, match="not a postprocessing.json"):
        read_postprocessing(tmp_path / "other.json")


def test_postprocess_command_writes_a_mask_in_the_grid_of_the_probability(tmp_path: Path) -> None:
    prob, _ = scene()
    affine = np.diag([-2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = [40.0, -20.0, 5.0]
    save_image(prob, affine, tmp_path / "batch" / "s_prob.nii.gz", dtype=np.float32)
    settings = {"threshold": 0.5, "min_volume_mm3": 13.0, "min_peak": 0.0}
    write_json(tmp_path / "pp.json", {"settings": settings})
    assert voxel_volume(affine) == pytest.approx(12.0)
    out = tmp_path / "out" / "s_seg.nii.gz"
    argv = ["postprocess", "--prob-dir", str(tmp_path / "batch"), "--tuned", str(tmp_path / "pp.json")]
    assert main([*argv, "--out-dir", str(out.parent)]) == 0
    seg, seg_affine = read_image(out)
    np.testing.assert_allclose(seg_affine, affine)
    assert seg.sum() == 64 + 27  # the 12 mm³ speck is under 13 mm³


def test_component_peaks_equal_scipy_maximum() -> None:
    from scipy import ndimage

    from patchwork.postprocessing.components import component_peaks, label_components

    rng = np.random.default_rng(3)
    prob = rng.uniform(0, 1, (15, 16, 17))
    mask = prob >= 0.7
    labels, n = label_components(mask)
    expected = ndimage.maximum(prob, labels, np.arange(1, n + 1))
    np.testing.assert_array_equal(component_peaks(prob, labels, mask, n), expected)
    assert component_peaks(prob, labels, np.zeros_like(mask), 0).shape == (0,)

"""Ensemble tuning: the grid search finds the settings that an analytic setup makes best."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from patchwork.config import EnsembleSettings
from patchwork.ensemble_tuning import Case, load_case, read_tuned, tune_ensemble, weight_grid
from patchwork.errors import PatchworkError
from patchwork.io import save_image, write_json

HAND_SET = EnsembleSettings(mode="vote", min_component_voxels=3, model_thresholds={"good": 0.3})


def cube_case(rng: np.random.Generator) -> Case:
    """A reference cube; model 0 sees it at p=0.4 plus isolated specks at 0.9, model 1 is noise."""
    ref = np.zeros((20, 20, 20), dtype=bool)
    ref[5:12, 5:12, 5:12] = True
    good = np.where(ref, 0.4, 0.0)
    good[rng.integers(14, 20, 6), rng.integers(14, 20, 6), rng.integers(0, 20, 6)] = 0.9
    noise = rng.uniform(0.0, 0.3, ref.shape)
    return Case(np.stack([good, noise]).astype(np.float32), ref)


def test_weight_grid_has_one_vector_per_ratio() -> None:
    grid = weight_grid(2)
    ratios = {round(a / (a + b), 6) for a, b in grid}
    assert len(grid) == len(ratios) == 5  # 0:1, 1:2, 1:1, 2:1, 1:0
    assert (0.0, 0.0) not in grid


def test_tuning_finds_the_informative_model_threshold_and_min_size() -> None:
    rng = np.random.default_rng(0)
    cases = [cube_case(rng) for _ in range(3)]
    result = tune_ensemble(cases, ["good", "noise"], HAND_SET)
    tuned = result["settings"]
    assert tuned["weights"]["noise"] == 0.0 and tuned["weights"]["good"] > 0
    assert 0.1 <= tuned["threshold"] <= 0.4
    assert tuned["min_component_voxels"] >= 5  # the specks are single voxels
    assert tuned["mode"] == "mean" and tuned["model_thresholds"] == {"good": 0.3}
    assert result["mean_dice"] == pytest.approx(1.0)
    # the hand-set vote: "good" cut at its own 0.3 finds the cube (half the vote: 0.5 >= 0.5), "noise" never
    # passes 0.5, and the single-voxel specks fall below 3 voxels
    assert result["hand_set"] == {"settings": HAND_SET.to_dict(), "mean_dice": pytest.approx(1.0)}
    assert result["n_subjects"] == 3


def test_tuned_settings_read_back_into_one_settings_object(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    result = tune_ensemble([cube_case(rng)], ["good", "noise"], HAND_SET)
    write_json(tmp_path / "ensemble_params.json", result)
    tuned = read_tuned(tmp_path / "ensemble_params.json")
    assert isinstance(tuned, EnsembleSettings) and tuned.to_dict() == result["settings"]
    write_json(tmp_path / "bad.json", {"settings": {**result["settings"], "mode": "max"}})
    with pytest.raises(PatchworkError, match=r"bad\.json: ensemble: mode='max'"):
        read_tuned(tmp_path / "bad.json")


def test_load_case_crops_and_checks_the_grid(tmp_path: Path) -> None:
    ref = np.zeros((30, 30, 30), dtype=np.uint8)
    ref[10:15, 10:15, 10:15] = 1
    prob = ref.astype(np.float32) * 0.8
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    save_image(ref, affine, tmp_path / "ref.nii.gz", dtype=np.uint8)
    save_image(prob, affine, tmp_path / "a.nii.gz", dtype=np.float32)
    save_image(prob, np.diag([1.0, 2.0, 2.0, 1.0]), tmp_path / "b.nii.gz", dtype=np.float32)

    case = load_case([tmp_path / "a.nii.gz"], tmp_path / "ref.nii.gz", lowest_threshold=0.1)
    assert case.probs.shape == (1, 5, 5, 5) and case.reference.all()
    with pytest.raises(PatchworkError, match="b.nii.gz: affine differs"):
        load_case([tmp_path / "a.nii.gz", tmp_path / "b.nii.gz"], tmp_path / "ref.nii.gz", 0.1)


def test_no_cases_is_an_error() -> None:
    with pytest.raises(PatchworkError, match="no subjects"):
        tune_ensemble([], ["a"], HAND_SET)

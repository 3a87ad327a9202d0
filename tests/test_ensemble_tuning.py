"""Ensemble tuning: the grid search finds the settings that an analytic setup makes best."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from patchwork.config import EnsembleSettings
from patchwork.ensembling.tuning import Case, load_case, read_tuned, tune_ensemble, weight_grid
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


def test_threshold_counts_and_bound_match_thresholding_each_time() -> None:
    from patchwork.ensembling.tuning import THRESHOLDS, dice_bound_per_threshold, threshold_counts

    rng = np.random.default_rng(1)
    prob = rng.uniform(0, 1, (12, 13, 14))
    prob[0, 0, :4] = [0.1, 0.15, 0.9, 1.0]  # values on the thresholds count as above
    ref = rng.uniform(0, 1, prob.shape) > 0.6
    predicted, inter = threshold_counts(prob, ref, THRESHOLDS)
    assert predicted.tolist() == [np.sum(prob >= t) for t in THRESHOLDS]
    assert inter.tolist() == [np.sum((prob >= t) & ref) for t in THRESHOLDS]
    bound = dice_bound_per_threshold(prob, ref, THRESHOLDS)
    np.testing.assert_allclose(bound, 2 * inter / (inter + ref.sum()))
    empty = dice_bound_per_threshold(np.zeros((3, 3)), np.zeros((3, 3), bool), THRESHOLDS)
    assert empty.tolist() == [1.0] * 17


# The reference search, written from the definitions (not from the implementation's helpers): every
# weight ratio over {0, 1, 2}, thresholds 0.10 ... 0.90, minimum sizes 0 ... 100 voxels, minimum peaks
# 0 ... 0.95; the weighted mean of the probabilities, 26-connected components of its mask under the minimum
# size or with a lower highest probability removed, Dice against the reference (both empty: 1), averaged
# over the cases.
REFERENCE_THRESHOLDS = [round(0.10 + 0.05 * k, 2) for k in range(17)]
REFERENCE_MIN_SIZES = [0, 5, 10, 27, 50, 100]
REFERENCE_MIN_PEAKS = [0.0, 0.6, 0.7, 0.8, 0.9, 0.95]


def _dice(mask: np.ndarray, reference: np.ndarray) -> float:
    total = int(mask.sum()) + int(reference.sum())
    return 1.0 if total == 0 else 2.0 * int((mask & reference).sum()) / total


def _components(prob: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, sizes and highest probabilities of the 26-connected components of ``prob >= threshold``."""
    from scipy import ndimage

    mask = prob >= threshold
    labels, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, bool))
    index = np.arange(1, n + 1)
    return (
        labels,
        np.asarray(ndimage.sum(mask, labels, index)),
        np.asarray(ndimage.maximum(prob, labels, index)),
    )


def _filtered(
    components: tuple[np.ndarray, np.ndarray, np.ndarray], min_size: int, min_peak: float
) -> np.ndarray:
    labels, sizes, peaks = components
    return np.isin(labels, np.flatnonzero((sizes >= min_size) & (peaks >= min_peak)) + 1)


def _exhaustive(cases: list[Case]) -> tuple[tuple[float, ...], float, int, float, float]:
    """The best (weights, threshold, min size, min peak, mean Dice) of the whole grid, every pair labelled;
    ties keep the first in grid order."""
    n_models = cases[0].probs.shape[0]
    ratios = {}
    for weights in itertools.product((0.0, 1.0, 2.0), repeat=n_models):
        if sum(weights):
            ratios.setdefault(tuple(round(w / sum(weights), 9) for w in weights), weights)
    best = ((), 0.0, 0, 0.0, -1.0)
    for weights in ratios.values():
        fused = [
            sum(w * p.astype(np.float64) for w, p in zip(weights, c.probs)) / sum(weights) for c in cases
        ]
        for t in REFERENCE_THRESHOLDS:
            components = [_components(f, t) for f in fused]
            for size, peak in itertools.product(REFERENCE_MIN_SIZES, REFERENCE_MIN_PEAKS):
                masks = [_filtered(k, size, peak) for k in components]
                score = float(np.mean([_dice(m, c.reference) for m, c in zip(masks, cases)]))
                if score > best[4] + 1e-12:
                    best = (weights, t, size, peak, score)
    return best


def _specks(ref: np.ndarray, rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` isolated single voxels away from ``ref`` (on a 3-voxel lattice, so never touching)."""
    from scipy import ndimage

    free = ~ndimage.binary_dilation(ref, np.ones((3, 3, 3), bool))
    cells = np.argwhere(free[::3, ::3, ::3])
    out = np.zeros(ref.shape, dtype=bool)
    for x, y, z in cells[rng.choice(len(cells), count, replace=False)] * 3:
        out[x, y, z] = True
    return out


def test_search_finds_the_exhaustive_optimum_where_removal_changes_the_ranking() -> None:
    """Model a sees the whole lesion and 500 single-voxel specks, model b 5/8 of the lesion and nothing
    else: unfiltered, b ranks first at every threshold; after removing components under 5 voxels a alone
    is perfect. A search that labelled only the best unfiltered pairs would miss it."""
    rng = np.random.default_rng(7)
    cases = []
    for _ in range(3):
        ref = np.zeros((30, 30, 30), dtype=bool)
        ref[4:12, 4:12, 4:12] = True
        a = np.where(ref | _specks(ref, rng, 500), 0.8, 0.0)
        b = np.where(ref, 0.8, 0.0)
        b[4:12, 4:12, 4:7] = 0.0
        cases.append(Case(np.stack([a, b]).astype(np.float32), ref))
    result = tune_ensemble(cases, ["a", "b"], HAND_SET)
    weights, threshold, min_size, min_peak, score = _exhaustive(cases)
    assert score == pytest.approx(1.0)
    tuned = result["settings"]
    assert result["mean_dice"] == pytest.approx(score)
    assert (tuple(tuned["weights"].values()), tuned["threshold"], tuned["min_component_voxels"]) == (
        weights,
        threshold,
        min_size,
    )
    assert tuned.get("min_peak", 0.0) == min_peak == 0.0  # every component peaks at 0.8: sizes decide


def test_peak_removes_a_hesitant_blob_that_no_size_or_threshold_can() -> None:
    """A lesion with a confident core (0.95) and a faint rim (0.4), beside a hesitant blob (0.6) larger
    than every minimum size: a threshold that drops the blob drops the rim; keeping components that
    peak at 0.7 or more keeps both parts of the lesion alone."""
    cases = []
    for shift in (0, 3):
        ref = np.zeros((30, 30, 30), dtype=bool)
        ref[4 + shift : 10 + shift, 4:10, 4:10] = True
        prob = np.where(ref, 0.4, 0.0)
        prob[5 + shift : 9 + shift, 5:9, 5:9] = 0.95
        prob[18:26, 18:26, 18:26] = 0.6  # 512 voxels, never touching the lesion
        cases.append(Case(prob[None].astype(np.float32), ref))
    result = tune_ensemble(cases, ["a"], HAND_SET)
    assert result["mean_dice"] == pytest.approx(1.0)
    assert result["settings"]["threshold"] <= 0.4 and result["settings"]["min_peak"] == 0.7
    assert _exhaustive(cases)[4] == pytest.approx(1.0)
    without_peak = max(
        np.mean([_dice(_filtered(_components(c.probs[0], t), size, 0.0), c.reference) for c in cases])
        for t in REFERENCE_THRESHOLDS
        for size in REFERENCE_MIN_SIZES
    )
    assert without_peak < 0.5
    from patchwork.ensembling.combine import combine

    tuned = EnsembleSettings.from_dict(result["settings"])
    masks = [combine({"a": c.probs[0]}, tuned)[1].astype(bool) for c in cases]
    assert [_dice(m, c.reference) for m, c in zip(masks, cases)] == [1.0, 1.0]  # what combine applies


def test_search_equals_the_exhaustive_grid_on_noisy_models() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(7)
    cases = []
    for _ in range(4):
        ref = ndimage.gaussian_filter(rng.normal(size=(24, 24, 24)), 2.5) > 0.12
        probs = []
        for quality in (0.9, 0.6, 0.3):
            noise = ndimage.gaussian_filter(rng.normal(size=ref.shape), 1.0)
            probs.append(np.clip(quality * ref + 0.5 * noise + 0.2, 0, 1))
        cases.append(Case(np.stack(probs).astype(np.float32), ref))
    result = tune_ensemble(cases, ["a", "b", "c"], HAND_SET)
    weights, threshold, _, _, score = _exhaustive(cases)
    assert result["mean_dice"] == pytest.approx(score)
    assert (tuple(result["settings"]["weights"].values()), result["settings"]["threshold"]) == (
        weights,
        threshold,
    )


def test_tuning_reads_one_subject_at_a_time_in_whole_passes() -> None:
    from patchwork.ondemand import Mapped

    rng = np.random.default_rng(0)
    made = [cube_case(rng) for _ in range(3)]
    reads: list[int] = []

    def make(i: int) -> Case:
        reads.append(i)
        return made[i]

    streamed = tune_ensemble(Mapped(range(3), make), ["good", "noise"], HAND_SET)
    assert len(reads) >= 6 and reads == [0, 1, 2] * (len(reads) // 3)
    assert streamed == tune_ensemble(made, ["good", "noise"], HAND_SET)


def test_tuned_mean_dice_is_what_combine_then_gives() -> None:
    """The score the search reports for its choice is the mean Dice of the masks that
    :func:`~patchwork.ensembling.combine.combine` makes with the tuned settings."""
    from scipy import ndimage

    from patchwork.ensembling.combine import combine

    rng = np.random.default_rng(3)
    cases = []
    for _ in range(3):
        ref = ndimage.gaussian_filter(rng.normal(size=(20, 20, 20)), 2.0) > 0.15
        probs = [np.clip(q * ref + 0.4 * ndimage.gaussian_filter(rng.normal(size=ref.shape), 1.0) + 0.2, 0, 1)
                 for q in (0.8, 0.4)]  # fmt: skip
        cases.append(Case(np.stack(probs).astype(np.float32), ref))
    result = tune_ensemble(cases, ["a", "b"], HAND_SET)
    tuned = EnsembleSettings.from_dict(result["settings"])
    masks = [combine(dict(zip(["a", "b"], c.probs, strict=True)), tuned)[1].astype(bool) for c in cases]
    assert result["mean_dice"] == pytest.approx(
        np.mean([_dice(m, c.reference) for m, c in zip(masks, cases)])
    )


def test_tune_stage_decompresses_each_subject_once_and_leaves_no_scratch(tmp_path: Path, monkeypatch) -> None:
    """The stage reads the NIfTIs of a subject once, whatever the number of rounds (later passes read the
    spilled cases), tunes what the in-memory search tunes, and removes its scratch folder."""
    from patchwork.ensembling import tuning
    from patchwork.stages.ensemble import tune

    rng = np.random.default_rng(0)
    made = [cube_case(rng) for _ in range(3)]
    rows = ["subject\trole\timage_0000\tlabel"]
    for k, case in enumerate(made):
        subject = f"s{k}"
        label = tmp_path / "labels" / f"{subject}.nii.gz"
        save_image(case.reference.astype(np.uint8), np.eye(4), label)
        for m, name in enumerate(("good", "noise")):
            save_image(case.probs[m], np.eye(4), tmp_path / name / "fold_0" / f"{subject}_prob.nii.gz")
        rows.append(f"{subject}\ttrain\t{label}\t{label}")
    (tmp_path / "subjects.tsv").write_text("\n".join(rows) + "\n")
    loads: list[Path] = []
    real_load_case = tuning.load_case

    def counted(paths, reference, lowest_threshold):
        loads.append(reference)
        return real_load_case(paths, reference, lowest_threshold)

    monkeypatch.setattr(tuning, "load_case", counted)
    out = tmp_path / "results" / "ensemble_params.json"
    folders = {name: [tmp_path / name / "fold_0"] for name in ("good", "noise")}
    result = tune(tmp_path / "subjects.tsv", folders, HAND_SET, out)
    assert len(loads) == 3 and len(set(loads)) == 3
    assert [p.name for p in out.parent.iterdir()] == ["ensemble_params.json"]
    assert result == tune_ensemble(made, ["good", "noise"], HAND_SET)

"""Cross-validation splits: partitions, seeds, groups, and validation of a user's splits file."""

from __future__ import annotations

import json
import random

import pytest

from patchwork.data.splits import check_splits, fold_of, make_splits
from patchwork.errors import PatchworkError

SUBJECTS = [f"sub-{i:02d}" for i in range(17)]


def _assert_partition(splits: list[dict[str, list[str]]], subjects: list[str], n_folds: int) -> None:
    assert len(splits) == n_folds
    vals = [s for fold in splits for s in fold["val"]]
    assert sorted(vals) == sorted(subjects)
    for fold in splits:
        assert sorted(fold["train"] + fold["val"]) == sorted(subjects)
        assert fold["val"] and not set(fold["train"]) & set(fold["val"])


def test_folds_partition_the_subjects() -> None:
    splits = make_splits(SUBJECTS, n_folds=5, seed=0)
    _assert_partition(splits, SUBJECTS, 5)
    assert sorted(len(f["val"]) for f in splits) == [3, 3, 3, 4, 4]
    assert check_splits(splits, SUBJECTS, "made") == splits
    for k, fold in enumerate(splits):
        assert all(fold_of(splits, s) == k for s in fold["val"])


def test_seeded_stable_and_order_independent() -> None:
    splits = make_splits(SUBJECTS, 5, seed=3)
    assert make_splits(SUBJECTS, 5, seed=3) == splits
    shuffled = SUBJECTS.copy()
    random.Random(0).shuffle(shuffled)
    assert make_splits(shuffled, 5, seed=3) == splits
    assert make_splits(SUBJECTS, 5, seed=4) != splits
    # the splits file is plain JSON, as nnU-Net's splits_final.json
    assert json.loads(json.dumps(splits)) == splits


def test_groups_stay_together() -> None:
    groups = [f"patient-{i // 3}" for i in range(len(SUBJECTS))]  # 6 patients, the last with 2 scans
    group_of = dict(zip(SUBJECTS, groups, strict=True))
    splits = make_splits(SUBJECTS, 3, seed=1, groups=groups)
    _assert_partition(splits, SUBJECTS, 3)
    for fold in splits:
        assert not {group_of[s] for s in fold["train"]} & {group_of[s] for s in fold["val"]}
    # groups follow their subjects when the cohort table is reordered
    order = list(reversed(range(len(SUBJECTS))))
    reordered = make_splits([SUBJECTS[i] for i in order], 3, seed=1, groups=[groups[i] for i in order])
    assert reordered == splits
    seeds = {json.dumps(make_splits(SUBJECTS, 3, seed=s, groups=groups)) for s in range(6)}
    assert len(seeds) > 1


@pytest.mark.parametrize(
    ("n_folds", "groups", "match"),
    [
        (1, None, r"n_folds must be between 2 and the number of subjects \(17\), got 1"),
        (18, None, r"n_folds must be between 2 and the number of subjects \(17\), got 18"),
        (4, ["a", "b", "c"] * 5 + ["a", "b"], r"number of groups \(3\), got 4"),
        (2, ["a"], "1 groups given for 17 subjects"),
    ],
)
def test_make_splits_rejects_impossible_requests(n_folds: int, groups: list[str] | None, match: str) -> None:
    with pytest.raises(PatchworkError, match=match):
        make_splits(SUBJECTS, n_folds, seed=0, groups=groups)


def test_make_splits_rejects_duplicate_ids() -> None:
    with pytest.raises(PatchworkError, match=r"duplicated subject ids \['sub-01'\]"):
        make_splits([*SUBJECTS, "sub-01"], 2, seed=0)


IDS = ["a", "b", "c", "d"]
GOOD = [{"train": ["c", "d"], "val": ["a", "b"]}, {"train": ["a", "b"], "val": ["c", "d"]}]


@pytest.mark.parametrize(
    ("splits", "match"),
    [
        ({"train": [], "val": []}, "expected a list of at least 2 folds"),
        ([GOOD[0]], "expected a list of at least 2 folds"),
        ([GOOD[0], ["c", "d"]], "fold 1 must be a dict with exactly the keys 'train' and 'val'"),
        ([GOOD[0], {"train": ["a"], "validation": ["c", "d"]}], "fold 1 must be a dict"),
        ([GOOD[0], {"train": "ab", "val": ["c", "d"]}], "fold 1 'train' must be a list of subject ids"),
        ([GOOD[0], {"train": ["a", 2], "val": ["c", "d"]}], "fold 1 'train' must be a list of subject ids"),
        (
            [GOOD[0], {"train": ["a", "x"], "val": ["c", "d"]}],
            r"fold 1 'train' names unknown subjects \['x'\]",
        ),
        ([GOOD[0], {"train": ["a"], "val": ["c", "d", "y"]}], r"fold 1 'val' names unknown subjects \['y'\]"),
        (
            [GOOD[0], {"train": ["a", "c"], "val": ["c", "d"]}],
            r"fold 1 has subjects in both train and val: \['c'\]",
        ),
        ([GOOD[0], {"train": ["a", "b", "c"], "val": ["d"]}], r"subjects in no validation set: \['c'\]"),
        (
            [GOOD[0], {"train": ["b"], "val": ["a", "c", "d"]}],
            r"subjects in more than one validation set: \['a'\]",
        ),
    ],
)
def test_check_splits_names_the_file_and_the_problem(splits: object, match: str) -> None:
    with pytest.raises(PatchworkError, match="my_splits.json: " + match) as err:
        check_splits(splits, IDS, "my_splits.json")
    assert "\n" not in str(err.value)


def test_check_splits_accepts_a_valid_file() -> None:
    assert check_splits(GOOD, IDS, "my_splits.json") == GOOD
    assert fold_of(GOOD, "c") == 1


def test_fold_of_unknown_subject() -> None:
    with pytest.raises(PatchworkError, match="'zz' is in no validation set"):
        fold_of(GOOD, "zz")

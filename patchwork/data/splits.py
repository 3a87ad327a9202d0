"""Cross-validation splits in nnU-Net's ``splits_final.json`` format: ``[{"train": [...], "val": [...]}]``.

Folds are drawn with scikit-learn on the sorted subject ids, so the same ids and seed give the
same folds whatever order the cohort table lists them in. With groups (e.g. several scans of one
patient) no group straddles train and validation. A user may bring a splits file of their own;
:func:`check_splits` validates it against the cohort.

Example::

    splits = make_splits(["s1", "s2", "s3", "s4"], n_folds=2, seed=0)
    fold = fold_of(splits, "s3")  # the fold whose model did not train on s3
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from patchwork.errors import PatchworkError


def make_splits(
    subjects: Sequence[str], n_folds: int, seed: int, groups: Sequence[str] | None = None
) -> list[dict[str, list[str]]]:
    """Split ``subjects`` into ``n_folds`` folds; each subject is in exactly one validation set.

    ``KFold(shuffle=True, random_state=seed)`` on the sorted ids, or, when ``groups`` (one per
    subject, in the order of ``subjects``) are given, ``GroupKFold(shuffle=True, random_state=seed)``
    so that all subjects of a group fall in the same validation set. Ids within each list are sorted.
    """
    if len(set(subjects)) != len(subjects):
        duplicated = sorted(s for s, n in Counter(subjects).items() if n > 1)
        raise PatchworkError(f"splits: duplicated subject ids {duplicated}")
    from sklearn.model_selection import GroupKFold, KFold  # here: reading splits needs no scikit-learn

    if groups is not None and len(groups) != len(subjects):
        raise PatchworkError(f"splits: {len(groups)} groups given for {len(subjects)} subjects")
    order = sorted(range(len(subjects)), key=lambda i: subjects[i])
    ids = np.array([subjects[i] for i in order], dtype=object)
    units, what = (len(ids), "subjects") if groups is None else (len(set(groups)), "groups")
    if not 2 <= n_folds <= units:
        raise PatchworkError(
            f"splits: n_folds must be between 2 and the number of {what} ({units}), got {n_folds}"
        )
    if groups is None:
        folds = KFold(n_splits=n_folds, shuffle=True, random_state=seed).split(ids)
    else:
        sorted_groups = np.array([groups[i] for i in order], dtype=object)
        folds = GroupKFold(n_splits=n_folds, shuffle=True, random_state=seed).split(ids, groups=sorted_groups)
    return [{"train": sorted(ids[train].tolist()), "val": sorted(ids[val].tolist())} for train, val in folds]


def check_splits(splits: object, subjects: Sequence[str], source: str) -> list[dict[str, list[str]]]:
    """Validate a splits list (e.g. a user's ``splits_final.json``) against the cohort's ids.

    It must be a list of at least two ``{"train": [...], "val": [...]}`` dicts of known ids, with
    no subject in both lists of one fold and every subject in exactly one validation set. Raises a
    one-line :class:`PatchworkError` naming ``source`` and the problem; returns the splits.
    """
    if not isinstance(splits, list) or len(splits) < 2:
        raise PatchworkError(
            f"{source}: expected a list of at least 2 folds of {{'train': [...], 'val': [...]}}"
        )
    known = set(subjects)
    val_count: Counter[str] = Counter()
    for k, fold in enumerate(splits):
        if not isinstance(fold, dict) or set(fold) != {"train", "val"}:
            raise PatchworkError(f"{source}: fold {k} must be a dict with exactly the keys 'train' and 'val'")
        for key in ("train", "val"):
            if not isinstance(fold[key], list) or not all(isinstance(s, str) for s in fold[key]):
                raise PatchworkError(f"{source}: fold {k} '{key}' must be a list of subject ids")
            unknown = sorted(set(fold[key]) - known)
            if unknown:
                raise PatchworkError(f"{source}: fold {k} '{key}' names unknown subjects {unknown}")
        both = sorted(set(fold["train"]) & set(fold["val"]))
        if both:
            raise PatchworkError(f"{source}: fold {k} has subjects in both train and val: {both}")
        val_count.update(fold["val"])
    missing = sorted(known - set(val_count))
    if missing:
        raise PatchworkError(f"{source}: subjects in no validation set: {missing}")
    repeated = sorted(s for s, n in val_count.items() if n > 1)
    if repeated:
        raise PatchworkError(f"{source}: subjects in more than one validation set: {repeated}")
    return splits


def fold_of(splits: Sequence[dict[str, list[str]]], subject: str) -> int:
    """Index of the fold whose validation set holds ``subject``."""
    for k, fold in enumerate(splits):
        if subject in fold["val"]:
            return k
    raise PatchworkError(f"splits: subject {subject!r} is in no validation set")

"""Data stages: the demo cohort, ingest, preprocessing and cross-validation splits, and cohort lookups."""

from __future__ import annotations

import logging
from pathlib import Path

from patchwork.config import DemoSettings, IngestSettings, PreprocessSettings, SplitSettings
from patchwork.data.cohort import find_subject, read_subjects, write_subjects
from patchwork.errors import PatchworkError
from patchwork.io import read_json, write_json

log = logging.getLogger(__name__)


def demo(out_dir: Path, settings: DemoSettings, seed: int) -> Path:
    """Write the built-in demo cohort (nnU-Net raw layout) into ``out_dir``; returns the folder."""
    from patchwork.data.demo import make_demo_dataset

    out = make_demo_dataset(
        Path(out_dir), settings.n_train, settings.n_test, settings.spacing, seed, settings.appearance
    )
    log.info("demo dataset written to %s", out)
    return out


def ingest(source: str, subjects_tsv: Path, fingerprint_json: Path, settings: IngestSettings) -> dict:
    """Open and check every file of a cohort; write the cohort table and the fingerprint (returned)."""
    from patchwork.data.ingest import ingest as read_cohort

    subjects, fingerprint = read_cohort(
        source,
        labels=settings.labels,
        affine_tolerance=settings.affine_tolerance,
        max_image_bytes=settings.max_image_bytes,
        bids=settings.bids,
    )
    write_json(fingerprint_json, fingerprint)
    write_subjects(subjects, subjects_tsv)
    log.info(
        "%d training and %d test subjects in %s", fingerprint["n_train"], fingerprint["n_test"], subjects_tsv
    )
    return fingerprint


def preprocess(
    subjects_tsv: Path, subject: str, fingerprint_json: Path, out_dir: Path, settings: PreprocessSettings
) -> dict:
    """Preprocess one subject into ``out_dir`` (``results/preprocessed/{subject}``); returns its record.

    ``target_spacing`` null means the cohort's median spacing from the fingerprint (nnU-Net's choice).
    """
    from patchwork.data.preprocess import preprocess_subject

    row = find_subject(read_subjects(subjects_tsv), subject, subjects_tsv)
    return preprocess_subject(row, Path(out_dir), settings.resolved(read_json(fingerprint_json)))


def splits(subjects_tsv: Path, out: Path, settings: SplitSettings, seed: int) -> list[dict]:
    """Write the cross-validation splits (nnU-Net's ``splits_final.json`` format) and return them.

    ``settings.file``: the user's own splits, checked against the cohort; else ``n_folds`` seeded folds
    (GroupKFold when the cohort has groups).
    """
    from patchwork.data.splits import check_splits, make_splits

    subjects = read_subjects(subjects_tsv, role="train")
    ids = [s.subject for s in subjects]
    if settings.file:
        folds = check_splits(read_json(settings.file), ids, source=settings.file)
    else:
        groups = [s.group or "" for s in subjects] if any(s.group for s in subjects) else None
        folds = make_splits(ids, n_folds=settings.n_folds, seed=seed, groups=groups)
    write_json(out, folds)
    return folds


def fold_subjects(splits_json: Path, fold: str, subjects_tsv: Path) -> tuple[list[str], list[str]]:
    """Training and validation subject ids of ``fold`` (a number, or ``all``: every training subject)."""
    if fold == "all":
        return [s.subject for s in read_subjects(subjects_tsv, role="train")], []
    folds = read_json(splits_json)
    if not fold.isdigit() or int(fold) >= len(folds):
        raise PatchworkError(f"{splits_json}: no fold {fold} (the file has {len(folds)})")
    return list(folds[int(fold)]["train"]), list(folds[int(fold)]["val"])

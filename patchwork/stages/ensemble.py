"""Ensemble and post-processing stages: combine the models of one subject or of a batch; tune the ensemble,
and each model's post-processing, on out-of-fold predictions; post-process probability maps.

Out-of-fold predictions live in batch folders (``predictions/{model}/fold_K/{subject}_prob.nii.gz``); the
tuning stages take a model's batch folders and find each training subject's map in one of them.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from patchwork.config import EnsembleSettings
from patchwork.errors import PatchworkError
from patchwork.io import write_json

log = logging.getLogger(__name__)

PROB_SUFFIX, SEG_SUFFIX = "_prob.nii.gz", "_seg.nii.gz"


def batch_subjects(folder: Path) -> list[str]:
    """The subjects whose probability map ``{subject}_prob.nii.gz`` a batch folder holds, sorted (an empty
    folder has none; a missing one is an error)."""
    if not Path(folder).is_dir():
        raise PatchworkError(f"{folder}: folder not found")
    return sorted(p.name.removesuffix(PROB_SUFFIX) for p in Path(folder).glob(f"*{PROB_SUFFIX}"))


def find_probabilities(folders: Sequence[Path], subjects: Sequence[str], model: str) -> list[Path]:
    """Each subject's ``{subject}_prob.nii.gz`` in one of ``folders`` (a model's batches), in order; one
    error naming every subject that none of them holds."""
    where = {s: Path(f) / f"{s}{PROB_SUFFIX}" for f in folders for s in batch_subjects(Path(f))}
    missing = [s for s in subjects if s not in where]
    if missing:
        folders_text = ", ".join(str(f) for f in folders)
        raise PatchworkError(f"{model}: no probability map of {', '.join(missing)} in {folders_text}")
    return [where[s] for s in subjects]


def ensemble(
    probs: Mapping[str, Path],
    settings: EnsembleSettings,
    out_prob: Path,
    out_seg: Path,
    tuned: Path | None = None,
) -> None:
    """Combine one subject's model probabilities (model name -> NIfTI) and write the probability and mask.

    ``tuned``: an ``ensemble_params.json`` of :func:`tune`, whose settings replace ``settings``. Library API
    for one subject; the workflow combines a batch (:func:`ensemble_batch`).
    """
    from patchwork.ensembling.combine import ensemble_files
    from patchwork.ensembling.tuning import read_tuned

    ensemble_files(probs, read_tuned(tuned) if tuned else settings, Path(out_prob), Path(out_seg))


def ensemble_batch(
    folders: Mapping[str, Path], settings: EnsembleSettings, out_dir: Path, tuned: Path | None = None
) -> None:
    """:func:`ensemble` for every subject of a batch in one process: ``folders`` maps each model to its
    batch folder; the subjects are those of the first model's folder, and every model must have them.
    Writes ``{subject}_prob.nii.gz`` and ``{subject}_seg.nii.gz`` into ``out_dir``."""
    from patchwork.ensembling.combine import ensemble_files
    from patchwork.ensembling.tuning import read_tuned

    chosen = read_tuned(tuned) if tuned else settings
    subjects = batch_subjects(next(iter(folders.values())))
    paths = {m: find_probabilities([f], subjects, m) for m, f in folders.items()}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for k, subject in enumerate(subjects):
        probs = {m: paths[m][k] for m in folders}
        ensemble_files(probs, chosen, out_dir / f"{subject}{PROB_SUFFIX}", out_dir / f"{subject}{SEG_SUFFIX}")
    log.info("ensemble of %d subjects in %s", len(subjects), out_dir)


def tune(
    subjects_tsv: Path, folders: Mapping[str, Sequence[Path]], settings: EnsembleSettings, out: Path
) -> dict[str, Any]:
    """Tune the ensemble on the out-of-fold predictions of every training subject: ``folders`` maps each
    model (in order) to its batch folders; one subject at a time is read. The search passes over the
    subjects once per round: the first pass keeps each subject's cropped maps in a scratch folder beside
    ``out`` (:class:`~patchwork.ondemand.Spilled`, removed at the end), later passes read them back instead
    of decompressing the NIfTIs again (the folder holds every subject's cropped maps while the search
    runs). Write and return ``ensemble_params.json``'s contents."""
    from patchwork.data.cohort import read_subjects
    from patchwork.ensembling.tuning import THRESHOLDS, load_case, tune_ensemble
    from patchwork.ondemand import Mapped, Spilled

    subjects = read_subjects(subjects_tsv, role="train")
    ids = [s.subject for s in subjects]
    paths = {m: find_probabilities(f, ids, m) for m, f in folders.items()}
    cases = Mapped(
        range(len(subjects)),
        lambda i: load_case(
            [p[i] for p in paths.values()], subjects[i].label, lowest_threshold=min(THRESHOLDS)
        ),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tune-ensemble-", dir=out.parent) as scratch:
        result = tune_ensemble(Spilled(cases, Path(scratch)), list(folders), settings)
    write_json(out, result)
    log.info(
        "tuned ensemble: mean Dice %.4f (hand-set %.4f)", result["mean_dice"], result["hand_set"]["mean_dice"]
    )
    return result


def tune_postprocessing(
    subjects_tsv: Path, folders: Sequence[Path], model: str, threshold: float, out: Path
) -> dict[str, Any]:
    """Choose one model's post-processing (threshold, minimum component volume and peak) on its out-of-fold
    predictions in its batch ``folders``, one subject at a time; write and return ``postprocessing.json``'s
    contents. ``threshold`` is the model's own, scored as the untouched baseline."""
    from patchwork.data.cohort import read_subjects
    from patchwork.ondemand import Mapped
    from patchwork.postprocessing.components import load_case, tune_postprocessing

    subjects = read_subjects(subjects_tsv, role="train")
    paths = find_probabilities(folders, [s.subject for s in subjects], model)
    cases = Mapped(range(len(subjects)), lambda i: load_case(paths[i], subjects[i].label))
    result = tune_postprocessing(cases, threshold)
    write_json(out, result)
    log.info(
        "%s post-processing %s: mean Dice %.4f (untouched %.4f)",
        model,
        result["settings"],
        result["mean_dice"],
        result["untouched"]["mean_dice"],
    )
    return result


def postprocess_batch(prob_dir: Path, tuned: Path, out_dir: Path) -> None:
    """Every ``{subject}_prob.nii.gz`` of a batch folder post-processed with a ``postprocessing.json``'s
    settings into ``out_dir/{subject}_seg.nii.gz``, in one process."""
    from patchwork.postprocessing.components import postprocess_file, read_postprocessing

    settings = read_postprocessing(Path(tuned))
    subjects = batch_subjects(Path(prob_dir))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for subject in subjects:
        postprocess_file(
            Path(prob_dir) / f"{subject}{PROB_SUFFIX}", settings, out_dir / f"{subject}{SEG_SUFFIX}"
        )
    log.info("post-processed %d subjects into %s", len(subjects), out_dir)

"""Ensemble and post-processing stages: combine the models of one subject; tune the ensemble, and each
model's post-processing, on out-of-fold predictions; post-process one probability map."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from patchwork.config import EnsembleSettings
from patchwork.io import write_json

log = logging.getLogger(__name__)


def ensemble(
    probs: Mapping[str, Path],
    settings: EnsembleSettings,
    out_prob: Path,
    out_seg: Path,
    tuned: Path | None = None,
) -> None:
    """Combine one subject's model probabilities (model name -> NIfTI) and write the probability and mask.

    ``tuned``: an ``ensemble_params.json`` of :func:`tune`, whose settings replace ``settings``.
    """
    from patchwork.ensemble import ensemble_files
    from patchwork.ensemble_tuning import read_tuned

    ensemble_files(probs, read_tuned(tuned) if tuned else settings, Path(out_prob), Path(out_seg))


def tune(
    subjects_tsv: Path, predictions: Path, models: Sequence[str], settings: EnsembleSettings, out: Path
) -> dict[str, Any]:
    """Tune the ensemble on the out-of-fold predictions ``predictions/{model}/{subject}_prob.nii.gz`` of
    every training subject; write and return ``ensemble_params.json``'s contents."""
    from patchwork.data.cohort import read_subjects
    from patchwork.ensemble_tuning import THRESHOLDS, load_case, tune_ensemble

    cases = [
        load_case(
            [Path(predictions) / m / f"{s.subject}_prob.nii.gz" for m in models],
            s.label,
            lowest_threshold=min(THRESHOLDS),
        )
        for s in read_subjects(subjects_tsv, role="train")
    ]
    result = tune_ensemble(cases, models, settings)
    write_json(out, result)
    log.info(
        "tuned ensemble: mean Dice %.4f (hand-set %.4f)", result["mean_dice"], result["hand_set"]["mean_dice"]
    )
    return result


def tune_postprocessing(
    subjects_tsv: Path, predictions: Path, model: str, threshold: float, out: Path
) -> dict[str, Any]:
    """Choose one model's post-processing (threshold, minimum component volume and peak) on its out-of-fold
    predictions ``predictions/{model}/{subject}_prob.nii.gz``; write and return ``postprocessing.json``'s
    contents. ``threshold`` is the model's own, scored as the untouched baseline."""
    from patchwork.data.cohort import read_subjects
    from patchwork.postprocess import load_case, tune_postprocessing

    cases = [
        load_case(Path(predictions) / model / f"{s.subject}_prob.nii.gz", s.label)
        for s in read_subjects(subjects_tsv, role="train")
    ]
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


def postprocess(prob: Path, tuned: Path, out_seg: Path) -> None:
    """Write the mask of one probability map post-processed with a ``postprocessing.json``'s settings."""
    from patchwork.postprocess import postprocess_file, read_postprocessing

    postprocess_file(Path(prob), read_postprocessing(Path(tuned)), Path(out_seg))

"""Model stages: train one model on one fold; predict one subject, or a batch, in its original image grid.

Both go through the model registry (:data:`patchwork.models.MODEL_TYPES`); neither knows a model type.
A job on CUDA holds a lease on one GPU for its lifetime (:func:`patchwork.training.devices.job_device`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from patchwork.errors import PatchworkError
from patchwork.io import read_json, write_json
from patchwork.models import ModelSpec, model_type
from patchwork.training.devices import job_device

log = logging.getLogger(__name__)

SPEC_FILE = "spec.json"


def load_cases(preprocessed: Path, subjects: Sequence[str]) -> tuple[Sequence, Sequence, Sequence]:
    """Images ``[C, X, Y, Z]``, label maps and grid affines of preprocessed subjects, as sequences that
    open each subject when it is used (:class:`patchwork.training.cases.LazyCases`): a training holds a
    few subjects at a time, never the whole fold."""
    from functools import partial

    from patchwork.data.preprocess import open_preprocessed
    from patchwork.training.cases import LazyCases

    cases = LazyCases(partial(open_preprocessed, Path(preprocessed)), subjects)
    return cases.images, cases.labels, cases.affines


def train(
    spec: ModelSpec,
    subjects_tsv: Path,
    preprocessed: Path,
    splits_json: Path,
    fold: str,
    out_dir: Path,
    seed: int,
    device: str | None = None,
) -> Path:
    """Train ``spec`` on the training subjects of ``fold`` (``all``: every one) into ``out_dir``.

    Writes ``spec.json`` (what prediction needs to know of the model) and whatever the model type's
    trainer writes (``model.pt``, ``train_log.tsv``, ``curve.png``); the fold's validation subjects feed
    the training log. Returns the path of ``model.pt``.
    """
    from patchwork.stages.data import fold_subjects

    train_ids, val_ids = fold_subjects(splits_json, fold, subjects_tsv)
    out_dir = Path(out_dir)
    write_json(out_dir / SPEC_FILE, spec.training_dict())
    images, labels, affines = load_cases(preprocessed, train_ids)
    val_images, val_labels, val_affines = load_cases(preprocessed, val_ids) if val_ids else (None, None, None)
    with job_device(device) as device:
        return spec.model_type.train_function(
            spec.params,
            images,
            labels,
            affines,
            out_dir,
            seed,
            device=device,
            val_images=val_images,
            val_labels=val_labels,
            val_affines=val_affines,
        )


def batch_subjects(subjects_tsv: Path, splits_json: Path | None, batch: str) -> list[str]:
    """Subjects of a workflow batch: ``fold_K`` = the validation subjects of fold K (predicted out of fold by
    fold K's model), ``test`` = every test subject (predicted by the final all-data model)."""
    from patchwork.data.cohort import read_subjects
    from patchwork.stages.data import fold_subjects

    if batch == "test":
        return [s.subject for s in read_subjects(subjects_tsv, role="test")]
    fold = batch.removeprefix("fold_")
    if fold == batch or not fold.isdigit():
        raise PatchworkError(f"batch {batch!r}: expected fold_K (K a fold number) or test")
    if splits_json is None:
        raise PatchworkError(f"batch {batch}: the splits file is needed (--splits)")
    return fold_subjects(Path(splits_json), fold, Path(subjects_tsv))[1]


def predict(
    model_path: Path,
    preprocessed: Path,
    subject: str,
    apply: Mapping[str, Any],
    threshold: float,
    out_prob: Path,
    out_seg: Path,
    out_std: Path | None = None,
    seed: int = 0,
    device: str | None = None,
) -> None:
    """Predict one preprocessed subject with a trained model; write the probability, the mask
    ``prob >= threshold`` and, for model types that give one, the per-voxel spread, all in the subject's
    original grid. ``apply`` is the spec's application settings (checked by the model type). Library API for
    one subject; the workflow predicts a batch (:func:`predict_batch`)."""
    predictor = _Predictor(Path(model_path), apply, threshold, std=out_std is not None)
    with job_device(device) as device:
        predictor(Path(preprocessed), subject, Path(out_prob), Path(out_seg), out_std, seed, device)


def predict_batch(
    model_path: Path,
    preprocessed: Path,
    subjects: Sequence[str],
    apply: Mapping[str, Any],
    threshold: float,
    out_dir: Path,
    std: bool = False,
    seed: int = 0,
    device: str | None = None,
) -> None:
    """Predict a batch of subjects in one process (one start-up, one GPU lease) into ``out_dir``:
    ``{subject}_prob.nii.gz``, ``{subject}_seg.nii.gz`` and, with ``std``, ``{subject}_std.nii.gz``, each
    exactly as :func:`predict` writes it for that subject alone (same seed per subject)."""
    predictor = _Predictor(Path(model_path), apply, threshold, std=std)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with job_device(device) as device:
        for k, subject in enumerate(subjects):
            paths = [out_dir / f"{subject}_{kind}.nii.gz" for kind in ("prob", "seg", "std")]
            predictor(Path(preprocessed), subject, *paths[:2], paths[2] if std else None, seed, device)
            log.info("%s: %d of %d predicted", subject, k + 1, len(subjects))


class _Predictor:
    """A trained model with its application settings, checked once, applied to one subject per call."""

    def __init__(self, model_path: Path, apply: Mapping[str, Any], threshold: float, std: bool) -> None:
        self.model_path = model_path
        self.row = model_type(read_json(model_path.parent / SPEC_FILE).get("type"))
        if std and "std" not in self.row.outputs:
            raise PatchworkError(f"{model_path}: this model type gives no uncertainty map (spread)")
        if not 0 <= threshold <= 1:
            raise PatchworkError(f"threshold={threshold}: must be in [0, 1]")
        self.settings = self.row.apply_class.from_dict(dict(apply))
        self.threshold = threshold

    def __call__(
        self,
        preprocessed: Path,
        subject: str,
        out_prob: Path,
        out_seg: Path,
        out_std: Path | None,
        seed: int,
        device: str | None,
    ) -> None:
        import numpy as np

        from patchwork.data.preprocess import load_preprocessed
        from patchwork.entry.prediction import predict_case
        from patchwork.io import save_image

        image, _, record = load_preprocessed(preprocessed, subject)
        result = predict_case(
            self.row, self.model_path, image, record, self.settings, device, seed, spread=out_std is not None
        )
        save_image(result.probability, result.affine, out_prob, dtype=np.float32)
        save_image(result.probability >= self.threshold, result.affine, out_seg, dtype=np.uint8)
        if out_std is not None:
            save_image(result.spread, result.affine, out_std, dtype=np.float32)

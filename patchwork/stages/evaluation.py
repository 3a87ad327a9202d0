"""Evaluation stages: metrics and report of one subject or of a batch, the cohort's tables, the cohort report.

:func:`evaluate_batch` scores the subjects of a workflow batch in one process, so 5,000 subjects cost a
few process start-ups (one per batch), not 5,000.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from patchwork.config import EvaluateSettings
from patchwork.io import read_json, read_table, write_text


def evaluate(
    subject: str,
    image: Path,
    reference: Path,
    fingerprint_json: Path,
    segs: Mapping[str, Path],
    settings: EvaluateSettings,
    out_tsv: Path,
    out_html: Path,
    stds: Mapping[str, Path] | None = None,
) -> None:
    """Score every segmentation (model name -> NIfTI) of one subject against its reference, for every
    foreground label of the fingerprint; write the metrics table and the subject's HTML report.

    Library API for one subject; the workflow evaluates a batch (:func:`evaluate_batch`)."""
    labels = foreground_labels(fingerprint_json)
    metrics = _score(
        subject, Path(image), Path(reference), segs, stds or {}, labels, settings, Path(out_html)
    )
    write_text(out_tsv, metrics.to_csv(sep="\t", index=False))


def evaluate_batch(
    subjects_tsv: Path,
    subjects: Sequence[str],
    fingerprint_json: Path,
    seg_dirs: Mapping[str, Path],
    settings: EvaluateSettings,
    out_tsv: Path,
    out_html_dir: Path,
    std_dirs: Mapping[str, Path] | None = None,
) -> None:
    """:func:`evaluate` for each of ``subjects`` in one process: the segmentation of model ``name`` is
    ``seg_dirs[name]/{subject}_seg.nii.gz`` (its spread ``std_dirs[name]/{subject}_std.nii.gz``); writes one
    metrics table for the batch (``out_tsv``) and the subjects' pages ``out_html_dir/{subject}.html``."""
    import pandas as pd

    from patchwork.data.cohort import find_subject, read_subjects
    from patchwork.errors import PatchworkError

    cohort = read_subjects(subjects_tsv)
    labels = foreground_labels(fingerprint_json)
    tables = []
    for subject in subjects:
        row = find_subject(cohort, subject, subjects_tsv)
        if row.label is None:
            raise PatchworkError(f"{subjects_tsv}: subject {subject!r} has no reference label to evaluate")
        segs = {name: Path(d) / f"{subject}_seg.nii.gz" for name, d in seg_dirs.items()}
        stds = {name: Path(d) / f"{subject}_std.nii.gz" for name, d in (std_dirs or {}).items()}
        out_html = Path(out_html_dir) / f"{subject}.html"
        tables.append(_score(subject, row.images[0], row.label, segs, stds, labels, settings, out_html))
    if not tables:
        raise PatchworkError(f"{out_tsv}: the batch has no subjects")
    write_text(out_tsv, pd.concat(tables, ignore_index=True).to_csv(sep="\t", index=False))


def foreground_labels(fingerprint_json: Path) -> dict[str, int]:
    """The fingerprint's labels but the background."""
    return {k: v for k, v in read_json(fingerprint_json)["labels"].items() if v != 0}


def _score(
    subject: str,
    image: Path,
    reference: Path,
    segs: Mapping[str, Path],
    stds: Mapping[str, Path],
    labels: Mapping[str, int],
    settings: EvaluateSettings,
    out_html: Path,
) -> Any:
    """One subject's metrics table (every segmentation against the reference), and its report page."""
    from patchwork.evaluation.metrics import evaluate_subject
    from patchwork.evaluation.report import subject_report

    tolerance = settings.surface_tolerance_mm
    metrics = evaluate_subject(subject, reference, dict(segs), labels=dict(labels), tolerance_mm=tolerance)
    subject_report(
        subject,
        image,
        reference,
        dict(segs),
        metrics,
        out_html,
        uncertainty=dict(stds),
        tolerance_mm=tolerance,
    )
    return metrics


def summarise(metrics_tsvs: Sequence[Path], out_metrics: Path, out_summary: Path) -> None:
    """Concatenate the subjects' metrics tables and write the per-model summary."""
    import pandas as pd

    from patchwork.evaluation.metrics import COLUMNS
    from patchwork.evaluation.metrics import summarise as summary_of

    metrics = pd.concat([read_table(p, COLUMNS) for p in metrics_tsvs], ignore_index=True)
    write_text(out_metrics, metrics.to_csv(sep="\t", index=False))
    write_text(out_summary, summary_of(metrics).to_csv(sep="\t", index=False))


def report(
    metrics_tsv: Path,
    summary_tsv: Path,
    out_html: Path,
    settings: EvaluateSettings,
    subject_reports: Sequence[Path] = (),
    train_logs: Sequence[Path] = (),
    figure_paths: Mapping[str, Path] | None = None,
    plans: Path | None = None,
) -> None:
    """The cohort report: results table, plots, learning curves (``models/MODEL/FOLD/train_log.tsv``) and
    links to the subject pages (``{subject}.html``, or folders of them: a batch's pages); ``figure_paths``
    also writes the plots as PNG; ``plans`` (plans.json) adds the plans and, from the ``spec.json`` beside
    each model's first training log, the planned settings each model trained with."""
    from patchwork.evaluation.metrics import COLUMNS, SUMMARY_COLUMNS
    from patchwork.evaluation.report import cohort_report, read_train_logs

    out = Path(out_html)
    pages = [
        page for p in map(Path, subject_reports) for page in (sorted(p.glob("*.html")) if p.is_dir() else [p])
    ]
    links = {page.name.removesuffix(".html"): os.path.relpath(page, out.parent) for page in pages}
    cohort_report(
        read_table(metrics_tsv, COLUMNS),
        read_table(summary_tsv, SUMMARY_COLUMNS),
        out,
        subject_reports=links,
        train_logs=read_train_logs([Path(p) for p in train_logs]),
        tolerance_mm=settings.surface_tolerance_mm,
        figure_paths=dict(figure_paths or {}),
        plans=read_json(Path(plans)) if plans else None,
        specs=_specs_beside(train_logs),
    )


def _specs_beside(train_logs: Sequence[Path]) -> dict[str, dict[str, Any]]:
    """Each model's ``spec.json`` (what it trained with), from beside its first training log that has one."""
    specs: dict[str, dict[str, Any]] = {}
    for log_path in map(Path, train_logs):
        path = log_path.parent / "spec.json"
        if path.is_file():
            spec = read_json(path)
            specs.setdefault(spec["name"], spec)
    return specs

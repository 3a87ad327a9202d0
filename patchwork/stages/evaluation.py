"""Evaluation stages: metrics and report of one subject, the cohort's tables, the cohort report."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

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
    foreground label of the fingerprint; write the metrics table and the subject's HTML report."""
    from patchwork.metrics import evaluate_subject
    from patchwork.report import subject_report

    labels = {k: v for k, v in read_json(fingerprint_json)["labels"].items() if v != 0}
    tolerance = settings.surface_tolerance_mm
    metrics = evaluate_subject(subject, Path(reference), dict(segs), labels=labels, tolerance_mm=tolerance)
    write_text(out_tsv, metrics.to_csv(sep="\t", index=False))
    subject_report(
        subject,
        Path(image),
        Path(reference),
        dict(segs),
        metrics,
        Path(out_html),
        uncertainty=dict(stds or {}),
        tolerance_mm=tolerance,
    )


def summarise(metrics_tsvs: Sequence[Path], out_metrics: Path, out_summary: Path) -> None:
    """Concatenate the subjects' metrics tables and write the per-model summary."""
    import pandas as pd

    from patchwork.metrics import summarise as summary_of

    metrics = pd.concat([read_table(p) for p in metrics_tsvs], ignore_index=True)
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
) -> None:
    """The cohort report: results table, plots, learning curves (``models/MODEL/FOLD/train_log.tsv``) and
    links to the subject pages (``{subject}.html``); ``figure_paths`` also writes the plots as PNG."""

    from patchwork.report import cohort_report, read_train_logs

    out = Path(out_html)
    links = {Path(p).name.removesuffix(".html"): os.path.relpath(p, out.parent) for p in subject_reports}
    cohort_report(
        read_table(metrics_tsv),
        read_table(summary_tsv),
        out,
        subject_reports=links,
        train_logs=read_train_logs([Path(p) for p in train_logs]),
        tolerance_mm=settings.surface_tolerance_mm,
        figure_paths=dict(figure_paths or {}),
    )

"""Self-contained HTML reports: one page per subject and one cohort page.

A subject page (:func:`subject_report`) holds, per label, a table of every metric of
:func:`patchwork.evaluation.metrics.evaluate_subject` (one column per model) and one PNG: for each model,
axial, coronal and sagittal slices through the centre of mass of the largest reference lesion (of
the image intensities when the reference is empty or missing) with the reference contour in
yellow and the model's in red, then the uncertainty map of each model that wrote one. Volumes are
reoriented to the closest canonical (RAS) orientation with nibabel before slicing, so the views
look anatomical whatever the storage order; nothing is resampled.

The cohort page (:func:`cohort_report`) shows the mean ± sd of the ATLAS R2.0 paper's Table 1
metrics per model, the subjects worst first (by the ensemble's Dice, or the mean Dice of the
models without an ensemble) with links to their pages, box and strip plots of every metric, the
learning curves of every ``train_log.tsv`` with each fold's final validation Dice and their spread (does the
training converge on every fold?), and the full :func:`patchwork.evaluation.metrics.summarise` table.

Images are embedded as base64 ``data:`` URIs, so each page is a single file; links are relative.
Both pages state the empty-mask convention and the surface Dice tolerance. Templates live in
``patchwork/evaluation/templates`` (jinja2, autoescaped). :func:`unresolved_links` checks a written page.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import jinja2
import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from patchwork import __version__
from patchwork.errors import PatchworkError
from patchwork.evaluation.metrics import (
    DEFAULT_TOLERANCE_MM,
    EMPTY_MASK_CONVENTION,
    METRIC_TITLES,
    METRICS,
    SUMMARY_COLUMNS,
    TABLE1,
)
from patchwork.evaluation.plots import learning_curve_figure, metric_figure, overlay_figure, png_bytes
from patchwork.io import atomic_path, check_same_grid, load_nifti, read_table, write_text
from patchwork.postprocessing.components import label_components

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("patchwork.evaluation", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
)


def _format(value: float) -> str:
    """Four significant digits; NaN (an undefined value) as ``n/a``."""
    return "n/a" if pd.isna(value) else f"{value:.4g}"


def _data_uri(png: bytes) -> str:
    """PNG bytes as a ``data:`` URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _render(template: str, out_html: Path, **context: object) -> None:
    """Render ``template`` with ``context`` and write it to ``out_html`` atomically."""
    text = _ENV.get_template(template).render(
        version=__version__, convention=EMPTY_MASK_CONVENTION, **context
    )
    write_text(out_html, text)


def _canonical(img: nib.Nifti1Image) -> np.ndarray:
    """Voxels of ``img`` reoriented to the closest RAS orientation (first volume of a 4D image)."""
    data = np.asarray(nib.as_closest_canonical(img).get_fdata(dtype=np.float32))
    return data[..., 0] if data.ndim == 4 else data


def _canonical_on_grid(path: Path, grid: tuple[Path, tuple[int, ...], np.ndarray]) -> np.ndarray:
    """Voxels of the image ``path``, RAS-ordered; it must lie on ``grid`` = (image path, shape,
    affine) of the image it is drawn on."""
    img = load_nifti(path)
    check_same_grid(path, img.shape[:3], img.affine, *grid)
    return _canonical(img)


def _slice_centre(image: np.ndarray, reference: np.ndarray | None) -> tuple[tuple[int, int, int], str]:
    """Voxel at which to cut, and what it is the centre of (for the caption).

    The centre of mass of the largest reference lesion (26-connected component) rather than of all
    of them, so that the cut passes through a lesion even when there are several.
    """
    if reference is not None and reference.any():
        labels, _ = label_components(reference)
        largest = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
        centre = ndimage.center_of_mass(labels == largest)
        what = "the centre of mass of the largest reference lesion"
    else:
        weights = image - image.min()
        if weights.sum() > 0:
            centre, what = ndimage.center_of_mass(weights), "the centre of mass of the image intensities"
        else:
            centre, what = [(n - 1) / 2 for n in image.shape], "the centre of the image"
    i, j, k = (int(np.clip(round(c), 0, n - 1)) for c, n in zip(centre, image.shape, strict=True))
    return (i, j, k), what


def _metric_tables(subject: str, metrics: pd.DataFrame, tolerance_mm: float) -> list[dict[str, object]]:
    """Per label of ``subject``: the model names and one row of formatted values per metric."""
    own = metrics[metrics["subject"].astype(str) == str(subject)]
    tables = []
    for label, rows in own.groupby("label", sort=False):
        wide = rows.pivot_table(index="metric", columns="model", values="value", sort=False, dropna=False)
        names = [m for m in METRICS if m in wide.index] + [m for m in wide.index if m not in METRICS]
        titles = {**METRIC_TITLES, "surface_dice": f"surface Dice at {tolerance_mm:g} mm"}
        tables.append(
            {
                "label": label,
                "models": list(wide.columns),
                "rows": [
                    {"metric": titles.get(m, m), "values": [_format(v) for v in wide.loc[m]]} for m in names
                ],
            }
        )
    return tables


def subject_report(
    subject: str,
    image: Path,
    reference: Path | None,
    segmentations: Mapping[str, Path],
    metrics: pd.DataFrame,
    out_html: Path,
    uncertainty: Mapping[str, Path] | None = None,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
) -> None:
    """Write the HTML page of one subject: metric tables and overlays of the contours.

    Args:
        subject: subject id (its rows of ``metrics`` are shown).
        image: the image the contours are drawn on.
        reference: reference label map, or None.
        segmentations: model name → label map; foreground is every non-zero voxel.
        metrics: long table of :func:`patchwork.evaluation.metrics.evaluate_subject`.
        out_html: page to write (atomically).
        uncertainty: model name → per-voxel spread of its outputs, drawn as heat maps.
        tolerance_mm: the surface Dice tolerance, for the table heading.

    ``image``, ``reference`` and every segmentation and uncertainty map must share one grid (the
    error names the odd file).
    """
    img = load_nifti(image)
    grid = (image, tuple(img.shape[:3]), img.affine)
    data = _canonical(img)
    spacing = tuple(float(z) for z in nib.as_closest_canonical(img).header.get_zooms()[:3])
    ref = _canonical_on_grid(reference, grid) > 0 if reference is not None else None
    masks = {model: _canonical_on_grid(path, grid) > 0 for model, path in segmentations.items()}
    spreads = {model: _canonical_on_grid(path, grid) for model, path in (uncertainty or {}).items()}
    centre, centre_of = _slice_centre(data, ref)
    if ref is None:
        reference_note = "No reference segmentation was given."
    elif not ref.any():
        reference_note = "The reference segmentation is empty."
    else:
        reference_note = ""
    _render(
        "subject.html",
        out_html,
        subject=subject,
        tables=_metric_tables(subject, metrics, tolerance_mm),
        overlay=_data_uri(png_bytes(overlay_figure(data, spacing, centre, ref, masks, spreads), dpi=100)),
        uncertainty_models=list(spreads),
        centre_of=centre_of,
        reference_note=reference_note,
        tolerance_mm=tolerance_mm,
    )


def _flat(d: Mapping[str, object], prefix: str = "") -> dict[str, object]:
    """Nested settings as ``{"crop.scheme.patch_size": [32, 32, 32], ...}``."""
    out: dict[str, object] = {}
    for key, value in d.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def plan_rows(
    plans: Mapping[str, object], specs: Mapping[str, Mapping[str, object]]
) -> list[dict[str, object]]:
    """Per model (its ``spec.json``: name, type, the params it trained with) every key its type's plan
    covers: the value used, and whether it is the plan's or the config's."""
    rows = []
    planned_types: Mapping[str, object] = plans.get("models", {})  # type: ignore[assignment]
    for name, spec in specs.items():
        planned = _flat(planned_types.get(spec["type"], {}).get("params", {}))  # type: ignore[union-attr]
        used = _flat(spec.get("params", {}))  # type: ignore[arg-type]
        cells = [
            {"key": key, "value": used.get(key), "source": "plan" if used.get(key) == value else "config"}
            for key, value in planned.items()
        ]
        rows.append({"model": name, "type": spec["type"], "cells": cells})
    return rows


def convergence_rows(train_logs: Mapping[str, Mapping[str, pd.DataFrame]]) -> tuple[list[str], list[dict]]:
    """Folds (in order of appearance) and per model the validation pseudo-Dice of each fold's last logged row,
    their mean and spread (largest minus smallest): a training that converges reaches about the same
    Dice on every fold. Folds without validation (``fold_all``) are left out."""
    finals: dict[str, dict[str, float]] = {}
    for model, folds in train_logs.items():
        for fold, table in folds.items():
            values = pd.to_numeric(table.get("val_dice", pd.Series(dtype=float)), errors="coerce").dropna()
            if len(values):
                finals.setdefault(model, {})[fold] = float(values.iloc[-1])
    columns = list(dict.fromkeys(fold for per_fold in finals.values() for fold in per_fold))
    rows = [
        {
            "model": model,
            "values": [_format(per_fold[f]) if f in per_fold else "n/a" for f in columns],
            "mean": _format(float(np.mean(list(per_fold.values())))),
            "spread": _format(max(per_fold.values()) - min(per_fold.values())),
        }
        for model, per_fold in finals.items()
    ]
    return columns, rows


def _table1(summary: pd.DataFrame) -> list[dict[str, object]]:
    """Per label: one row per model with mean ± sd of each :data:`TABLE1` metric."""
    tables = []
    for label, rows in summary.groupby("label", sort=False):
        stats = rows.set_index(["model", "metric"])
        models = list(dict.fromkeys(rows["model"]))
        cells = [
            [
                f"{_format(stats.loc[(m, metric), 'mean'])} ± {_format(stats.loc[(m, metric), 'sd'])}"
                if (m, metric) in stats.index
                else "n/a"
                for metric in TABLE1
            ]
            for m in models
        ]
        tables.append({"label": label, "rows": list(zip(models, cells, strict=True))})
    return tables


def _subject_rows(metrics: pd.DataFrame, subject_reports: Mapping[str, str]) -> tuple[list[str], list[dict]]:
    """Models and one row per subject — link, Dice per model, reference lesions and volume —
    worst first: by the ensemble's Dice when there is an ensemble, else by the mean Dice of the
    models (averaged over labels)."""
    by_subject = metrics.assign(subject=metrics["subject"].astype(str)).pivot_table(
        index="subject", columns=["metric", "model"], values="value", aggfunc="mean", sort=False
    )
    if "dice" not in by_subject.columns.get_level_values(0):
        return [], []
    dice = by_subject["dice"]
    models = list(dice.columns)
    key = dice["ensemble"] if "ensemble" in models else dice.mean(axis=1)
    rows = []
    for subject in key.sort_values(kind="stable").index:
        reference = by_subject.loc[subject]
        rows.append(
            {
                "subject": subject,
                "href": subject_reports.get(subject),
                "dice": [_format(dice.loc[subject, m]) for m in models],
                "lesions": _format(reference.get("lesion_count_ref", pd.Series(dtype=float)).mean()),
                "volume": _format(reference.get("volume_ref_ml", pd.Series(dtype=float)).mean()),
            }
        )
    return models, rows


def read_train_logs(paths: Sequence[Path]) -> dict[str, dict[str, pd.DataFrame]]:
    """Read ``train_log.tsv`` files laid out as ``.../{model}/{fold}/train_log.tsv`` (the
    workflow's ``models/{model}/fold_{k}/``) into model → fold → table, in the order given."""
    logs: dict[str, dict[str, pd.DataFrame]] = {}
    for path in map(Path, paths):
        try:
            table = read_table(path)
        except PatchworkError as err:
            reason = str(err).removeprefix(f"{path}: ")
            raise PatchworkError(f"{path}: cannot read the training log ({reason})") from None
        logs.setdefault(path.parent.parent.name, {})[path.parent.name] = table
    return logs


def cohort_report(
    metrics: pd.DataFrame,
    summary: pd.DataFrame,
    out_html: Path,
    subject_reports: Mapping[str, str] | None = None,
    train_logs: Mapping[str, Mapping[str, pd.DataFrame]] | None = None,
    tolerance_mm: float = DEFAULT_TOLERANCE_MM,
    figure_paths: Mapping[str, Path] | None = None,
    plans: Mapping[str, object] | None = None,
    specs: Mapping[str, Mapping[str, object]] | None = None,
) -> None:
    """Write the cohort page (see the module docstring).

    Args:
        metrics: the cohort's long metric table (``subject, model, label, metric, value``).
        summary: :func:`~patchwork.evaluation.metrics.summarise` of ``metrics``.
        out_html: page to write (atomically).
        subject_reports: subject → URL of its page, relative to ``out_html``.
        train_logs: model → fold → training log (:func:`read_train_logs`).
        tolerance_mm: the surface Dice tolerance, for the captions.
        figure_paths: also write the figures as PNG files: ``"metrics"`` and/or
            ``"learning_curves"`` → path. Asking for a figure there is nothing to draw from is
            an error.
        plans: ``plans.json`` (:func:`patchwork.planning.plan`), shown with ``specs`` (model → its
            ``spec.json``): the planned keys each model trained with, from the plan or the config.
    """
    figures = {
        "metrics": metric_figure(metrics, [*METRICS, *sorted(set(metrics["metric"]) - set(METRICS))]),
        "learning_curves": learning_curve_figure(train_logs or {}),
    }
    pngs = {name: png_bytes(fig) for name, fig in figures.items() if fig is not None}
    for name, path in (figure_paths or {}).items():
        if name not in pngs:
            raise PatchworkError(f"{path}: no data for the {name.replace('_', ' ')} figure")
        with atomic_path(path) as tmp:
            tmp.write_bytes(pngs[name])
    models, subjects = _subject_rows(metrics, subject_reports or {})
    uris = {name: _data_uri(png) for name, png in pngs.items()}
    _render(
        "cohort.html",
        out_html,
        n_subjects=metrics["subject"].nunique(),
        table1_columns=list(TABLE1.values()),
        table1=_table1(summary),
        subject_models=models,
        subjects=subjects,
        metrics_png=uris.get("metrics"),
        curves_png=uris.get("learning_curves"),
        summary_rows=[
            {
                "model": r.model,
                "label": r.label,
                "metric": METRIC_TITLES.get(r.metric, r.metric),
                "n": int(r.n),
                "mean_sd": f"{_format(r.mean)} ± {_format(r.sd)}",
                "median_iqr": f"{_format(r.median)} [{_format(r.q1)}, {_format(r.q3)}]",
            }
            for r in summary[list(SUMMARY_COLUMNS)].itertuples(index=False)
        ],
        tolerance_mm=tolerance_mm,
        plans=plans,
        plan_rows=plan_rows(plans, specs or {}) if plans else [],
        convergence=convergence_rows(train_logs or {}),
    )


class _References(HTMLParser):
    """Collects the ``src`` and ``href`` attributes and the element ids of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.targets: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href") and value is not None:
                self.targets.append(value)
            elif name == "id" and value is not None:
                self.ids.add(value)


def unresolved_links(html_path: Path) -> list[str]:
    """The ``src``/``href`` targets of a written page that do not resolve, each with the reason.

    A ``data:image/png`` URI must decode to a PNG; a ``#fragment`` must name an element id of the
    page; a relative path must name an existing file next to the page. Absolute URLs (``http:``,
    ``mailto:``...) are reported too, since the pages are meant to be self-contained.
    """
    parser = _References()
    parser.feed(Path(html_path).read_text())
    problems = []
    for target in parser.targets:
        if target.startswith("data:"):
            header, _, payload = target.partition(",")
            try:
                ok = header == "data:image/png;base64" and base64.b64decode(
                    payload, validate=True
                ).startswith(PNG_SIGNATURE)
            except binascii.Error:
                ok = False
            if not ok:
                problems.append(f"{target[:40]}...: not a base64 PNG")
            continue
        parts = urlsplit(target)
        if parts.scheme or parts.netloc:
            problems.append(f"{target}: external link")
        elif parts.path:
            if not (Path(html_path).parent / unquote(parts.path)).is_file():
                problems.append(f"{target}: no such file")
        elif parts.fragment not in parser.ids:
            problems.append(f"{target}: no element with this id")
    return problems

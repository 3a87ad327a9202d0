"""Self-contained HTML reports: one page per subject and one cohort page.

A subject page holds the metric table of :func:`patchwork.metrics.evaluate_subject` (one row per
model and label, one column per metric) and one PNG, embedded as a base64 data URI so the page is a
single file: axial, coronal and sagittal slices through the centre of mass of the largest reference
lesion (of the image intensities when the reference is empty or missing), the image in grey and
the contour of the reference and of each model in its own colour. Volumes are reoriented to the
closest canonical (RAS) orientation with nibabel before slicing, so the views look anatomical
whatever the storage order; no resampling is done.

The cohort page shows :func:`patchwork.metrics.summarise`'s table, optionally box plots of the
per-subject values and links to the subject pages. Both pages state the empty-mask convention.
Templates live in ``patchwork/templates`` (jinja2, autoescaped).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from pathlib import Path

import jinja2
import nibabel as nib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from scipy import ndimage

from patchwork import __version__
from patchwork.ensemble import check_same_grid, label_components
from patchwork.io import load_nifti, write_text
from patchwork.metrics import EMPTY_MASK_CONVENTION, METRICS

REFERENCE_COLOUR = "#ffe119"
MODEL_COLOURS = ("#e6194b", "#4363d8", "#3cb44b", "#f58231", "#911eb4", "#42d4f4", "#f032e6")
PLOTTED_METRICS = ("dice", "hd95")

_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("patchwork", "templates"),
    autoescape=jinja2.select_autoescape(["html"]),
    undefined=jinja2.StrictUndefined,
)


def _format(value: float) -> str:
    """Four significant digits; NaN (an undefined distance) as ``n/a``."""
    return "n/a" if pd.isna(value) else f"{value:.4g}"


def _png_base64(fig: Figure) -> str:
    """Render ``fig`` to PNG (matplotlib's Agg renderer) and return the bytes as base64 text.

    Figures are built with :class:`matplotlib.figure.Figure`, not pyplot, so no global backend or
    figure registry is involved and nothing needs closing.
    """
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, facecolor=fig.get_facecolor())
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _render(template: str, out_html: Path, **context: object) -> None:
    """Render ``template`` with ``context`` and write it to ``out_html`` atomically."""
    write_text(out_html, _ENV.get_template(template).render(version=__version__, **context))


def _canonical(img: nib.Nifti1Image) -> np.ndarray:
    """Voxels of ``img`` reoriented to the closest RAS orientation (first volume of a 4D image)."""
    data = np.asarray(nib.as_closest_canonical(img).get_fdata(dtype=np.float32))
    return data[..., 0] if data.ndim == 4 else data


def _canonical_mask(path: Path, grid: tuple[Path, tuple[int, ...], np.ndarray]) -> np.ndarray:
    """Non-zero voxels of the label image ``path``, RAS-ordered; it must lie on ``grid``.

    ``grid`` is (image path, shape, affine) of the image the mask is drawn on.
    """
    img = load_nifti(path)
    check_same_grid(path, img.shape[:3], img.affine, *grid)
    return _canonical(img) > 0


def _slice_centre(image: np.ndarray, reference: np.ndarray | None) -> tuple[tuple[int, ...], str]:
    """Voxel at which to cut, and what it is the centre of mass of (for the caption).

    The centre of the largest reference lesion (26-connected component) rather than of all of
    them, so that the cut passes through a lesion even when there are several.
    """
    if reference is not None and reference.any():
        labels, _ = label_components(reference)
        largest = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
        centre, what = (
            ndimage.center_of_mass(labels == largest),
            "the centre of mass of the largest reference lesion",
        )
    else:
        weights = image - image.min()
        if weights.sum() > 0:
            centre, what = ndimage.center_of_mass(weights), "the centre of mass of the image intensities"
        else:
            centre, what = [(n - 1) / 2 for n in image.shape], "the centre of the image"
    voxel = tuple(int(np.clip(round(c), 0, n - 1)) for c, n in zip(centre, image.shape, strict=True))
    return voxel, what


def overlay_png(
    image: np.ndarray,
    spacing: tuple[float, float, float],
    contours: Mapping[str, tuple[np.ndarray, str]],
    centre: tuple[int, ...],
) -> str:
    """Axial, coronal and sagittal slices through ``centre`` with coloured contours, as base64 PNG.

    ``image`` and every mask are RAS-ordered 3D arrays of one shape; ``contours`` maps a legend
    name to (mask, colour). Pixel aspect follows ``spacing`` so anisotropic voxels look right.
    """
    i, j, k = centre
    sx, sy, sz = spacing
    views = (
        (f"axial (z={k})", lambda a: a[:, :, k], sy / sx),
        (f"coronal (y={j})", lambda a: a[:, j, :], sz / sx),
        (f"sagittal (x={i})", lambda a: a[i, :, :], sz / sy),
    )
    low, high = np.percentile(image, [1, 99])
    high = high if high > low else low + 1.0
    fig = Figure(figsize=(13, 5), facecolor="black", layout="constrained")
    axes = fig.subplots(1, 3)
    for ax, (title, cut, aspect) in zip(axes, views, strict=True):
        ax.imshow(cut(image).T, cmap="gray", origin="lower", vmin=low, vmax=high, aspect=aspect)
        for mask, colour in contours.values():
            section = cut(mask).T
            if section.any() and not section.all():
                ax.contour(section, levels=[0.5], colors=[colour], linewidths=1.2, origin="lower")
        ax.set_title(title, color="white")
        ax.axis("off")
    handles = [Line2D([], [], color=colour, lw=2, label=name) for name, (_, colour) in contours.items()]
    if handles:
        legend = fig.legend(
            handles=handles, loc="outside lower center", ncol=min(len(handles), 6), frameon=False
        )
        for text in legend.get_texts():
            text.set_color("white")
    return _png_base64(fig)


def _metric_rows(subject: str, metrics: pd.DataFrame) -> tuple[list[str], list[dict[str, object]]]:
    """Metric names (columns) and one row per (model, label) of ``subject``, values formatted."""
    own = metrics[metrics["subject"].astype(str) == str(subject)]
    table = own.pivot_table(
        index=["model", "label"], columns="metric", values="value", sort=False, dropna=False
    )
    names = [m for m in METRICS if m in table.columns] + [m for m in table.columns if m not in METRICS]
    rows = [
        {"model": model, "label": label, "values": [_format(table.loc[(model, label), m]) for m in names]}
        for model, label in table.index
    ]
    return names, rows


def subject_report(
    subject: str,
    image: Path,
    reference: Path | None,
    segmentations: Mapping[str, Path],
    metrics: pd.DataFrame,
    out_html: Path,
) -> None:
    """Write the HTML page of one subject: metric table and an overlay of the contours.

    ``image``, ``reference`` (optional) and every segmentation must share one grid (the error names
    the odd file). Foreground is every non-zero voxel of the reference and segmentations.
    """
    img = load_nifti(image)
    grid = (image, tuple(img.shape[:3]), img.affine)
    data = _canonical(img)
    spacing = tuple(float(z) for z in nib.as_closest_canonical(img).header.get_zooms()[:3])
    ref = _canonical_mask(reference, grid) if reference is not None else None
    contours: dict[str, tuple[np.ndarray, str]] = {}
    if ref is not None:
        contours["reference"] = (ref, REFERENCE_COLOUR)
    for n, (model, path) in enumerate(segmentations.items()):
        contours[model] = (_canonical_mask(path, grid), MODEL_COLOURS[n % len(MODEL_COLOURS)])
    centre, centre_of = _slice_centre(data, ref)
    metric_names, rows = _metric_rows(subject, metrics)
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
        metric_names=metric_names,
        rows=rows,
        convention=EMPTY_MASK_CONVENTION,
        overlay_png=overlay_png(data, spacing, contours, centre),
        centre_of=centre_of,
        reference_note=reference_note,
    )


def _box_plots(metrics: pd.DataFrame) -> str | None:
    """Box plots of the per-subject values of :data:`PLOTTED_METRICS` by model, or None if none."""
    shown = [m for m in PLOTTED_METRICS if (metrics["metric"] == m).any()]
    if not shown:
        return None
    fig = Figure(figsize=(5 * len(shown), 4), layout="constrained")
    axes = fig.subplots(1, len(shown), squeeze=False)
    for ax, metric in zip(axes[0], shown, strict=True):
        values = metrics[metrics["metric"] == metric]
        models = list(dict.fromkeys(values["model"]))
        series = [
            pd.to_numeric(values.loc[values["model"] == m, "value"]).dropna().to_numpy() for m in models
        ]
        ax.boxplot(series, showmeans=True)
        ax.set_xticks(range(1, len(models) + 1), models, rotation=30, ha="right")
        ax.set_title(metric)
    return _png_base64(fig)


def cohort_summary_html(
    summary: pd.DataFrame,
    out_html: Path,
    subject_reports: Mapping[str, str] | None = None,
    metrics: pd.DataFrame | None = None,
) -> None:
    """Write the cohort page: the :func:`~patchwork.metrics.summarise` table as mean ± sd and
    median [q1, q3], box plots of Dice and HD95 by model when the long ``metrics`` table is given,
    and links to the subject pages (``subject_reports``: subject → relative URL).
    """
    rows = [
        {
            "model": r.model,
            "label": r.label,
            "metric": r.metric,
            "n": int(r.n),
            "mean_sd": f"{_format(r.mean)} ± {_format(r.sd)}",
            "median_iqr": f"{_format(r.median)} [{_format(r.q1)}, {_format(r.q3)}]",
        }
        for r in summary.itertuples(index=False)
    ]
    _render(
        "cohort.html",
        out_html,
        rows=rows,
        convention=EMPTY_MASK_CONVENTION,
        plot_png=_box_plots(metrics) if metrics is not None else None,
        subject_reports=dict(subject_reports or {}),
    )

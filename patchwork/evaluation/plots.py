"""The figures of the reports, drawn with matplotlib's object API (no pyplot, no global state).

* :func:`overlay_figure`: per model, axial, coronal and sagittal slices through one voxel with the
  reference contour (yellow) and the model's contour (red); per uncertainty map, the same slices
  with the map as a heat overlay.
* :func:`metric_figure`: per metric, a box plot of the per-subject values of each model with the
  values themselves as jittered points.
* :func:`learning_curve_figure`: per model, the losses and validation Dice of every fold's
  ``train_log.tsv`` against iterations.

:func:`png_bytes` renders a figure to PNG (Agg); every figure is built on
:class:`matplotlib.figure.Figure`, so nothing needs closing.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from patchwork.evaluation.metrics import METRIC_TITLES

REFERENCE_COLOUR = "#ffe119"
PREDICTION_COLOUR = "#ff3030"
FOLD_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


def png_bytes(fig: Figure, dpi: int = 80) -> bytes:
    """``fig`` rendered as PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, facecolor=fig.get_facecolor())
    return buffer.getvalue()


def _views(
    centre: tuple[int, int, int], spacing: tuple[float, float, float]
) -> list[tuple[str, object, float]]:
    """(title, cut, pixel aspect) of the axial, coronal and sagittal planes through ``centre``.

    ``cut`` maps a RAS-ordered volume to the 2D section shown with ``imshow(..., origin="lower")``
    (first axis horizontal); the aspect is the vertical over the horizontal pixel size.
    """
    i, j, k = centre
    sx, sy, sz = spacing
    return [
        (f"axial z={k}", lambda a: a[:, :, k].T, sy / sx),
        (f"coronal y={j}", lambda a: a[:, j, :].T, sz / sx),
        (f"sagittal x={i}", lambda a: a[i, :, :].T, sz / sy),
    ]


def _contour(ax: object, section: np.ndarray, colour: str, width: float) -> None:
    """Draw the 0.5 iso-line of a boolean section, if it has one."""
    if section.any() and not section.all():
        ax.contour(
            section.astype(np.float32), levels=[0.5], colors=[colour], linewidths=width, origin="lower"
        )


def overlay_figure(
    image: np.ndarray,
    spacing: tuple[float, float, float],
    centre: tuple[int, int, int],
    reference: np.ndarray | None,
    segmentations: Mapping[str, np.ndarray],
    uncertainty: Mapping[str, np.ndarray] | None = None,
) -> Figure:
    """One row of three orthogonal slices through ``centre`` per segmentation and uncertainty map.

    ``image``, ``reference`` (optional), the boolean ``segmentations`` (model → mask) and the
    ``uncertainty`` maps (model → per-voxel spread) are RAS-ordered 3D arrays of one shape; pixel
    aspect follows ``spacing``. The grey scale spans the 1st to 99th percentile of ``image``.
    """
    rows: list[tuple[str, np.ndarray | None, np.ndarray | None]] = [
        (name, mask, None) for name, mask in segmentations.items()
    ]
    rows += [(f"{name}: uncertainty", None, std) for name, std in (uncertainty or {}).items()]
    low, high = np.percentile(image, [1, 99])
    high = high if high > low else low + 1.0
    fig = Figure(figsize=(12, 4.2 * max(len(rows), 1) + 0.4), facecolor="black", layout="constrained")
    subfigs = fig.subfigures(max(len(rows), 1), 1, squeeze=False)[:, 0]
    for sub, (name, mask, std) in zip(subfigs, rows, strict=False):
        sub.set_facecolor("black")
        sub.suptitle(name, color="white", fontsize=13, x=0.01, ha="left")
        axes = sub.subplots(1, 3)
        for ax, (title, cut, aspect) in zip(axes, _views(centre, spacing), strict=True):
            ax.imshow(cut(image), cmap="gray", origin="lower", vmin=low, vmax=high, aspect=aspect)
            if std is not None:
                heat = ax.imshow(
                    np.ma.masked_less_equal(cut(std), 0.0),
                    cmap="inferno",
                    origin="lower",
                    vmin=0.0,
                    vmax=max(float(std.max()), 1e-6),
                    aspect=aspect,
                    alpha=0.8,
                )
            if reference is not None:
                _contour(ax, cut(reference), REFERENCE_COLOUR, 1.6)
            if mask is not None:
                _contour(ax, cut(mask), PREDICTION_COLOUR, 1.2)
            ax.set_title(title, color="white", fontsize=10)
            ax.axis("off")
        if std is not None:
            bar = sub.colorbar(heat, ax=axes, shrink=0.8, label="spread of the outputs")
            bar.ax.yaxis.label.set_color("white")
            bar.ax.tick_params(colors="white")
    handles = [Line2D([], [], color=PREDICTION_COLOUR, lw=2, label="prediction")]
    if reference is not None:
        handles.insert(0, Line2D([], [], color=REFERENCE_COLOUR, lw=2, label="reference"))
    legend = fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False)
    for text in legend.get_texts():
        text.set_color("white")
    return fig


def metric_figure(metrics: pd.DataFrame, metric_names: Sequence[str], columns: int = 4) -> Figure | None:
    """Box plots with jittered points of each metric's per-subject values, one panel per metric.

    ``metrics`` is the long table of :func:`patchwork.evaluation.metrics.evaluate_subject`; panels follow
    ``metric_names`` (metrics without rows are left out), models keep their order of first
    appearance. NaNs (undefined values) are not drawn. None when no metric has rows.
    """
    shown = [m for m in metric_names if (metrics["metric"] == m).any()]
    if not shown:
        return None
    models = list(dict.fromkeys(metrics["model"]))
    rows = -(-len(shown) // columns)
    fig = Figure(figsize=(3.4 * columns, 3.0 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    jitter = np.random.default_rng(0)
    for ax, metric in zip(axes, shown, strict=False):
        values = metrics[metrics["metric"] == metric]
        series = [
            pd.to_numeric(values.loc[values["model"] == m, "value"]).dropna().to_numpy() for m in models
        ]
        ax.boxplot(series, showfliers=False, widths=0.6, medianprops={"color": "black"})
        for x, ys in enumerate(series, start=1):
            ax.plot(x + jitter.uniform(-0.15, 0.15, ys.size), ys, "o", ms=3.5, alpha=0.6, color="tab:blue")
        ax.set_xticks(range(1, len(models) + 1), models, rotation=30, ha="right", fontsize=8)
        ax.set_title(METRIC_TITLES.get(metric, metric), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(shown) :]:
        ax.set_visible(False)
    return fig


def _curves(ax: object, logs: Mapping[str, pd.DataFrame], word: str) -> bool:
    """Plot every column of each log whose name contains ``word`` against its iterations.

    The fold sets the colour; training columns are solid lines with dots, validation columns
    (``val...``) dashed with squares, so that a log of one row still shows. Returns whether
    anything was drawn.
    """
    drawn = False
    for n, (fold, log) in enumerate(logs.items()):
        x = log["iteration"] if "iteration" in log else pd.Series(range(len(log)))
        for column in [c for c in log.columns if word in c]:
            y = pd.to_numeric(log[column], errors="coerce")
            if y.notna().any():
                style = "s--" if column.startswith("val") else "o-"
                colour = FOLD_COLOURS[n % len(FOLD_COLOURS)]
                ax.plot(x, y, style, ms=3, color=colour, label=f"{fold}: {column}")
                drawn = True
    return drawn


def learning_curve_figure(logs: Mapping[str, Mapping[str, pd.DataFrame]]) -> Figure | None:
    """Per model (one row), losses and validation Dice of each fold against iterations.

    ``logs`` maps model → fold → the ``train_log.tsv`` table (columns of
    :mod:`patchwork.training.trainlog`; any column with ``loss`` or ``dice`` in its name is drawn,
    validation columns dashed). None when there are no logs.
    """
    if not logs:
        return None
    fig = Figure(figsize=(12, 3.4 * len(logs)), layout="constrained")
    axes = fig.subplots(len(logs), 2, squeeze=False)
    for (loss_ax, dice_ax), (model, folds) in zip(axes, logs.items(), strict=True):
        for ax, word, title in ((loss_ax, "loss", "loss"), (dice_ax, "dice", "validation Dice")):
            if _curves(ax, folds, word):
                ax.legend(fontsize=7, ncol=2)
            else:
                ax.text(0.5, 0.5, f"no {title} logged", ha="center", va="center", transform=ax.transAxes)
            ax.set_title(f"{model}: {title}", fontsize=10)
            if word == "dice":
                ax.set_ylim(0.0, 1.0)
            ax.set_xlabel("iteration")
            ax.grid(alpha=0.3)
    return fig

"""The training record: ``train_log.tsv`` and its learning-curve PNG.

One row per logging step (every ``val_every`` iterations and at the end) with the columns of
:data:`COLUMNS`: ``iteration`` (iterations done), ``train_loss`` (mean over the iterations since the
previous row), ``val_loss`` and ``val_dice`` (on fixed validation patches; empty without a
validation set), ``lr`` (learning rate of the last iteration) and ``seconds`` (training wall time
so far, carried over a resume).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from patchwork.io import atomic_path, write_text

COLUMNS = ("iteration", "train_loss", "val_loss", "val_dice", "lr", "seconds")


def _cell(value: float) -> str:
    """TSV cell: integers as such, NaN (not measured) as empty, other numbers with 6 significant digits."""
    if isinstance(value, int):
        return str(value)
    return "" if math.isnan(value) else f"{value:.6g}"


def write_train_log(path: Path, rows: Sequence[dict[str, float]], columns: Sequence[str] = COLUMNS) -> None:
    """Write ``rows`` (dicts keyed by ``columns``, default :data:`COLUMNS`) as a TSV table, atomically."""
    lines = ["\t".join(columns)] + ["\t".join(_cell(row[c]) for c in columns) for row in rows]
    write_text(path, "\n".join(lines) + "\n")


def plot_curve(
    path: Path,
    rows: Sequence[dict[str, float]],
    title: str = "U-Net training",
    losses: Sequence[str] = ("train_loss",),
    ylabel: str = "loss (Dice + CE)",
) -> None:
    """Training loss curves (the ``losses`` columns, left axis), the validation loss and Dice (right axis)
    against iterations, as a PNG."""
    fig = Figure(figsize=(6.4, 4.0), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    its = [row["iteration"] for row in rows]
    for key in losses:
        ax.plot(its, [row[key] for row in rows], "o-", label=key.replace("_", " "))
    if any(not math.isnan(row["val_loss"]) for row in rows):
        ax.plot(its, [row["val_loss"] for row in rows], "s-", label="val loss")
        dice_ax = ax.twinx()
        dice_ax.plot(its, [row["val_dice"] for row in rows], "^-", color="tab:green", label="val pseudo-Dice")
        dice_ax.set_ylim(0, 1)
        dice_ax.set_ylabel("Dice")
        dice_ax.legend(loc="upper right")
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")

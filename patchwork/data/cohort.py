"""The cohort table ``subjects.tsv``: one row per subject, the contract between ingest and the rest.

Columns: ``subject`` (id, safe as a file name), ``role`` (``train``: has a label and takes part in
cross-validation; ``test``: image only, predicted by the final model), ``image_0000`` ...
``image_{C-1}`` (absolute path of each channel), ``label`` (absolute path, empty for test subjects)
and, when the source declares one, ``group`` (subjects of one group never straddle a split).

Read and written with the standard library's ``csv`` (every cell text, so ids such as ``NA`` stay ids): the
Snakefile's input functions read this table to build the DAG, without pandas or torch.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

from patchwork.errors import PatchworkError
from patchwork.io import write_text

ROLES = ("train", "test")
# Columns of a CSV manifest (and of this table) that name no image file.
ID_COLUMNS = ("subject", "id")
TEXT_COLUMNS = (*ID_COLUMNS, "group")


@dataclass(frozen=True)
class Subject:
    """One subject: its id, role, image channels, optional label and optional group."""

    subject: str
    role: str
    images: tuple[Path, ...]
    label: Path | None = None
    group: str | None = None
    extra: dict[str, str] = field(default_factory=dict, compare=False)


def channel_column(index: int) -> str:
    """Column name of image channel ``index`` (``image_0000``), as nnU-Net names channel files."""
    return f"image_{index:04d}"


def write_subjects(subjects: list[Subject], path: str | os.PathLike[str]) -> None:
    """Write the cohort table atomically (tab-separated, one row per subject)."""
    n_channels = len(subjects[0].images) if subjects else 0
    grouped = any(x.group is not None for x in subjects)
    columns = ["subject", "role", *[channel_column(c) for c in range(n_channels)], "label"]
    columns += ["group"] if grouped else []
    text = io.StringIO()
    writer = csv.writer(text, delimiter="\t", lineterminator="\n")
    writer.writerow(columns)
    for s in subjects:
        row = [s.subject, s.role, *map(str, s.images), str(s.label) if s.label is not None else ""]
        writer.writerow(row + ([s.group or ""] if grouped else []))
    write_text(path, text.getvalue())


def read_subjects(path: str | os.PathLike[str], role: str | None = None) -> list[Subject]:
    """Read the cohort table; ``role`` keeps only ``train`` or ``test`` subjects."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
            columns = rows[0].keys() if rows else []
    except FileNotFoundError:
        raise PatchworkError(f"{path}: file not found") from None
    missing = {"subject", "role", "label", channel_column(0)} - set(columns)
    if missing:
        raise PatchworkError(f"{path}: missing columns {sorted(missing)}")
    channels = sorted(c for c in columns if c.startswith("image_"))
    return [
        Subject(
            subject=rec["subject"],
            role=rec["role"],
            images=tuple(Path(rec[c]) for c in channels),
            label=Path(rec["label"]) if rec["label"] else None,
            group=rec.get("group") or None,
        )
        for rec in rows
        if role is None or rec["role"] == role
    ]


def find_subject(subjects: list[Subject], subject: str, source: str | os.PathLike[str]) -> Subject:
    """The row of ``subject`` among ``subjects`` (read from ``source``, named in the error)."""
    for row in subjects:
        if row.subject == subject:
            return row
    raise PatchworkError(f"{source}: no subject {subject!r}")

"""The cohort table ``subjects.tsv``: one row per subject, the contract between ingest and the rest.

Columns: ``subject`` (id, safe as a file name), ``role`` (``train``: has a label and takes part in
cross-validation; ``test``: image only, predicted by the final model), ``image_0000`` ...
``image_{C-1}`` (absolute path of each channel), ``label`` (absolute path, empty for test subjects)
and, when the source declares one, ``group`` (subjects of one group never straddle a split).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from patchwork.errors import PatchworkError
from patchwork.io import write_text

ROLES = ("train", "test")


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
    rows = []
    for s in subjects:
        row = {"subject": s.subject, "role": s.role}
        row.update({channel_column(c): str(p) for c, p in enumerate(s.images)})
        row["label"] = str(s.label) if s.label is not None else ""
        if any(x.group is not None for x in subjects):
            row["group"] = s.group if s.group is not None else ""
        rows.append(row)
    columns = ["subject", "role", *[channel_column(c) for c in range(n_channels)], "label"]
    if any(x.group is not None for x in subjects):
        columns.append("group")
    write_text(path, pd.DataFrame(rows, columns=columns).to_csv(sep="\t", index=False))


def read_subjects(path: str | os.PathLike[str], role: str | None = None) -> list[Subject]:
    """Read the cohort table; ``role`` keeps only ``train`` or ``test`` subjects."""
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise PatchworkError(f"{path}: file not found") from None
    missing = {"subject", "role", "label", channel_column(0)} - set(df.columns)
    if missing:
        raise PatchworkError(f"{path}: missing columns {sorted(missing)}")
    channels = sorted(c for c in df.columns if c.startswith("image_"))
    subjects = []
    for rec in df.to_dict("records"):
        if role is not None and rec["role"] != role:
            continue
        subjects.append(
            Subject(
                subject=rec["subject"],
                role=rec["role"],
                images=tuple(Path(rec[c]) for c in channels),
                label=Path(rec["label"]) if rec["label"] else None,
                group=rec.get("group") or None,
            )
        )
    return subjects

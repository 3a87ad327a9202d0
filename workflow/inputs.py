"""What the Snakefile's input functions read: the cohort table, the splits and the dataset's files.

The package's own reader of the cohort table (:mod:`patchwork.data.cohort`) and plain JSON, which import
neither torch nor pandas, so the environment that runs Snakemake (a cluster's login node, say)
needs only Snakemake and light packages. Each file is read once per version, keyed by path, modification
time and size: the DAG build asks for the same table once per job.
"""

from __future__ import annotations

import csv
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from patchwork.data.cohort import TEXT_COLUMNS, Subject, read_subjects

MANIFEST_SUFFIXES = (".csv", ".tsv")


def _version(path: str | os.PathLike[str]) -> tuple[str, int, int]:
    """Cache key of a file's current content: its path, modification time (ns) and size."""
    stat = os.stat(path)
    return os.fspath(path), stat.st_mtime_ns, stat.st_size


@lru_cache(maxsize=64)
def _read_table(path: str, mtime_ns: int, size: int, delimiter: str) -> tuple[dict[str, str], ...]:
    with open(path, newline="", encoding="utf-8-sig") as fh:
        return tuple(csv.DictReader(fh, delimiter=delimiter))


@lru_cache(maxsize=64)
def _read_json(path: str, mtime_ns: int, size: int) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def read_table(path: str | os.PathLike[str], delimiter: str = "\t") -> tuple[dict[str, str], ...]:
    """Rows of a delimited table as ``{column: cell}`` (read again only when the file changes)."""
    return _read_table(*_version(path), delimiter)


def read_json(path: str | os.PathLike[str]) -> Any:
    """A JSON file's content (read again only when the file changes). Treat it as read-only."""
    return _read_json(*_version(path))


# --- the cohort table (subjects.tsv, written by `patchwork ingest`) and the splits (splits.json) -----------


@lru_cache(maxsize=16)
def _subjects(path: str, mtime_ns: int, size: int) -> list[Subject]:
    return read_subjects(path)


def subject_ids(subjects_tsv: str | os.PathLike[str], role: str) -> list[str]:
    """Ids of the ``train`` or ``test`` subjects, in table order."""
    return [s.subject for s in _subjects(*_version(subjects_tsv)) if s.role == role]


def n_folds(splits_json: str | os.PathLike[str]) -> int:
    return len(read_json(splits_json))


def validation_ids(splits_json: str | os.PathLike[str], fold: int | str) -> list[str]:
    """The validation subjects of ``fold``: the batch its model predicts out of fold."""
    return list(read_json(splits_json)[int(fold)]["val"])


# --- the dataset's files (inputs of ingest) --------------------------------------------------------------


def dataset_files(source: str | os.PathLike[str]) -> list[str]:
    """Every file the cohort ``source`` consists of, so that adding or replacing one re-runs ingest.

    A folder (nnU-Net/MSD raw): its files, recursively, hidden ones left out. A CSV/TSV manifest: the
    manifest and the files it names that exist (a missing one is left to ingest, which reports every
    problem of the manifest at once, with its line). Anything else: ``source`` itself, so that Snakemake
    names a missing dataset.
    """
    path = Path(source)
    if path.is_dir():
        return sorted(
            str(p)
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
    if path.suffix.lower() in MANIFEST_SUFFIXES and path.is_file():
        return [str(source), *manifest_files(path)]
    return [str(source)]


def manifest_files(manifest: Path) -> list[str]:
    """The existing files a manifest names (image channels and labels; relative to its folder)."""
    delimiter = "\t" if manifest.suffix.lower() == ".tsv" else ","
    try:
        rows = read_table(manifest, delimiter)
    except (OSError, UnicodeDecodeError, csv.Error):
        return []  # unreadable: ingest says why
    files = set()
    for row in rows:
        for column, cell in row.items():
            # Id and group columns hold no file; column None holds the extra cells of a too-long row.
            if column is None or column.strip().lower() in TEXT_COLUMNS or not (cell or "").strip():
                continue
            candidate = Path(cell.strip()).expanduser()
            candidate = candidate if candidate.is_absolute() else manifest.parent / candidate
            if candidate.is_file():
                files.add(str(candidate.resolve()))
    return sorted(files)

"""Ingest: turn a dataset folder or a CSV manifest into checked ``Subject``s and a dataset fingerprint.

Sources:

* an nnU-Net v2 raw folder: ``dataset.json`` (``channel_names``, ``labels``, ``numTraining``,
  ``file_ending``), ``imagesTr/{id}_{cccc}{ending}``, ``labelsTr/{id}{ending}`` and optionally
  ``imagesTs/{id}_{cccc}{ending}`` (test subjects; a ``labelsTs/`` folder is not read). A Medical
  Segmentation Decathlon / nnU-Net v1 ``dataset.json`` (``modality``, ``labels`` as
  ``{"0": "background"}``, a ``training`` list of ``{"image", "label"}`` and a ``test`` list) works too;
* a CSV (or ``.tsv``) manifest: a ``subject`` (or ``id``) column, a ``label`` column (an empty cell
  makes a test subject), an optional ``group`` column, and every other column an image channel, in
  order (``image``, or ``t1``, ``flair`` ...). Relative paths are relative to the manifest's folder.
  Its labels are the ``labels`` argument (default background 0, lesion 1).

Every file is opened once (``patchwork.data.validate``); all problems of the dataset are collected
and raised together as one ``PatchworkError`` with a line ``"{path}: {problem}"`` each, so a user
fixes a dataset in one round. Example::

    subjects, fingerprint = ingest("raw/Dataset001_Demo")
    write_ingest(subjects, fingerprint, Path("results/subjects.tsv"), Path("results/fingerprint.json"))
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from patchwork.data.cohort import Subject, write_subjects
from patchwork.data.validate import SubjectCheck, check_id, check_subject
from patchwork.errors import PatchworkError
from patchwork.io import read_json, write_json

log = logging.getLogger(__name__)

DEFAULT_LABELS = {"background": 0, "lesion": 1}
ID_COLUMNS = ("subject", "id")
RESERVED_COLUMNS = (*ID_COLUMNS, "label", "group")


@dataclass
class Source:
    """A parsed source before its files are opened: subjects, channel names, labels, problems so far."""

    subjects: list[Subject]
    channels: list[str]
    labels: dict[str, int]
    problems: list[str] = field(default_factory=list)


def ingest(
    source: str | Path, labels: dict[str, int] | None = None, affine_tolerance: float = 1e-3
) -> tuple[list[Subject], dict[str, Any]]:
    """Read and check a cohort; return its subjects (train first, then test) and its fingerprint.

    ``labels`` declares the label values of a CSV manifest; for a folder the ``dataset.json`` declares
    them, and a ``labels`` argument that differs from it is reported as a problem. Affines of the
    channels and the label of a subject may differ by ``affine_tolerance`` (absolute, any entry).

    The fingerprint (a plain dict, written as json) holds the source, channel names, labels, subject
    counts, each subject's spacing (mm) and shape, their medians over the training subjects, and each
    training subject's number of foreground voxels.
    """
    path = Path(source).resolve()
    if path.is_dir():
        parsed = read_raw_folder(path, labels)
    elif path.suffix.lower() in (".csv", ".tsv"):
        parsed = read_manifest(path, labels or DEFAULT_LABELS)
    else:
        raise PatchworkError(f"{path}: not a dataset folder with dataset.json, nor a .csv/.tsv manifest")
    problems = list(parsed.problems)
    checks = {}
    for subject in parsed.subjects:
        checks[subject.subject] = check_subject(subject, parsed.labels, affine_tolerance)
        problems.extend(checks[subject.subject].problems)
    train = [s for s in parsed.subjects if s.role == "train"]
    test = [s for s in parsed.subjects if s.role == "test"]
    if not train:
        problems.append(f"{path}: no training subject (no subject has a label)")
    if problems:
        raise PatchworkError(problems=problems)
    log.info("ingested %s: %d training and %d test subjects", path, len(train), len(test))
    return train + test, fingerprint_of(path, parsed, checks)


def fingerprint_of(path: Path, parsed: Source, checks: dict[str, SubjectCheck]) -> dict[str, Any]:
    """The dataset fingerprint (nnU-Net style) of a cohort whose every subject passed its checks.

    Spacings and shapes are given for every subject, their medians over the training subjects only
    (as nnU-Net plans from the training data); foreground voxel counts for the training subjects.
    """
    spacings = {s: [round(x, 6) for x in c.grid.spacing] for s, c in checks.items()}
    shapes = {s: list(c.grid.shape) for s, c in checks.items()}
    train = [s.subject for s in parsed.subjects if s.role == "train"]
    return {
        "source": str(path),
        "channels": parsed.channels,
        "labels": parsed.labels,
        "n_train": len(train),
        "n_test": len(parsed.subjects) - len(train),
        "spacings": spacings,
        "median_spacing": [float(x) for x in np.median([spacings[s] for s in train], axis=0)],
        "shapes": shapes,
        "median_shape": [float(x) for x in np.median([shapes[s] for s in train], axis=0)],
        "foreground_voxels": {s: checks[s].foreground_voxels for s in train},
    }


def write_ingest(
    subjects: list[Subject], fingerprint: dict[str, Any], subjects_tsv: Path, fingerprint_json: Path
) -> None:
    """Write the cohort table (``write_subjects``) and the fingerprint json, each atomically."""
    write_subjects(subjects, subjects_tsv)
    write_json(fingerprint_json, fingerprint)


def declared_labels(meta: dict[str, Any], where: Path, problems: list[str]) -> dict[str, int]:
    """Labels of a dataset.json as {name: value}; nnU-Net v2 ``{"lesion": 1}`` or MSD ``{"1": "lesion"}``."""
    raw = meta.get("labels")
    if not isinstance(raw, dict) or not raw:
        problems.append(f"{where}: 'labels' must be a non-empty mapping of label names to values")
        return {}
    if all(isinstance(v, str) for v in raw.values()):
        raw = {name: key for key, name in raw.items()}
    labels: dict[str, int] = {}
    for name, value in raw.items():
        try:
            labels[str(name)] = int(value)
        except (TypeError, ValueError):
            problems.append(f"{where}: label {name!r} has value {value!r}; expected an integer")
    return labels


def declared_channels(meta: dict[str, Any], where: Path, problems: list[str]) -> list[str]:
    """Channel names of a dataset.json (``channel_names`` or ``modality``), ordered by their index."""
    raw = meta.get("channel_names", meta.get("modality"))
    try:
        indexed = sorted((int(k), str(v)) for k, v in raw.items())
    except (AttributeError, TypeError, ValueError):
        problems.append(f"{where}: 'channel_names' must map channel indices ('0', '1' ...) to names")
        return []
    if [k for k, _ in indexed] != list(range(len(indexed))) or not indexed:
        problems.append(f"{where}: channel indices must be 0, 1, ... (got {[k for k, _ in indexed]})")
        return []
    return [name for _, name in indexed]


def channel_files(folder: Path, subject: str, n_channels: int, ending: str) -> tuple[Path, ...]:
    """The nnU-Net file of each channel of ``subject``: ``{folder}/{subject}_{cccc}{ending}``."""
    return tuple(folder / f"{subject}_{c:04d}{ending}" for c in range(n_channels))


def scan_images(folder: Path, n_channels: int, ending: str, problems: list[str]) -> list[str]:
    """Subject ids found in an ``imagesTr``/``imagesTs`` folder (files ``{id}_{cccc}{ending}``)."""
    if not folder.is_dir():
        problems.append(f"{folder}: folder not found")
        return []
    pattern = re.compile(rf"(.+)_(\d{{4}}){re.escape(ending)}")
    ids = set()
    for path in sorted(folder.iterdir()):
        if path.name.startswith("."):
            continue
        match = pattern.fullmatch(path.name)
        if match is None:
            problems.append(f"{path}: file name is not {{subject}}_{{cccc}}{ending}")
        elif int(match.group(2)) >= n_channels:
            problems.append(f"{path}: channel {match.group(2)} is not declared in dataset.json")
        else:
            ids.add(match.group(1))
    return sorted(ids)


def read_raw_folder(folder: Path, labels: dict[str, int] | None) -> Source:
    """Parse an nnU-Net v2 (or MSD / nnU-Net v1) raw dataset folder; files are not opened here.

    Problems in ``dataset.json`` itself are raised at once (without channels and labels the files
    cannot be looked up); problems with the files are collected.
    """
    meta_path = folder / "dataset.json"
    meta = read_json(meta_path)
    problems: list[str] = []
    channels = declared_channels(meta, meta_path, problems)
    declared = declared_labels(meta, meta_path, problems)
    if labels is not None and dict(labels) != declared:
        problems.append(f"{meta_path}: declares labels {declared}, but labels {dict(labels)} were given")
    if problems:
        raise PatchworkError(problems=problems)
    ending = str(meta.get("file_ending", ".nii.gz"))
    listed = isinstance(meta.get("training"), list)
    if listed:
        train_ids, test_ids = listed_subjects(meta, meta_path, ending, problems)
    else:
        train_ids = scan_images(folder / "imagesTr", len(channels), ending, problems)
        test_ids = []
        if (folder / "imagesTs").is_dir():
            test_ids = scan_images(folder / "imagesTs", len(channels), ending, problems)
        labelled = {p.name[: -len(ending)] for p in (folder / "labelsTr").glob(f"*{ending}")}
        for orphan in sorted(labelled - set(train_ids)):
            problems.append(f"{folder / 'labelsTr' / (orphan + ending)}: label without images in imagesTr")
    if meta.get("numTraining") not in (None, len(train_ids)):
        problems.append(f"{meta_path}: numTraining is {meta['numTraining']} but {len(train_ids)} were found")
    subjects = []
    for role, ids in (("train", train_ids), ("test", test_ids)):
        images_dir = folder / ("imagesTr" if role == "train" else "imagesTs")
        for subject in ids:
            plain = images_dir / f"{subject}{ending}"
            subjects.append(
                Subject(
                    subject=subject,
                    role=role,
                    images=(plain,)
                    if listed and plain.exists()
                    else channel_files(images_dir, subject, len(channels), ending),
                    label=folder / "labelsTr" / f"{subject}{ending}" if role == "train" else None,
                )
            )
    problems.extend(id_problems([(s.subject, str(s.images[0])) for s in subjects]))
    return Source(subjects=subjects, channels=channels, labels=declared, problems=problems)


def listed_subjects(
    meta: dict[str, Any], meta_path: Path, ending: str, problems: list[str]
) -> tuple[list[str], list[str]]:
    """Subject ids of an MSD-style ``training`` / ``test`` list in ``dataset.json``.

    MSD lists ``./imagesTr/la_003.nii.gz`` and stores that file; nnU-Net v1 lists the same name but
    stores the channels as ``imagesTr/la_003_0000.nii.gz`` ... ``read_raw_folder`` takes whichever
    exists. Labels are always ``labelsTr/{id}{ending}``.
    """
    train = []
    for entry in meta["training"]:
        image = entry.get("image") if isinstance(entry, dict) else None
        if not isinstance(image, str) or not image.endswith(ending):
            problems.append(f"{meta_path}: training entry {entry!r} has no image ending in {ending}")
            continue
        train.append(Path(image).name[: -len(ending)])
    test = [Path(p).name[: -len(ending)] for p in meta.get("test", []) if str(p).endswith(ending)]
    return train, test


def id_problems(entries: list[tuple[str, str]]) -> list[str]:
    """Problem lines for ids unsafe as file names or used twice; ``entries`` are (id, where it is)."""
    problems = []
    seen: dict[str, list[str]] = {}
    for subject, where in entries:
        if subject not in seen:
            problems.extend(check_id(subject, where))
        seen.setdefault(subject, []).append(where)
    for subject, wheres in seen.items():
        if len(wheres) > 1:
            others = ", ".join(wheres[1:])
            problems.append(f"{wheres[0]}: subject id {subject!r} is used more than once (also at {others})")
    return problems


def read_manifest(path: Path, labels: dict[str, int]) -> Source:
    """Parse a CSV/TSV manifest (see the module docstring); files are not opened here."""
    if not path.is_file():
        raise PatchworkError(f"{path}: file not found")
    try:
        table = pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype=str)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise PatchworkError(f"{path}: cannot read the manifest ({str(err).splitlines()[0]})") from None
    table = table.fillna("").rename(columns=lambda c: str(c).strip())
    lower = {c.lower(): c for c in table.columns}
    id_column = next((lower[c] for c in ID_COLUMNS if c in lower), None)
    channels = [c for c in table.columns if c.lower() not in RESERVED_COLUMNS]
    if id_column is None or not channels:
        raise PatchworkError(
            f"{path}: a manifest needs a 'subject' (or 'id') column and at least one image column "
            f"(found columns {list(table.columns)})"
        )
    label_column, group_column = lower.get("label"), lower.get("group")
    problems: list[str] = []
    subjects = []
    lines = []
    for line, row in enumerate(table.to_dict("records"), start=2):
        subject = row[id_column].strip()
        missing = [c for c in channels if not row[c].strip()]
        if not subject or missing:
            what = "no subject id" if not subject else f"no path in column(s) {missing}"
            problems.append(f"{path}: line {line}: {what}")
            continue
        label = row[label_column].strip() if label_column else ""
        lines.append(f"{path}: line {line}")
        subjects.append(
            Subject(
                subject=subject,
                role="train" if label else "test",
                images=tuple(resolve(path.parent, row[c]) for c in channels),
                label=resolve(path.parent, label) if label else None,
                group=(row[group_column].strip() or None) if group_column else None,
            )
        )
    problems.extend(id_problems([(s.subject, where) for s, where in zip(subjects, lines, strict=True)]))
    return Source(subjects=subjects, channels=channels, labels=dict(labels), problems=problems)


def resolve(base: Path, cell: str) -> Path:
    """Absolute path of a manifest cell; a relative path is taken relative to the manifest's folder."""
    candidate = Path(cell.strip()).expanduser()
    return (candidate if candidate.is_absolute() else base / candidate).resolve()

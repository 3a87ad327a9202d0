"""Ingest: turn a dataset folder or a CSV manifest into checked ``Subject``s and a dataset fingerprint.

Sources:

* an nnU-Net v2 raw folder: ``dataset.json`` (``channel_names``, ``labels``, ``numTraining``,
  ``file_ending``), ``imagesTr/{id}_{cccc}{ending}``, ``labelsTr/{id}{ending}`` and optionally
  ``imagesTs/{id}_{cccc}{ending}`` (test subjects; a ``labelsTs/`` folder is not read). A Medical
  Segmentation Decathlon / nnU-Net v1 ``dataset.json`` (``modality``, ``labels`` as
  ``{"0": "background"}``, a ``training`` list of ``{"image", "label"}`` and a ``test`` list of paths,
  or of objects ``{"image": path}`` as in MONAI's decathlon data lists) works too;
* a BIDS folder (:mod:`patchwork.data.bids`): one case per subject and session, channels and label chosen
  by their BIDS entities (``ingest.bids``), the subject as the group; its labels as a manifest's;
* a CSV (or ``.tsv``) manifest: a ``subject`` (or ``id``) column, a ``label`` column (an empty cell
  makes a test subject), an optional ``group`` column, and every other column an image channel, in
  order (``image``, or ``t1``, ``flair`` ...); a channel column whose cells are not ``.nii``/``.nii.gz``
  paths (an ``age`` column, say) is an error rather than a channel. Cells are text as written: an id
  ``NA``, ``null`` or ``None`` is an id, not a missing value. Relative paths are relative to the
  manifest's folder. Its labels are the ``labels`` argument (default background 0, lesion 1).

Labels are whole numbers from 0 to 255 (label maps are stored as uint8 from preprocessing on), each
used by one name. Subject ids must be safe as file names and unique even ignoring case (``Case1``
and ``case1`` would be one file on macOS and Windows).

Every file is opened once (``patchwork.data.validate``): its gzip stream read to the end (CRC
checked) but never beyond ``max_image_bytes``, its header's geometry and voxel type checked, its
voxels checked; all problems of the dataset are collected and raised together as one
``PatchworkError`` with a line ``"{path}: {problem}"`` each, so a user fixes a dataset in one round.
Later stages trust what ingest accepted (they repeat none of these checks). Example::

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

from patchwork.config import DEFAULT_MAX_IMAGE_BYTES, BidsSettings
from patchwork.data.bids import is_bids_folder, read_bids_folder
from patchwork.data.cohort import ID_COLUMNS, Subject, write_subjects
from patchwork.data.validate import SubjectCheck, check_id, check_subject
from patchwork.errors import PatchworkError
from patchwork.io import read_json, write_json

log = logging.getLogger(__name__)

DEFAULT_LABELS = {"background": 0, "lesion": 1}
LABEL_RANGE = (0, 255)  # label values preprocessing can store (uint8)
RESERVED_COLUMNS = (*ID_COLUMNS, "label", "group")
NIFTI_ENDINGS = (".nii", ".nii.gz")


@dataclass
class Source:
    """A parsed source before its files are opened: subjects, channel names, labels, problems so far."""

    subjects: list[Subject]
    channels: list[str]
    labels: dict[str, int]
    problems: list[str] = field(default_factory=list)


def ingest(
    source: str | Path,
    labels: dict[str, int] | None = None,
    affine_tolerance: float = 1e-3,
    max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
    bids: BidsSettings | None = None,
) -> tuple[list[Subject], dict[str, Any]]:
    """Read and check a cohort; return its subjects (train first, then test) and its fingerprint.

    ``labels`` declares the label values of a CSV manifest; for a folder the ``dataset.json`` declares
    them, and a ``labels`` argument that differs from it is reported as a problem. Affines of the
    channels and the label of a subject, and the qform and sform of one file, may differ by
    ``affine_tolerance`` (absolute, any entry); this is the only place the tolerance is applied.
    ``max_image_bytes`` bounds what one file may decompress to (and its header declare), so that a
    gzip bomb is refused in one line instead of exhausting memory. ``bids`` chooses the files of a BIDS
    folder (default: :class:`~patchwork.config.BidsSettings`, the ATLAS R2.0 layout).

    The fingerprint (a plain dict, written as json) holds the source, channel names, labels, subject
    counts, each subject's spacing (mm) and shape, their medians over the training subjects, and each
    training subject's number of foreground voxels.
    """
    if not (isinstance(affine_tolerance, (int, float)) and 0 <= affine_tolerance < float("inf")):
        raise PatchworkError(f"ingest.affine_tolerance must be a number >= 0, got {affine_tolerance!r}")
    if isinstance(max_image_bytes, bool) or not isinstance(max_image_bytes, int) or max_image_bytes <= 0:
        raise PatchworkError(
            f"ingest.max_image_bytes must be a positive whole number, got {max_image_bytes!r}"
        )
    path = Path(source).resolve()
    if path.is_dir() and is_bids_folder(path):
        parsed = read_bids(path, bids or BidsSettings(), DEFAULT_LABELS if labels is None else labels)
    elif path.is_dir():
        parsed = read_raw_folder(path, labels)
    elif path.suffix.lower() in (".csv", ".tsv"):
        parsed = read_manifest(path, DEFAULT_LABELS if labels is None else labels)
    else:
        raise PatchworkError(
            f"{path}: not a dataset folder with dataset.json, nor a .csv/.tsv manifest, nor a BIDS folder"
        )
    problems = list(parsed.problems)
    checks = {}
    for subject in parsed.subjects:
        checks[subject.subject] = check_subject(subject, parsed.labels, affine_tolerance, max_image_bytes)
        problems.extend(checks[subject.subject].problems)
    train = [s for s in parsed.subjects if s.role == "train"]
    test = [s for s in parsed.subjects if s.role == "test"]
    if not train and not problems:  # otherwise a consequence of the problems already reported
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


def parse_labels(raw: object, where: str | Path, problems: list[str]) -> dict[str, int]:
    """Labels as {name: value}, from nnU-Net v2 ``{"lesion": 1}`` or MSD ``{"1": "lesion"}`` form.

    Every value must be a whole number in ``LABEL_RANGE`` (an int, or a string of digits as MSD keys
    are) and belong to one name; problems are appended with ``where`` (the file or setting) in front,
    and the labels that passed are returned.
    """
    if not isinstance(raw, dict) or not raw:
        problems.append(f"{where}: 'labels' must be a non-empty mapping of label names to values")
        return {}
    pairs = list(raw.items())
    if all(isinstance(v, str) for _, v in pairs):
        pairs = [(name, key) for key, name in pairs]
    labels: dict[str, int] = {}
    names: dict[int, str] = {}
    low, high = LABEL_RANGE
    for name, value in pairs:
        number = label_value(value)
        if number is None or not low <= number <= high:
            problems.append(
                f"{where}: label {name!r} has value {value!r}; expected a whole number from {low} to {high}"
            )
        elif name in labels:
            problems.append(f"{where}: label name {name!r} is given to values {labels[name]} and {number}")
        elif number in names:
            problems.append(f"{where}: labels {names[number]!r} and {name!r} both have value {number}")
        else:
            labels[str(name)] = number
            names[number] = str(name)
    return labels


def label_value(value: object) -> int | None:
    """``value`` as an int when it is one (not a bool) or a string of digits; otherwise None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
        return int(value)
    return None


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
    if not isinstance(meta, dict):
        kind = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
            type(meta), "a number"
        )
        raise PatchworkError(f"{meta_path}: expected a JSON object {{...}} at the top level, found {kind}")
    problems: list[str] = []
    channels = declared_channels(meta, meta_path, problems)
    declared = parse_labels(meta.get("labels"), meta_path, problems)
    if labels is not None and not problems and dict(labels) != declared:
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
        for orphan in sorted(labelled - set(train_ids)) if (folder / "imagesTr").is_dir() else []:
            problems.append(f"{folder / 'labelsTr' / (orphan + ending)}: label without images in imagesTr")
    scanned = listed or (folder / "imagesTr").is_dir()
    if scanned and meta.get("numTraining") not in (None, len(train_ids)):
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
    exists. Labels are always ``labelsTr/{id}{ending}``. MSD's ``test`` list holds paths; an object
    ``{"image": path}`` (MONAI's data lists, and the shape of a training entry) is taken as its path.
    """
    train = []
    for entry in meta["training"]:
        image = entry.get("image") if isinstance(entry, dict) else None
        if not isinstance(image, str) or not image.endswith(ending):
            problems.append(f"{meta_path}: training entry {entry!r} has no image ending in {ending}")
            continue
        train.append(Path(image).name[: -len(ending)])
    entries = meta.get("test", [])
    if not isinstance(entries, list):
        problems.append(f"{meta_path}: 'test' must be a list of image paths, got {entries!r}")
        entries = []
    test = []
    for entry in entries:
        image = entry.get("image") if isinstance(entry, dict) else entry
        if not isinstance(image, str) or not image.endswith(ending):
            problems.append(
                f"{meta_path}: test entry {entry!r} is neither an image path ending in {ending} "
                'nor an object {"image": path}'
            )
            continue
        test.append(Path(image).name[: -len(ending)])
    return train, test


def id_problems(entries: list[tuple[str, str]]) -> list[str]:
    """Problem lines for ids unsafe as file names, used twice, or differing only in case (one file on
    the case-insensitive file systems of macOS and Windows); ``entries`` are (id, where it is)."""
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
    spellings: dict[str, list[str]] = {}
    for subject in seen:
        spellings.setdefault(subject.casefold(), []).append(subject)
    for same in spellings.values():
        if len(same) > 1:
            others = ", ".join(f"{s!r} at {seen[s][0]}" for s in same[1:])
            problems.append(
                f"{seen[same[0]][0]}: subject id {same[0]!r} differs only in case from {others} "
                "(they would be one file on macOS and Windows)"
            )
    return problems


def read_bids(path: Path, settings: BidsSettings, labels: dict[str, int]) -> Source:
    """Parse a BIDS folder (:func:`patchwork.data.bids.read_bids_folder`); files are not opened here."""
    problems: list[str] = []
    labels = parse_labels(labels, "ingest.labels", problems)
    if problems:
        raise PatchworkError(problems=problems)
    subjects, channels, problems = read_bids_folder(path, settings)
    problems.extend(id_problems([(s.subject, str(s.images[0])) for s in subjects]))
    return Source(subjects=subjects, channels=channels, labels=labels, problems=problems)


def read_manifest(path: Path, labels: dict[str, int]) -> Source:
    """Parse a CSV/TSV manifest (see the module docstring); files are not opened here."""
    if not path.is_file():
        raise PatchworkError(f"{path}: file not found")
    problems: list[str] = []
    labels = parse_labels(labels, "ingest.labels", problems)
    if problems:
        raise PatchworkError(problems=problems)
    try:
        table = pd.read_csv(
            path, sep="\t" if path.suffix.lower() == ".tsv" else ",", dtype=str, keep_default_na=False
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise PatchworkError(f"{path}: cannot read the manifest ({str(err).splitlines()[0]})") from None
    table = table.fillna("").rename(columns=lambda c: str(c).strip())  # short rows give NaN cells
    lower = {c.lower(): c for c in table.columns}
    id_column = next((lower[c] for c in ID_COLUMNS if c in lower), None)
    if id_column is None:
        raise PatchworkError(
            f"{path}: a manifest needs a 'subject' (or 'id') column (found {list(table.columns)})"
        )
    channels = []
    for column in (c for c in table.columns if c.lower() not in RESERVED_COLUMNS):
        odd = next(
            ((line, cell) for line, cell in enumerate(table[column], start=2) if not is_nifti_cell(cell)),
            None,
        )
        if odd is None:
            channels.append(column)
        else:
            problems.append(
                f"{path}: column {column!r} would be read as an image channel, but line {odd[0]} holds "
                f"{odd[1]!r}, not a .nii/.nii.gz path (all columns but subject/id, label, group are channels)"
            )
    if not channels:
        raise PatchworkError(
            problems=[
                *problems,
                f"{path}: a manifest needs at least one image column (found {list(table.columns)})",
            ]
        )
    label_column, group_column = lower.get("label"), lower.get("group")
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


def is_nifti_cell(cell: str) -> bool:
    """Whether a manifest cell may name an image: empty (reported per line) or a NIfTI file name."""
    return not cell.strip() or cell.strip().lower().endswith(NIFTI_ENDINGS)


def resolve(base: Path, cell: str) -> Path:
    """Absolute path of a manifest cell; a relative path is taken relative to the manifest's folder."""
    candidate = Path(cell.strip()).expanduser()
    return (candidate if candidate.is_absolute() else base / candidate).resolve()

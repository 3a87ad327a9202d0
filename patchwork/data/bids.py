"""BIDS cohorts: one case per subject and session, the files chosen by their BIDS entities.

A BIDS file name is ``sub-<label>[_<key>-<label>]..._<suffix><extension>``, labels alphanumeric (BIDS
1.10, "File name structure"); ``anat``, ``dwi`` ... is the datatype folder it lies in. Each image channel
and the label are chosen by a filter of :class:`~patchwork.config.BidsSettings` (``{"suffix": "T1w"}``;
entities it leaves out may take any value), so the defaults read ATLAS R2.0::

    sub-r001s001/ses-1/anat/sub-r001s001_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz
    sub-r001s001/ses-1/anat/sub-r001s001_ses-1_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz

Images are looked for outside ``derivatives/``, labels anywhere (raw data or ``derivatives/<pipeline>/``,
as ISLES'22 keeps its masks). Folders may sit above the ``sub-*`` folders (ATLAS groups subjects by site:
``R001/sub-r001s001``). The case id is ``sub-<label>_ses-<label>`` (``sub-<label>`` without sessions)
and its group the subject, so that GroupKFold keeps the sessions of one person in one fold.

Why a small parser rather than pybids: the choice needs only the file-name grammar and the entity table,
while pybids brings SQLAlchemy, formulaic, the BIDS validator and four more packages, indexes the dataset
into a database, and refuses layouts such as ATLAS's site folders unless validation is switched off.
Unknown entity keys are errors, not skipped files: a typo such as ``lable-L`` would otherwise leave a
label unmatched without a word.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from patchwork.config import BidsSettings
from patchwork.data.cohort import Subject
from patchwork.errors import PatchworkError

# Entity keys of the BIDS specification 1.10 (Appendix "Entities"), in their prescribed order.
ENTITIES = (
    "sub", "ses", "sample", "task", "tracksys", "acq", "nuc", "voi", "ce", "trc", "stain", "rec", "dir",
    "run", "mod", "echo", "flip", "inv", "mt", "part", "proc", "hemi", "space", "split", "recording",
    "chunk", "seg", "res", "den", "label", "desc",
)  # fmt: skip
FILTER_KEYS = (*ENTITIES, "suffix", "datatype")
NIFTI = re.compile(r"(?P<stem>.+?)(?P<extension>\.nii(?:\.gz)?)", re.IGNORECASE)
PAIR = re.compile(r"(?P<key>[a-zA-Z0-9]+)-(?P<value>[a-zA-Z0-9]+)")
SUFFIX = re.compile(r"[a-zA-Z0-9]+")
DERIVATIVES = "derivatives"
SKIPPED = ("sourcedata", "code", "stimuli")  # BIDS folders that hold no data files


@dataclass(frozen=True)
class BidsFile:
    """A NIfTI file of the dataset with its entities, suffix and datatype folder."""

    path: Path
    entities: dict[str, str]
    suffix: str
    datatype: str
    derived: bool

    def matches(self, wanted: dict[str, str]) -> bool:
        """Whether every key of the filter ``wanted`` has its value here."""
        fields = {**self.entities, "suffix": self.suffix, "datatype": self.datatype}
        return all(fields.get(key) == value for key, value in wanted.items())

    @property
    def session(self) -> tuple[str, str | None]:
        return self.entities["sub"], self.entities.get("ses")


def is_bids_folder(path: Path) -> bool:
    """A folder without ``dataset.json`` that holds ``dataset_description.json`` or ``sub-*`` folders
    (at the top or one level down, as ATLAS's site folders)."""
    if (path / "dataset.json").exists():
        return False
    if (path / "dataset_description.json").is_file():
        return True
    return any(p.is_dir() for pattern in ("sub-*", "*/sub-*") for p in path.glob(pattern))


def parse_name(path: Path, root: Path, problems: list[str]) -> BidsFile | None:
    """The entities of a NIfTI file's name, checked against the grammar, the entity table and its folders
    (``sub-X/ses-Y/`` must agree with the name); a problem line and None when a check fails."""
    match = NIFTI.fullmatch(path.name)
    *pairs, suffix = match.group("stem").split("_") if match else [""]
    parsed = [PAIR.fullmatch(p) for p in pairs]
    if not match or not SUFFIX.fullmatch(suffix) or not all(parsed) or not pairs:
        problems.append(f"{path}: not a BIDS file name (sub-<label>[_<key>-<label>]..._<suffix>.nii[.gz])")
        return None
    entities: dict[str, str] = {}
    for pair in parsed:
        key, value = pair["key"], pair["value"]
        if key not in ENTITIES:
            problems.append(f"{path}: unknown BIDS entity {key!r} (known: {', '.join(ENTITIES)})")
            return None
        if key in entities:
            problems.append(f"{path}: entity {key!r} appears twice")
            return None
        entities[key] = value
    if "sub" not in entities:
        problems.append(f"{path}: BIDS file name without a sub-<label> entity")
        return None
    folders = path.relative_to(root).parts[:-1]
    for key in ("sub", "ses"):
        named = [f.split("-", 1)[1] for f in folders if f.startswith(f"{key}-")]
        if named and named[-1] != entities.get(key):
            problems.append(
                f"{path}: lies in folder {key}-{named[-1]}, but its name says {key}-{entities.get(key)}"
            )
            return None
    return BidsFile(
        path=path,
        entities=entities,
        suffix=suffix,
        datatype=folders[-1] if folders and not folders[-1].startswith(("sub-", "ses-")) else "",
        derived=DERIVATIVES in folders,
    )


def scan(root: Path, problems: list[str]) -> list[BidsFile]:
    """Every NIfTI file under ``root`` (hidden files and ``sourcedata``/``code``/``stimuli`` left out)."""
    files = []
    for path in sorted(root.rglob("*")):
        parts = path.relative_to(root).parts
        if any(p.startswith(".") for p in parts) or parts[0] in SKIPPED or not path.is_file():
            continue
        if NIFTI.fullmatch(path.name):
            parsed = parse_name(path, root, problems)
            if parsed is not None:
                files.append(parsed)
    return files


def check_filter(wanted: dict[str, str], where: str) -> list[str]:
    """Problem lines for filter keys that are neither entities nor ``suffix``/``datatype``."""
    unknown = [key for key in wanted if key not in FILTER_KEYS]
    if unknown:
        names = ", ".join(map(repr, unknown))
        return [f"{where}: unknown BIDS entity {names} (known: {', '.join(FILTER_KEYS)})"]
    return [] if wanted else [f"{where}: an empty filter would match every file"]


def case_id(sub: str, ses: str | None) -> str:
    """``sub-<label>_ses-<label>``, or ``sub-<label>`` for a dataset without sessions."""
    return f"sub-{sub}" if ses is None else f"sub-{sub}_ses-{ses}"


def describe(wanted: dict[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in wanted.items())


def read_bids_folder(root: Path, settings: BidsSettings) -> tuple[list[Subject], list[str], list[str]]:
    """The cases of a BIDS folder (files not opened here), its channel names and the problems found.

    One case per (subject, session) that has a file of any channel; each channel and the label must
    match exactly one file of that session (``unlabelled: test`` makes a session without a label a test
    case). Each problem line names a file of the session concerned.
    """
    problems: list[str] = []
    if not settings.channels:
        problems.append("ingest.bids.channels: at least one image channel is needed")
    for name, wanted in settings.channels.items():
        problems += check_filter(wanted, f"ingest.bids.channels.{name}")
    problems += check_filter(settings.label, "ingest.bids.label")
    if problems:
        raise PatchworkError(problems=problems)
    files = scan(root, problems)
    images: dict[tuple[str, str | None], dict[str, list[BidsFile]]] = defaultdict(lambda: defaultdict(list))
    for f in files:
        for name, wanted in settings.channels.items():
            if not f.derived and f.matches(wanted):
                images[f.session][name].append(f)
    found_labels: dict[tuple[str, str | None], list[BidsFile]] = defaultdict(list)
    for f in files:
        if f.matches(settings.label):
            found_labels[f.session].append(f)
    subjects = []
    for (sub, ses), channels in sorted(images.items(), key=lambda item: (item[0][0], item[0][1] or "")):
        case = case_id(sub, ses)
        anchor = next(f.path for matched in channels.values() for f in matched)
        chosen = []
        for name, wanted in settings.channels.items():
            matched = channels.get(name, [])
            if len(matched) == 1:
                chosen.append(matched[0].path)
            else:
                problems.append(_count_problem(anchor, case, f"channel {name} ({describe(wanted)})", matched))
        label = found_labels.get((sub, ses), [])
        if len(label) > 1 or (not label and settings.unlabelled == "error"):
            problems.append(_count_problem(anchor, case, f"label ({describe(settings.label)})", label))
        if len(chosen) == len(settings.channels) and len(label) <= 1:
            subjects.append(
                Subject(
                    subject=case,
                    role="train" if label else "test",
                    images=tuple(chosen),
                    label=label[0].path if label else None,
                    group=f"sub-{sub}",
                )
            )
    if not images and not problems:
        wanted = "; ".join(describe(w) for w in settings.channels.values())
        problems.append(f"{root}: BIDS folder without an image matching ingest.bids.channels ({wanted})")
    return subjects, list(settings.channels), problems


def _count_problem(anchor: Path, case: str, what: str, matched: list[BidsFile]) -> str:
    """The problem line of a session with no file, or several files, for one channel or the label: it
    names the first file found (``anchor``: a file of the session when none was)."""
    if not matched:
        hint = "; or set ingest.bids.unlabelled: test" if what.startswith("label") else ""
        return f"{anchor}: {case} has no file for the {what}{hint}"
    others = ", ".join(f.path.name for f in matched[1:])
    return (
        f"{matched[0].path}: {case} has {len(matched)} files for the {what} (also {others}); "
        "add an entity (run, acq ...) to the filter to choose one"
    )

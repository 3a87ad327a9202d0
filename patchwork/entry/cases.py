"""The cases of an input folder, checked as ingest checks a cohort, before any model runs.

Two namings, as ``nnUNetv2_predict`` reads them: ``{case}_{cccc}.nii.gz`` (one file per channel, every
NIfTI name of the folder ending in a 4-digit channel index), or, for a single-channel entry, one file
per case, ``{case}.nii.gz`` (``.nii`` too). Other files (a platform's ``inputs.json``, say) are skipped
with a warning. Each case's files are opened once by :func:`patchwork.data.validate.check_subject`
(readable, 3D, finite, sane geometry, channels on one grid), ids by
:func:`patchwork.data.ingest.id_problems`; every problem of the folder is raised together, one line each.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from patchwork.data.cohort import Subject
from patchwork.data.ingest import NIFTI_ENDINGS, channel_files, id_problems
from patchwork.data.validate import check_subject
from patchwork.entry.layout import Entry
from patchwork.errors import PatchworkError

log = logging.getLogger(__name__)

CHANNEL_NAME = re.compile(r"(?P<case>.+)_(?P<channel>\d{4})")


def split_ending(name: str) -> tuple[str, str] | None:
    """``(stem, ending)`` of a NIfTI file name (``.nii.gz`` or ``.nii``, any case), else None."""
    for ending in sorted(NIFTI_ENDINGS, key=len, reverse=True):
        if name.lower().endswith(ending):
            return name[: -len(ending)], name[-len(ending) :]
    return None


def find_cases(folder: Path, entry: Entry) -> list[Subject]:
    """The checked cases of ``folder`` (role ``test``, sorted by id) for the entry's channels."""
    folder = Path(folder)
    if not folder.is_dir():
        raise PatchworkError(f"{folder}: input folder not found")
    n_channels = len(entry.channels)
    stems: dict[str, str] = {}
    for path in sorted(folder.iterdir()):
        parts = split_ending(path.name)
        if path.name.startswith(".") or parts is None or not path.is_file():
            if not path.name.startswith("."):
                log.warning("%s: not a NIfTI file (.nii, .nii.gz); skipped", path)
            continue
        stems[parts[0]] = parts[1]
    if not stems:
        raise PatchworkError(f"{folder}: no NIfTI file (.nii, .nii.gz) to segment")
    problems: list[str] = []
    by_channel = {stem: CHANNEL_NAME.fullmatch(stem) for stem in stems}
    if all(by_channel.values()):
        cases: dict[str, str] = {}
        for stem, match in by_channel.items():
            if int(match["channel"]) >= n_channels:
                problems.append(
                    f"{folder / (stem + stems[stem])}: channel {match['channel']}, but the entry's models "
                    f"take {n_channels} ({', '.join(entry.channels)})"
                )
            cases.setdefault(match["case"], stems[stem])
        subjects = [
            Subject(case, "test", channel_files(folder, case, n_channels, ending))
            for case, ending in sorted(cases.items())
        ]
    elif n_channels == 1:
        subjects = [
            Subject(stem, "test", (folder / (stem + ending),)) for stem, ending in sorted(stems.items())
        ]
    else:
        raise PatchworkError(
            f"{folder}: the entry's models take {n_channels} channels ({', '.join(entry.channels)}); "
            f"name each case's files {{case}}_0000.nii.gz ... {{case}}_{n_channels - 1:04d}.nii.gz"
        )
    problems += id_problems([(s.subject, str(s.images[0])) for s in subjects])
    for subject in subjects:
        check = check_subject(
            subject, entry.labels, entry.ingest.affine_tolerance, entry.ingest.max_image_bytes
        )
        problems += check.problems
    if problems:
        raise PatchworkError(problems=problems)
    return subjects

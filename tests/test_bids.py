"""BIDS cohorts: a BIDS copy of the demo (ATLAS R2.0 naming) is ingested as one case per subject and session
with the subject as the group; bad BIDS input is refused with one line per problem, naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_entry_package import demo_cohort

from patchwork.cli import main
from patchwork.config import BidsSettings, IngestSettings, SplitSettings
from patchwork.data.bids import ENTITIES, FILTER_KEYS
from patchwork.data.cohort import read_subjects
from patchwork.data.ingest import ingest
from patchwork.errors import PatchworkError
from patchwork.stages import data

# test_entry_package's session fixture `demo_cohort`, imported so that the demo is generated once for both.
SHARED_FIXTURES = (demo_cohort,)
SPACE = "space-MNI152NLin2009aSym"
MASK = "label-L_desc-T1lesion_mask.nii.gz"


def put(src: Path, root: Path, sub: str, ses: str, name: str, folder: str = "") -> Path:
    """Copy ``src`` to ``root/[folder/]sub-{sub}/ses-{ses}/anat/sub-{sub}_ses-{ses}_{name}``."""
    dst = root / folder / f"sub-{sub}" / f"ses-{ses}" / "anat" / f"sub-{sub}_ses-{ses}_{name}"
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst)
    return dst


def bids_copy(demo: Path, root: Path) -> Path:
    """The demo in ATLAS R2.0 layout: demo001 with two sessions (the second holding demo_002's scan) under a
    site folder as ATLAS has them, demo002, and demo003 (the demo's test subject) with its label in a
    derivatives folder."""
    image = {1: demo / "imagesTr/demo_001_0000.nii.gz", 2: demo / "imagesTr/demo_002_0000.nii.gz"}
    label = {1: demo / "labelsTr/demo_001.nii.gz", 2: demo / "labelsTr/demo_002.nii.gz"}
    for sub, ses, i, folder in [
        ("demo001", "1", 1, "R001"),
        ("demo001", "2", 2, "R001"),
        ("demo002", "1", 2, ""),
    ]:
        put(image[i], root, sub, ses, f"{SPACE}_T1w.nii.gz", folder)
        put(label[i], root, sub, ses, f"{SPACE}_{MASK}", folder)
    put(demo / "imagesTs/demo_003_0000.nii.gz", root, "demo003", "1", f"{SPACE}_T1w.nii.gz")
    put(
        demo / "labelsTs/demo_003.nii.gz", root / "derivatives" / "lesions", "demo003", "1", f"{SPACE}_{MASK}"
    )
    (root / "dataset_description.json").write_text(json.dumps({"Name": "demo", "BIDSVersion": "1.10.0"}))
    return root


def test_bids_copy_of_the_demo(demo_cohort: Path, tmp_path: Path) -> None:
    root = bids_copy(demo_cohort, tmp_path / "bids")
    subjects_tsv, fingerprint_json = tmp_path / "subjects.tsv", tmp_path / "fingerprint.json"
    fingerprint = data.ingest(str(root), subjects_tsv, fingerprint_json, IngestSettings())
    subjects = read_subjects(subjects_tsv)
    assert [(s.subject, s.role, s.group) for s in subjects] == [
        ("sub-demo001_ses-1", "train", "sub-demo001"),
        ("sub-demo001_ses-2", "train", "sub-demo001"),
        ("sub-demo002_ses-1", "train", "sub-demo002"),
        ("sub-demo003_ses-1", "train", "sub-demo003"),
    ]
    assert subjects[0].images == (
        root / "R001/sub-demo001/ses-1/anat" / f"sub-demo001_ses-1_{SPACE}_T1w.nii.gz",
    )
    assert "derivatives" in subjects[3].label.parts
    assert fingerprint["channels"] == ["T1w"] and fingerprint["labels"] == {"background": 0, "lesion": 1}

    for seed in range(3):  # the two sessions of demo001 always share a fold
        folds = data.splits(subjects_tsv, tmp_path / "splits.json", SplitSettings(n_folds=3), seed)
        assert any({"sub-demo001_ses-1", "sub-demo001_ses-2"} <= set(f["val"]) for f in folds), folds


def test_sessions_without_a_label_as_test_cases(demo_cohort: Path, tmp_path: Path) -> None:
    root = bids_copy(demo_cohort, tmp_path)
    put(demo_cohort / "imagesTs/demo_003_0000.nii.gz", root, "demo004", "1", f"{SPACE}_T1w.nii.gz")
    subjects, _ = ingest(root, bids=BidsSettings(unlabelled="test"))
    assert [(s.subject, s.role) for s in subjects][-1] == ("sub-demo004_ses-1", "test")


def ingest_errors(root: Path, tmp_path: Path, capsys) -> list[str]:
    """The error lines `patchwork ingest` prints for ``root`` (exit status 1, no traceback)."""
    args = ["ingest", str(root), "--out", str(tmp_path / "s.tsv"), "--fingerprint", str(tmp_path / "f.json")]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()


def test_bad_bids_one_line_each(demo_cohort: Path, tmp_path: Path, capsys) -> None:
    root = bids_copy(demo_cohort, tmp_path / "bids")
    image = demo_cohort / "imagesTr" / "demo_001_0000.nii.gz"
    lonely = put(image, root, "demo004", "1", f"{SPACE}_T1w.nii.gz")  # missing label
    first = put(image, root, "demo005", "1", f"{SPACE}_run-1_T1w.nii.gz")  # two T1s for one session
    put(image, root, "demo005", "1", f"{SPACE}_run-2_T1w.nii.gz")
    put(demo_cohort / "labelsTr" / "demo_001.nii.gz", root, "demo005", "1", MASK)
    typo = put(image, root, "demo006", "1", "lable-L_desc-T1lesion_mask.nii.gz")  # unknown entity
    moved = put(image, root, "demo007", "1", "T1w.nii.gz")
    moved = moved.rename(moved.parent / "sub-demo008_ses-1_T1w.nii.gz")  # name and folder disagree
    assert ingest_errors(root, tmp_path, capsys) == [
        f"error: {typo}: unknown BIDS entity 'lable' (known: {', '.join(ENTITIES)})",
        f"error: {moved}: lies in folder sub-demo007, but its name says sub-demo008",
        f"error: {lonely}: sub-demo004_ses-1 has no file for the label (suffix=mask, label=L, "
        "desc=T1lesion); or set ingest.bids.unlabelled: test",
        f"error: {first}: sub-demo005_ses-1 has 2 files for the channel T1w (suffix=T1w) (also "
        f"sub-demo005_ses-1_{SPACE}_run-2_T1w.nii.gz); add an entity (run, acq ...) to the filter to "
        "choose one",
    ]


def test_bad_filters_and_an_empty_bids_folder(tmp_path: Path) -> None:
    (tmp_path / "dataset_description.json").write_text("{}")
    with pytest.raises(PatchworkError) as err:
        ingest(tmp_path, bids=BidsSettings(channels={"T1w": {"sufix": "T1w"}}, label={}))
    assert err.value.problems == [
        f"ingest.bids.channels.T1w: unknown BIDS entity 'sufix' (known: {', '.join(FILTER_KEYS)})",
        "ingest.bids.label: an empty filter would match every file",
    ]
    with pytest.raises(PatchworkError) as err:
        ingest(tmp_path)
    assert err.value.problems == [
        f"{tmp_path}: BIDS folder without an image matching ingest.bids.channels (suffix=T1w)"
    ]

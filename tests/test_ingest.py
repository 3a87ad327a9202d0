"""Ingest: valid nnU-Net folders and CSV manifests, and one clear line per problem of a broken one."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from patchwork.config import PreprocessSettings
from patchwork.data.cohort import read_subjects
from patchwork.data.demo import make_demo_dataset
from patchwork.data.ingest import ingest, write_ingest
from patchwork.data.preprocess import preprocess_subject
from patchwork.errors import PatchworkError
from patchwork.io import read_json, save_image


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny demo (3 training, 1 test subject at 4 mm), generated once and never modified."""
    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "Demo", n_train=3, n_test=1, spacing=4.0)


@pytest.fixture
def dataset(pristine: Path, tmp_path: Path) -> Path:
    """A private copy of the demo that a test may break."""
    return Path(shutil.copytree(pristine, tmp_path / "Demo"))


def load(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.load(path)
    return np.asarray(img.dataobj), img.affine


def problems_of(source: Path | str, **kwargs: object) -> list[str]:
    """The problem lines ingest raises for ``source`` (fails the test when it does not raise)."""
    with pytest.raises(PatchworkError) as err:
        ingest(source, **kwargs)
    return err.value.problems


def assert_reported(problems: list[str], path: Path, *fragments: str) -> None:
    """Some line starts with ``path`` and names every fragment."""
    assert any(line.startswith(f"{path}: ") and all(f in line for f in fragments) for line in problems), (
        problems
    )


def write_manifest(path: Path, rows: list[list[str]]) -> Path:
    path.write_text("\n".join(",".join(row) for row in rows) + "\n")
    return path


def test_valid_folder_gives_subjects_and_fingerprint(dataset: Path) -> None:
    subjects, fingerprint = ingest(dataset)
    assert [(s.subject, s.role) for s in subjects] == [
        ("demo_001", "train"),
        ("demo_002", "train"),
        ("demo_003", "train"),
        ("demo_004", "test"),
    ]
    first = subjects[0]
    assert first.images == (dataset.resolve() / "imagesTr" / "demo_001_0000.nii.gz",)
    assert first.label == dataset.resolve() / "labelsTr" / "demo_001.nii.gz"
    assert subjects[3].label is None and subjects[3].images[0].parent.name == "imagesTs"
    assert all(p.is_absolute() for s in subjects for p in s.images)
    assert fingerprint["channels"] == ["T1"]
    assert fingerprint["labels"] == {"background": 0, "lesion": 1}
    assert (fingerprint["n_train"], fingerprint["n_test"]) == (3, 1)
    assert fingerprint["median_spacing"] == [4.0, 4.0, 4.0]
    assert fingerprint["median_shape"] == [50, 59, 48]
    assert fingerprint["shapes"]["demo_004"] == [50, 59, 48]
    assert set(fingerprint["foreground_voxels"]) == {"demo_001", "demo_002", "demo_003"}
    label, _ = load(dataset / "labelsTr" / "demo_002.nii.gz")
    assert fingerprint["foreground_voxels"]["demo_002"] == int(label.sum()) > 0


def test_write_ingest_round_trips(dataset: Path, tmp_path: Path) -> None:
    subjects, fingerprint = ingest(dataset)
    write_ingest(subjects, fingerprint, tmp_path / "subjects.tsv", tmp_path / "fingerprint.json")
    assert read_subjects(tmp_path / "subjects.tsv") == subjects
    assert read_json(tmp_path / "fingerprint.json") == fingerprint


def test_csv_manifest_with_groups_and_a_test_row(dataset: Path) -> None:
    manifest = write_manifest(
        dataset / "cohort.csv",
        [
            ["subject", "t1", "label", "group"],
            ["a", "imagesTr/demo_001_0000.nii.gz", "labelsTr/demo_001.nii.gz", "site1"],
            ["b", "imagesTr/demo_002_0000.nii.gz", "labelsTr/demo_002.nii.gz", "site1"],
            ["c", str(dataset / "imagesTr/demo_003_0000.nii.gz"), "labelsTr/demo_003.nii.gz", "site2"],
            ["d", "imagesTs/demo_004_0000.nii.gz", "", ""],
        ],
    )
    subjects, fingerprint = ingest(manifest)
    assert [(s.subject, s.role, s.group) for s in subjects] == [
        ("a", "train", "site1"),
        ("b", "train", "site1"),
        ("c", "train", "site2"),
        ("d", "test", None),
    ]
    assert subjects[0].images == ((dataset / "imagesTr/demo_001_0000.nii.gz").resolve(),)
    assert fingerprint["channels"] == ["t1"]
    assert fingerprint["labels"] == {"background": 0, "lesion": 1}


def test_msd_style_dataset_json_is_accepted(dataset: Path) -> None:
    (dataset / "dataset.json").write_text(
        json.dumps(
            {
                "modality": {"0": "T1"},
                "labels": {"0": "background", "1": "lesion"},
                "numTraining": 3,
                "training": [
                    {"image": f"./imagesTr/demo_00{i}.nii.gz", "label": f"./labelsTr/demo_00{i}.nii.gz"}
                    for i in (1, 2, 3)
                ],
                "test": ["./imagesTs/demo_004.nii.gz"],
            }
        )
    )
    subjects, fingerprint = ingest(dataset)
    assert [s.role for s in subjects] == ["train", "train", "train", "test"]
    assert subjects[1].images[0].name == "demo_002_0000.nii.gz"
    assert fingerprint["labels"] == {"background": 0, "lesion": 1}


def test_all_background_label_is_allowed_with_a_warning(
    dataset: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = dataset / "labelsTr" / "demo_001.nii.gz"
    label, affine = load(path)
    save_image(np.zeros_like(label), affine, path, np.uint8)
    with caplog.at_level(logging.WARNING):
        _, fingerprint = ingest(dataset)
    assert fingerprint["foreground_voxels"]["demo_001"] == 0
    assert "all background" in caplog.text and "demo_001" in caplog.text


def test_image_with_a_trailing_singleton_dimension_is_3d(dataset: Path) -> None:
    path = dataset / "imagesTr" / "demo_001_0000.nii.gz"
    image, affine = load(path)
    save_image(image[..., None], affine, path)
    subjects, _ = ingest(dataset)
    assert len(subjects) == 4


def test_missing_label(dataset: Path) -> None:
    missing = dataset.resolve() / "labelsTr" / "demo_002.nii.gz"
    missing.unlink()
    assert_reported(problems_of(dataset), missing, "file not found")


def test_shape_mismatch(dataset: Path) -> None:
    path = dataset.resolve() / "labelsTr" / "demo_001.nii.gz"
    label, affine = load(path)
    save_image(label[:-2], affine, path, np.uint8)
    assert_reported(problems_of(dataset), path, "shape (48, 59, 48)", "demo_001_0000.nii.gz (50, 59, 48)")


def test_affine_mismatch(dataset: Path) -> None:
    path = dataset.resolve() / "labelsTr" / "demo_003.nii.gz"
    label, affine = load(path)
    shifted = affine.copy()
    shifted[0, 3] += 1.5
    save_image(label, shifted, path, np.uint8)
    assert_reported(problems_of(dataset), path, "affine differs", "1.5")


def test_small_affine_difference_within_tolerance_is_accepted(dataset: Path) -> None:
    path = dataset / "labelsTr" / "demo_003.nii.gz"
    label, affine = load(path)
    save_image(label, affine + 1e-5, path, np.uint8)
    assert len(ingest(dataset)[0]) == 4
    assert_reported(problems_of(dataset, affine_tolerance=1e-7), path.resolve(), "affine differs")


def test_nan_in_image(dataset: Path) -> None:
    path = dataset.resolve() / "imagesTr" / "demo_002_0000.nii.gz"
    image, affine = load(path)
    image = image.astype(np.float32)
    image[10, 10, 10] = np.nan
    image[11, 10, 10] = np.inf
    save_image(image, affine, path)
    assert_reported(problems_of(dataset), path, "2 voxels are NaN or infinite")


def test_unknown_label_value(dataset: Path) -> None:
    path = dataset.resolve() / "labelsTr" / "demo_001.nii.gz"
    label, affine = load(path)
    label[0, 0, :3] = [2, 7, 7]
    save_image(label, affine, path, np.uint8)
    assert_reported(problems_of(dataset), path, "label values 2, 7 are not among", "lesion=1")


def test_4d_image(dataset: Path) -> None:
    path = dataset.resolve() / "imagesTs" / "demo_004_0000.nii.gz"
    image, affine = load(path)
    save_image(np.stack([image, image], axis=-1), affine, path)
    assert_reported(problems_of(dataset), path, "(50, 59, 48, 2)", "expected a 3D image")


def test_duplicate_id_in_manifest(dataset: Path) -> None:
    manifest = write_manifest(
        dataset / "cohort.csv",
        [
            ["id", "image", "label"],
            ["s1", "imagesTr/demo_001_0000.nii.gz", "labelsTr/demo_001.nii.gz"],
            ["s2", "imagesTr/demo_002_0000.nii.gz", "labelsTr/demo_002.nii.gz"],
            ["s1", "imagesTr/demo_003_0000.nii.gz", "labelsTr/demo_003.nii.gz"],
        ],
    )
    problems = problems_of(manifest)
    assert_reported(problems, manifest.resolve(), "line 2", "'s1' is used more than once", "line 4")


def test_corrupt_gzip(dataset: Path) -> None:
    path = dataset.resolve() / "imagesTr" / "demo_003_0000.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert_reported(problems_of(dataset), path, "cannot read NIfTI")


def test_unsafe_ids(dataset: Path) -> None:
    for old, new in (("demo_001_0000", "demo 001_0000"), ("demo_001", "demo 001")):
        folder = "imagesTr" if old.endswith("0000") else "labelsTr"
        (dataset / folder / f"{old}.nii.gz").rename(dataset / folder / f"{new}.nii.gz")
    image = dataset.resolve() / "imagesTr" / "demo 001_0000.nii.gz"
    assert_reported(problems_of(dataset), image, "'demo 001' is not safe as a file name")
    manifest = write_manifest(
        dataset / "cohort.csv",
        [
            ["subject", "image", "label"],
            ["../up", "imagesTr/demo_002_0000.nii.gz", "labelsTr/demo_002.nii.gz"],
        ],
    )
    assert_reported(problems_of(manifest), manifest.resolve(), "line 2", "'../up' is not safe")


def test_every_problem_is_reported_at_once(dataset: Path) -> None:
    root = dataset.resolve()
    (root / "labelsTr" / "demo_001.nii.gz").unlink()
    image_path = root / "imagesTr" / "demo_003_0000.nii.gz"
    image, affine = load(image_path)
    save_image(np.full(image.shape, np.nan, np.float32), affine, image_path)
    problems = problems_of(dataset)
    assert len(problems) == 2, problems
    assert_reported(problems, root / "labelsTr" / "demo_001.nii.gz", "file not found")
    assert_reported(problems, image_path, "NaN")


def test_cohort_without_training_subject(dataset: Path) -> None:
    manifest = write_manifest(
        dataset / "cohort.csv", [["subject", "image", "label"], ["t", "imagesTs/demo_004_0000.nii.gz", ""]]
    )
    assert_reported(problems_of(manifest), manifest.resolve(), "no training subject")


def test_labels_argument_must_agree_with_dataset_json(dataset: Path) -> None:
    problems = problems_of(dataset, labels={"background": 0, "infarct": 1})
    assert_reported(problems, dataset.resolve() / "dataset.json", "declares labels")


def test_unknown_source(tmp_path: Path) -> None:
    assert_reported(problems_of(tmp_path / "nothing.txt"), tmp_path / "nothing.txt", "not a dataset folder")


def test_max_image_bytes_bounds_every_file(dataset: Path) -> None:
    problems = problems_of(dataset, max_image_bytes=100_000)
    assert len(problems) == 7, problems  # 3 images + 3 labels + 1 test image, each ~0.5 MiB unpacked
    assert all("decompresses to more than 97.66 KiB (the max_image_bytes limit)" in line for line in problems)
    with pytest.raises(PatchworkError, match="ingest.max_image_bytes must be a positive whole number"):
        ingest(dataset, max_image_bytes=0)


def test_affine_tolerance_is_applied_by_ingest_alone(dataset: Path, tmp_path: Path) -> None:
    path = dataset / "labelsTr" / "demo_001.nii.gz"
    label, affine = load(path)
    affine[:3, 3] += 5e-3
    save_image(label, affine, path, np.uint8)
    assert_reported(problems_of(dataset), path.resolve(), "affine differs", "tolerance 0.001")
    subjects, _ = ingest(dataset, affine_tolerance=1e-2)
    record = preprocess_subject(subjects[0], tmp_path / "pre", PreprocessSettings(crop_nonzero=False))
    assert record["shape"] == list(label.shape)

"""The synthetic demo cohort: layout, geometry, lesion properties and determinism."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from patchwork.data.demo import LESION_ML, make_demo_dataset
from patchwork.errors import PatchworkError
from patchwork.io import read_json

SPACING = 4.0


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny cohort (3 training, 1 test subject at 4 mm), generated once for the module."""
    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "Demo", n_train=3, n_test=1, spacing=SPACING)


def pairs(root: Path) -> list[tuple[Path, Path]]:
    """(image, label) file pairs of the training and test subjects."""
    found = []
    for images, labels in (("imagesTr", "labelsTr"), ("imagesTs", "labelsTs")):
        for label in sorted((root / labels).glob("*.nii.gz")):
            found.append((root / images / label.name.replace(".nii.gz", "_0000.nii.gz"), label))
    return found


def test_dataset_json_follows_nnunet_v2(demo: Path) -> None:
    meta = read_json(demo / "dataset.json")
    assert meta["channel_names"] == {"0": "T1"}
    assert meta["labels"] == {"background": 0, "lesion": 1}
    assert meta["numTraining"] == 3
    assert meta["file_ending"] == ".nii.gz"
    assert meta["name"]


def test_files_are_named_like_nnunet(demo: Path) -> None:
    assert sorted(p.name for p in (demo / "imagesTr").iterdir()) == [
        "demo_001_0000.nii.gz",
        "demo_002_0000.nii.gz",
        "demo_003_0000.nii.gz",
    ]
    assert sorted(p.name for p in (demo / "labelsTr").iterdir()) == [
        "demo_001.nii.gz",
        "demo_002.nii.gz",
        "demo_003.nii.gz",
    ]
    assert [p.name for p in (demo / "imagesTs").iterdir()] == ["demo_004_0000.nii.gz"]
    assert [p.name for p in (demo / "labelsTs").iterdir()] == ["demo_004.nii.gz"]


def test_image_and_label_share_the_template_grid(demo: Path) -> None:
    for image_path, label_path in pairs(demo):
        image, label = nib.load(image_path), nib.load(label_path)
        assert image.shape == label.shape == (50, 59, 48)
        np.testing.assert_allclose(image.affine, label.affine)
        np.testing.assert_allclose(np.diag(image.affine)[:3], [SPACING] * 3)
        np.testing.assert_allclose(image.affine[:3, 3], [-98.0, -134.0, -72.0])
        assert label.get_data_dtype() == np.uint8
        assert set(np.unique(np.asarray(label.dataobj))) <= {0, 1}


def test_each_subject_has_one_to_three_lesions_of_plausible_volume(demo: Path) -> None:
    voxel_ml = SPACING**3 / 1000.0
    for _, label_path in pairs(demo):
        components, n = ndimage.label(np.asarray(nib.load(label_path).dataobj) > 0)
        assert 1 <= n <= 3, label_path
        volumes = np.bincount(components.ravel())[1:] * voxel_ml
        assert np.all((volumes >= LESION_ML[0]) & (volumes <= LESION_ML[1])), (label_path, volumes)


def test_lesions_are_darker_than_the_surrounding_tissue(demo: Path) -> None:
    for image_path, label_path in pairs(demo):
        image = np.asarray(nib.load(image_path).dataobj, dtype=np.float32)
        lesion = np.asarray(nib.load(label_path).dataobj) > 0
        shell = ndimage.binary_dilation(lesion, iterations=2) & ~lesion & (image > 0)
        white_matter_level = np.percentile(image[image > 0], 90)
        assert image[lesion].mean() < 0.8 * image[shell].mean(), image_path
        assert image[lesion].mean() < 0.65 * white_matter_level, image_path


def test_same_seed_gives_identical_files_and_another_seed_differs(demo: Path, tmp_path: Path) -> None:
    again = make_demo_dataset(tmp_path / "again", n_train=1, n_test=0, spacing=SPACING, seed=0)
    other = make_demo_dataset(tmp_path / "other", n_train=1, n_test=0, spacing=SPACING, seed=1)
    for relative in ("imagesTr/demo_001_0000.nii.gz", "labelsTr/demo_001.nii.gz"):
        assert (again / relative).read_bytes() == (demo / relative).read_bytes()
        first = np.asarray(nib.load(demo / relative).dataobj)
        assert not np.array_equal(first, np.asarray(nib.load(other / relative).dataobj))


def test_rerun_with_fewer_subjects_removes_stale_files(tmp_path: Path) -> None:
    make_demo_dataset(tmp_path, n_train=2, n_test=1, spacing=8.0)
    make_demo_dataset(tmp_path, n_train=1, n_test=0, spacing=8.0)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.nii.gz")) == [
        "imagesTr/demo_001_0000.nii.gz",
        "labelsTr/demo_001.nii.gz",
    ]
    assert read_json(tmp_path / "dataset.json")["numTraining"] == 1


@pytest.mark.parametrize("kwargs", [{"n_train": 0}, {"n_test": -1}, {"spacing": 0.5}, {"spacing": 10.0}])
def test_rejects_impossible_settings(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(PatchworkError, match="the demo needs"):
        make_demo_dataset(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir())

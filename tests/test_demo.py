"""The synthetic demo cohort: layout, geometry, lesion properties and determinism."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from patchwork.data.demo import (
    _FLAIR_TISSUE,
    _RIM_MM,
    GEOMETRIES,
    LESION_ML,
    flair_image,
    load_template,
    make_demo_dataset,
)
from patchwork.errors import PatchworkError
from patchwork.io import read_json

SPACING = 4.0


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny cohort (3 training, 1 test subject at 4 mm: one of each geometry), generated once."""
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


def test_geometry_is_mixed_and_image_and_label_share_each_grid(demo: Path) -> None:
    """Isotropic, anisotropic (0.75 x 0.75 x 1.5 the base size) and axis-flipped subjects, in turn; the
    flipped ones show the same anatomy (same world box) stored in reverse along x and y."""
    assert GEOMETRIES == ("isotropic", "anisotropic", "flipped")
    expected = {
        "isotropic": ((50, 59, 48), [SPACING] * 3),
        "anisotropic": ((66, 78, 32), [0.75 * SPACING, 0.75 * SPACING, 1.5 * SPACING]),
        "flipped": ((50, 59, 48), [-SPACING, -SPACING, SPACING]),
    }
    for index, (image_path, label_path) in enumerate(pairs(demo)):
        image, label = nib.load(image_path), nib.load(label_path)
        shape, diagonal = expected[GEOMETRIES[index % 3]]
        assert image.shape == label.shape == shape, image_path
        np.testing.assert_allclose(image.affine, label.affine)
        np.testing.assert_allclose(np.diag(image.affine)[:3], diagonal)
        corners = np.array([[0, 0, 0, 1], [*(np.array(shape) - 1), 1]]) @ image.affine.T
        np.testing.assert_allclose(corners[:, :3].min(axis=0), [-98.0, -134.0, -72.0], atol=SPACING)
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
        assert image[lesion].mean() < 0.9 * image[shell].mean(), image_path  # 4 mm: partial volume


@pytest.fixture(scope="module")
def demo_2mm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One isotropic 2 mm subject, fine enough for a lesion core and rim."""
    return make_demo_dataset(tmp_path_factory.mktemp("demo2") / "Demo", n_train=1, n_test=0, spacing=2.0)


def test_lesion_core_is_as_dark_as_csf_and_the_rim_brighter(demo_2mm: Path) -> None:
    """Real chronic stroke lesions on T1 are as dark as CSF (not darker) with a brighter rim: relative to
    white matter the core sits at the template's ventricle/white-matter ratio (about 0.34), the rim above."""
    image = np.asarray(nib.load(demo_2mm / "imagesTr/demo_001_0000.nii.gz").dataobj, dtype=np.float32)
    lesion = np.asarray(nib.load(demo_2mm / "labelsTr/demo_001.nii.gz").dataobj) > 0
    depth = ndimage.distance_transform_edt(lesion, sampling=2.0)
    core, rim = depth > _RIM_MM + 2.0, lesion & (depth <= 2.0)
    assert core.sum() > 10, "the first 2 mm subject should have a lesion with a core"
    white_matter = np.percentile(image[image > 0], 90)
    template = load_template(2.0)
    csf_ratio = template.csf / np.percentile(template.t1[template.wm > 0.9], 50)
    assert 0.6 * csf_ratio < np.median(image[core]) / white_matter < 1.5 * csf_ratio
    assert np.median(image[rim]) > 1.2 * np.median(image[core])


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


@pytest.fixture(scope="module")
def flair(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The FLAIR appearance: 4 subjects at 4 mm."""
    return make_demo_dataset(
        tmp_path_factory.mktemp("flair") / "Demo", n_train=4, n_test=0, spacing=SPACING, appearance="flair"
    )


def test_flair_lesions_are_brighter_than_their_surroundings(flair: Path) -> None:
    assert read_json(flair / "dataset.json")["channel_names"] == {"0": "FLAIR"}
    counts = []
    for image_path, label_path in pairs(flair):
        image = np.asarray(nib.load(image_path).dataobj, dtype=np.float32)
        lesion = np.asarray(nib.load(label_path).dataobj) > 0
        shell = ndimage.binary_dilation(lesion, iterations=2) & ~lesion & (image > 0)
        assert image[lesion].mean() > 1.1 * image[shell].mean(), image_path
        counts.append(ndimage.label(lesion)[1])
    assert all(1 <= n <= 6 for n in counts)


def test_flair_contrast_suppresses_csf_and_adds_periventricular_bands() -> None:
    """On the template itself: CSF darkest, grey matter brighter than white matter, and on top of the tissue
    contrast, bright bands in the tissue next to the ventricles (the unlabelled caps), none far from them."""
    template = load_template(SPACING)
    image = flair_image(
        template.t1, template.gm, template.wm, template.affine, np.full(3, 1.0), np.random.default_rng(0)
    )
    brain = template.t1 > 0.02
    csf = brain & (template.gm + template.wm < 0.2)
    assert image[csf].mean() < 0.3 * image[template.gm > 0.6].mean()
    assert image[template.wm > 0.9].mean() < image[template.gm > 0.6].mean()
    tissue = np.clip(1 - template.gm - template.wm, 0, 1) * brain
    plain = sum(_FLAIR_TISSUE[k] * m for k, m in (("gm", template.gm), ("wm", template.wm), ("csf", tissue)))
    ventricles = (tissue > 0.5) & (ndimage.distance_transform_edt(brain) > 20)  # 1 mm voxels
    walls = ndimage.binary_dilation(ventricles, iterations=2) & (template.wm > 0.5)
    far = (template.wm > 0.5) & ~ndimage.binary_dilation(ventricles, iterations=20)
    assert (image - plain)[walls].mean() > 0.05
    assert (image - plain)[far].mean() < 0.01

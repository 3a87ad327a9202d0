"""Preprocessing: geometry survives crop, resampling and the way back; normalisation; the record."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from patchwork.config import PreprocessSettings
from patchwork.data.cohort import Subject
from patchwork.data.itk import to_sitk, voxel_spacing
from patchwork.data.preprocess import (
    load_preprocessed,
    open_preprocessed,
    preprocess_image,
    preprocess_subject,
    to_original,
)
from patchwork.errors import PatchworkError
from patchwork.io import read_json, save_image, write_json


def _preprocess(subject: Subject, root: Path, target: object, **settings: object) -> dict:
    """Preprocess ``subject`` into ``root/{subject}/`` (the workflow's layout) at spacing ``target``."""
    spacing = None if target is None else tuple(float(v) for v in target)  # type: ignore[attr-defined]
    return preprocess_subject(subject, root / subject.subject, PreprocessSettings(spacing, **settings))


def _rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    """Rotation matrix about ``axis`` (Rodrigues' formula)."""
    axis = axis / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    theta = np.deg2rad(degrees)
    return np.eye(3) + np.sin(theta) * k + (1 - np.cos(theta)) * k @ k


def _affine(linear: np.ndarray, origin: tuple[float, float, float]) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = origin
    return affine


GEOMETRIES = {
    "anisotropic": ((48, 44, 16), _affine(np.diag([1.0, 1.0, 3.0]), (-24.0, -22.0, -24.0))),
    "oblique_flipped": (
        (40, 48, 20),
        _affine(
            _rotation(np.array([1.0, 2.0, 3.0]), 25.0) @ np.diag([-1.2, 0.9, 2.0]),
            (10.0, -5.0, 30.0),
        ),
    ),
}
TARGET = (1.5, 1.5, 1.5)


def _world(affine: np.ndarray, index: np.ndarray) -> np.ndarray:
    """World coordinates (mm) of voxel indices ``index`` of shape ``[N, 3]``."""
    return index @ affine[:3, :3].T + affine[:3, 3]


def _centre_of_mass(label: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Centre of mass of the non-zero voxels of ``label``, in world mm."""
    return _world(affine, np.argwhere(label > 0).mean(axis=0))


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def _write_case(
    tmp_path: Path, name: str, seed: int = 0
) -> tuple[Subject, np.ndarray, np.ndarray, np.ndarray]:
    """Write a two-channel image and label; non-zero box smaller than the image, off-centre blob.

    The blob is a 7 mm sphere in world space around a voxel off the image centre, so a wrong
    world/voxel convention anywhere moves it.
    """
    shape, affine = GEOMETRIES[name]
    rng = np.random.default_rng(seed)
    box = tuple(slice(n // 8 + 1, n - n // 6) for n in shape)
    image = np.zeros(shape, dtype=np.float32)
    image[box] = 100.0 + 20.0 * rng.standard_normal(image[box].shape)
    second = np.zeros(shape, dtype=np.float32)
    second[box] = 50.0 + 5.0 * rng.standard_normal(image[box].shape)
    index = np.indices(shape).reshape(3, -1).T
    centre = _world(affine, np.array([0.55, 0.4, 0.6]) * np.array(shape))
    label = (np.linalg.norm(_world(affine, index) - centre, axis=1) <= 7.0).reshape(shape).astype(np.uint8)
    image[label > 0] += 60.0
    paths = [tmp_path / f"{name}_0000.nii.gz", tmp_path / f"{name}_0001.nii.gz"]
    save_image(image, affine, paths[0], np.float32)
    save_image(second, affine, paths[1], np.float32)
    save_image(label, affine, tmp_path / f"{name}_label.nii.gz", np.uint8)
    subject = Subject(name, "train", tuple(paths), tmp_path / f"{name}_label.nii.gz")
    return subject, image, label, nib.load(paths[0]).affine


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_sitk_geometry_matches_simpleitk_nifti_reader(tmp_path: Path, name: str) -> None:
    """RAS (NIfTI) to LPS (ITK): our conversion gives what SimpleITK reads from the same file."""
    subject, image, _, affine = _write_case(tmp_path, name)
    ours, theirs = to_sitk(image, affine), sitk.ReadImage(str(subject.images[0]))
    np.testing.assert_allclose(ours.GetOrigin(), theirs.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(ours.GetSpacing(), theirs.GetSpacing(), rtol=1e-5)
    np.testing.assert_allclose(ours.GetDirection(), theirs.GetDirection(), atol=1e-5)
    assert np.array_equal(sitk.GetArrayFromImage(ours), sitk.GetArrayFromImage(theirs))


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_resampled_label_maps_back_to_the_original_grid(tmp_path: Path, name: str) -> None:
    subject, _, label, affine = _write_case(tmp_path, name)
    record = _preprocess(subject, tmp_path / "pre", TARGET)
    image, pre_label, _ = load_preprocessed(tmp_path / "pre", name)

    assert image.shape == (2, *record["shape"]) and image.dtype == np.float32
    assert pre_label.shape == tuple(record["shape"]) and pre_label.dtype == np.uint8
    assert record["crop_box"] != [[0, n] for n in label.shape]
    np.testing.assert_allclose(voxel_spacing(np.array(record["affine"])), TARGET, rtol=1e-12)
    header = nib.load(tmp_path / "pre" / name / "image_0000.nii.gz").header
    np.testing.assert_allclose(header.get_zooms(), TARGET, rtol=1e-5)
    np.testing.assert_allclose(
        nib.load(tmp_path / "pre" / name / "seg.nii.gz").affine, record["affine"], atol=1e-4
    )
    extent_before = np.array(record["cropped_shape"]) * voxel_spacing(np.array(record["cropped_affine"]))
    assert np.all(np.abs(np.array(record["shape"]) * TARGET - extent_before) <= np.array(TARGET) / 2 + 1e-9)
    grid_centre = (np.array(record["shape"]) - 1) / 2
    cropped_centre = (np.array(record["cropped_shape"]) - 1) / 2
    np.testing.assert_allclose(
        _world(np.array(record["affine"]), grid_centre),
        _world(np.array(record["cropped_affine"]), cropped_centre),
        atol=1e-9,
    )

    voxel = voxel_spacing(affine).min()
    original_com = _centre_of_mass(label, affine)
    assert np.linalg.norm(_centre_of_mass(pre_label, np.array(record["affine"])) - original_com) < voxel

    back, back_affine = to_original(pre_label, record, interpolation="nearest")
    assert back.shape == label.shape and back.dtype == np.uint8
    assert np.array_equal(back_affine, affine)
    assert _dice(back, label) >= 0.9
    assert np.linalg.norm(_centre_of_mass(back, back_affine) - original_com) < voxel


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_resampling_matches_an_independent_interpolation(tmp_path: Path, name: str) -> None:
    """SimpleITK's linear resampling agrees with scipy sampling the original at the same world points."""
    subject, image, _, affine = _write_case(tmp_path, name)
    smooth = ndimage.gaussian_filter(image, 2.0)
    save_image(smooth, affine, subject.images[0], np.float32)
    record = _preprocess(subject, tmp_path / "pre", TARGET, normalization="none")
    pre, _, _ = load_preprocessed(tmp_path / "pre", name)

    index = np.indices(record["shape"]).reshape(3, -1).T
    to_source = np.linalg.inv(affine) @ np.array(record["affine"])
    coords = index @ to_source[:3, :3].T + to_source[:3, 3]
    inside = np.all((coords >= 0) & (coords <= np.array(smooth.shape) - 1), axis=1)
    expected = ndimage.map_coordinates(smooth, coords[inside].T, order=1)
    np.testing.assert_allclose(pre[0].reshape(-1)[inside], expected, atol=1e-2)


@pytest.mark.parametrize("name", sorted(GEOMETRIES))
def test_original_spacing_without_crop_is_identical(tmp_path: Path, name: str) -> None:
    subject, image, label, affine = _write_case(tmp_path, name)
    record = _preprocess(
        subject, tmp_path / "pre", voxel_spacing(affine), normalization="none", crop_nonzero=False
    )
    pre_image, pre_label, _ = load_preprocessed(tmp_path / "pre", name)
    assert np.array_equal(pre_label, label)
    assert np.array_equal(pre_image[0], image)
    back, back_affine = to_original(pre_label, record, interpolation="nearest")
    assert np.array_equal(back, label) and np.array_equal(back_affine, affine)


def test_crop_alone_pastes_back_exactly(tmp_path: Path) -> None:
    subject, _, label, affine = _write_case(tmp_path, "oblique_flipped")
    record = _preprocess(subject, tmp_path / "pre", None)
    _, pre_label, _ = load_preprocessed(tmp_path / "pre", subject.subject)
    assert pre_label.shape == tuple(record["cropped_shape"]) and pre_label.shape != label.shape
    assert np.array_equal(to_original(pre_label, record, "nearest")[0], label)
    # the cropped grid sits where the crop box sits in world space
    start = np.array([lo for lo, _ in record["crop_box"]])
    np.testing.assert_allclose(np.array(record["affine"])[:3, 3], _world(affine, start), atol=1e-9)


def test_probabilities_map_back_with_fill_outside_the_crop(tmp_path: Path) -> None:
    subject, _, label, _ = _write_case(tmp_path, "anisotropic")
    record = _preprocess(subject, tmp_path / "pre", TARGET)
    _, pre_label, _ = load_preprocessed(tmp_path / "pre", subject.subject)
    prob = np.stack([1.0 - pre_label, pre_label]).astype(np.float32)
    back, _ = to_original(prob, record, interpolation="linear", fill=-1.0)
    assert back.shape == (2, *label.shape) and back.dtype == np.float32
    inside = np.zeros(label.shape, dtype=bool)
    inside[tuple(slice(lo, hi) for lo, hi in record["crop_box"])] = True
    assert np.all(back[:, ~inside] == -1.0)
    assert back[:, inside].min() >= 0.0 and back[:, inside].max() <= 1.0
    np.testing.assert_allclose(back[:, inside].sum(axis=0), 1.0, atol=1e-5)
    assert _dice(back[1] >= 0.5, label) >= 0.9
    # an integer map is interpolated in floating point, not rounded to its own type
    from_integers, _ = to_original(pre_label, record, interpolation="linear")
    assert from_integers.dtype == np.float32
    assert np.any((from_integers > 0.05) & (from_integers < 0.95))


def test_zscore_nonzero_statistics(tmp_path: Path) -> None:
    shape, affine = GEOMETRIES["oblique_flipped"]
    rng = np.random.default_rng(1)
    first = np.zeros(shape, dtype=np.float32)
    first[4:30, 5:40, 3:15] = rng.normal(300.0, 40.0, (26, 35, 12))
    second = np.zeros(shape, dtype=np.float32)
    second[8:36, 5:25, 3:15] = rng.normal(-20.0, 3.0, (28, 20, 12))
    union = (first != 0) | (second != 0)  # L-shaped: the crop box [4:36, 5:40, 3:15] holds more

    exact, _, record = preprocess_image([first, second], affine, None, "zscore_nonzero")
    crop = (slice(4, 36), slice(5, 40), slice(3, 15))
    assert record["crop_box"] == [[4, 36], [5, 40], [3, 15]]
    mask = union[crop]
    assert not mask.all()
    stats = record["normalization"]
    for channel, original, mean, std in zip(exact, [first, second], stats["mean"], stats["std"], strict=True):
        assert abs(channel[mask].mean()) < 1e-4 and abs(channel[mask].std() - 1.0) < 1e-4
        assert np.all(channel[~mask] == 0)
        # a channel's own zeros inside the union mask are data: normalised like any value
        np.testing.assert_allclose(channel[mask & (original[crop] == 0)], -mean / std, rtol=1e-5)
    np.testing.assert_allclose(record["normalization"]["mean"][0], first[union].mean(), rtol=1e-5)
    np.testing.assert_allclose(record["normalization"]["std"][1], second[union].std(), rtol=1e-4)

    # resampling keeps the statistics of an image smooth at the voxel scale (white noise would not be)
    field = ndimage.gaussian_filter(rng.standard_normal(shape), 3.0)
    smooth = np.where(first != 0, 300.0 + 40.0 * field / field.std(), 0.0).astype(np.float32)
    resampled, _, record = preprocess_image([smooth], affine, TARGET, "zscore_nonzero", crop_nonzero=False)
    inside = resampled[0] != 0
    assert abs(resampled[0][inside].mean()) < 0.1 and abs(resampled[0][inside].std() - 1.0) < 0.1
    back, _ = to_original(inside.astype(np.uint8), record, "nearest")
    assert _dice(back, smooth != 0) >= 0.95


def test_zscore_whole_volume_and_none(tmp_path: Path) -> None:
    shape, affine = GEOMETRIES["anisotropic"]
    rng = np.random.default_rng(2)
    image = np.zeros(shape, dtype=np.float32)
    image[10:30] = rng.normal(50.0, 10.0, (20, *shape[1:]))
    zscored, _, _ = preprocess_image([image], affine, None, "zscore", crop_nonzero=False)
    assert abs(zscored.mean()) < 1e-4 and abs(zscored.std() - 1.0) < 1e-4
    assert np.all(zscored[0, :10] == zscored[0, 0, 0, 0]) and zscored[0, 0, 0, 0] < 0
    unchanged, _, record = preprocess_image([image], affine, None, "none")
    assert np.array_equal(unchanged[0], image[10:30])
    assert record["normalization"] == {"scheme": "none", "mean": [0.0], "std": [1.0]}


def test_record_round_trips_through_json(tmp_path: Path) -> None:
    subject, _, _, _ = _write_case(tmp_path, "oblique_flipped")
    record = _preprocess(subject, tmp_path / "pre", TARGET)
    image, label, loaded = load_preprocessed(tmp_path / "pre", subject.subject)
    folder = tmp_path / "pre" / "oblique_flipped"
    assert loaded == record == read_json(folder / "record.json")
    assert record["channel_files"] == ["image_0000.nii.gz", "image_0001.nii.gz"]
    assert record["label_file"] == "seg.nii.gz"
    assert sorted(p.name for p in folder.iterdir()) == [
        "image.npy",
        "image_0000.nii.gz",
        "image_0001.nii.gz",
        "record.json",
        "seg.nii.gz",
        "seg.npy",
    ]
    assert record["arrays"] == {"image": "image.npy", "label": "seg.npy"}
    assert record["source_label"] == str(subject.label)
    assert np.array_equal(to_original(label, loaded, "nearest")[0], to_original(label, record, "nearest")[0])


def test_subject_without_label(tmp_path: Path) -> None:
    subject, _, _, _ = _write_case(tmp_path, "anisotropic")
    test_subject = Subject("case", "test", subject.images, None)
    record = _preprocess(test_subject, tmp_path / "pre", TARGET)
    image, label, _ = load_preprocessed(tmp_path / "pre", "case")
    assert label is None and record["label_file"] is None and record["arrays"] is None
    assert not (tmp_path / "pre" / "case" / "seg.nii.gz").exists()
    assert not (tmp_path / "pre" / "case" / "image.npy").exists()  # training reads labelled subjects only
    assert image.shape == (2, *record["shape"])


def test_bad_inputs_raise_one_line_errors(tmp_path: Path) -> None:
    subject, _, label, affine = _write_case(tmp_path, "anisotropic")
    fractional = tmp_path / "fractional.nii.gz"
    save_image(label * 0.5, affine, fractional, np.float32)
    with pytest.raises(PatchworkError, match="fractional.nii.gz: label must hold whole numbers"):
        _preprocess(Subject("s", "train", subject.images, fractional), tmp_path / "pre", TARGET)

    small = tmp_path / "small.nii.gz"
    save_image(label[:-1], affine, small, np.uint8)
    with pytest.raises(PatchworkError, match="small.nii.gz: grid"):
        _preprocess(Subject("s", "train", subject.images, small), tmp_path / "pre", TARGET)

    with pytest.raises(PatchworkError, match="preprocess: normalization='minmax': expected one of"):
        _preprocess(subject, tmp_path / "pre", TARGET, normalization="minmax")
    with pytest.raises(PatchworkError, match=r"preprocess: target_spacing\[1\]=0.0: must be > 0"):
        _preprocess(subject, tmp_path / "pre", (1.0, 0.0, 1.0))
    assert not (tmp_path / "pre" / "s").exists()


def test_training_arrays_are_memory_mapped_copies_of_the_nifti_ones(tmp_path: Path) -> None:
    subject, _, _, _ = _write_case(tmp_path, "oblique_flipped")
    record = _preprocess(subject, tmp_path / "pre", TARGET)
    image, label, loaded = load_preprocessed(tmp_path / "pre", subject.subject)
    mapped_image, mapped_label, mapped = open_preprocessed(tmp_path / "pre", subject.subject)
    assert isinstance(mapped_image, np.memmap) and isinstance(mapped_label, np.memmap)
    assert mapped_image.dtype == np.float32 and mapped_label.dtype == np.uint8
    assert not mapped_image.flags.writeable
    assert np.array_equal(mapped_image, image) and np.array_equal(mapped_label, label)
    assert mapped == loaded == record
    # a folder written before the arrays existed is read from its NIfTI files
    folder = tmp_path / "pre" / subject.subject
    (folder / "image.npy").unlink()
    (folder / "seg.npy").unlink()
    write_json(folder / "record.json", {k: v for k, v in record.items() if k != "arrays"})
    old_image, old_label, _ = open_preprocessed(tmp_path / "pre", subject.subject)
    assert np.array_equal(old_image, image) and np.array_equal(old_label, label)

"""The hemispheric symmetry channel: a one-sided lesion stands out, symmetric anatomy cancels, in world
coordinates whatever the grid's orientation."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from patchwork.data.preprocess import preprocess_image
from patchwork.data.symmetry import symmetry_channels


def _rotation_z(degrees: float) -> np.ndarray:
    a = np.deg2rad(degrees)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def _head(affine: np.ndarray, shape=(40, 44, 36), tilt_deg: float = 0.0, plane_x: float = 3.0):
    """A head symmetric about the (tilted) plane through ``plane_x``: a bright ellipsoid with two dark
    'ventricles' placed mirror-symmetrically, and one dark 'lesion' on the right only. Returns the image
    and the masks of the lesion, of its mirror region and of the ventricles, on the grid of ``affine``."""
    index = np.indices(shape).reshape(3, -1)
    world = (affine[:3, :3] @ index + affine[:3, 3:4]).T
    local = (world - [plane_x, 0, 0]) @ _rotation_z(tilt_deg)  # head frame: x is left-right
    x, y, z = local.T

    def ball(cx, cy, cz, r):
        return ((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= r**2).reshape(shape)

    head = ((x / 45) ** 2 + (y / 55) ** 2 + (z / 40) ** 2 <= 1).reshape(shape)
    ventricles = ball(-12, 5, 0, 7) | ball(12, 5, 0, 7)
    lesion, mirror = ball(25, -15, 10, 7), ball(-25, -15, 10, 7)
    image = np.where(head, 1.0 + 0.2 * np.sin(y / 6).reshape(shape), 0.0)
    image[ventricles | lesion] = 0.3
    image = np.where(head, ndimage.gaussian_filter(image, 1.0), 0.0)  # partial volume, as in a scan
    return image.astype(np.float32), lesion, mirror, ventricles


def _affine(spacing: float, flip: bool = False, rotate_deg: float = 0.0) -> np.ndarray:
    affine = np.eye(4)
    affine[:3, :3] = _rotation_z(rotate_deg) @ np.diag([-spacing if flip else spacing, spacing, spacing])
    affine[:3, 3] = -affine[:3, :3] @ (np.array([40, 44, 36]) - 1) / 2
    return affine


@pytest.mark.parametrize(
    ("flip", "rotate_deg", "tilt_deg"),
    [(False, 0.0, 0.0), (True, 0.0, 0.0), (False, 12.0, 0.0), (True, 0.0, 8.0)],
)
def test_a_one_sided_lesion_stands_out_and_symmetric_anatomy_cancels(flip, rotate_deg, tilt_deg):
    """Flipped and oblique grids, and a head tilted in its grid (its mid-sagittal plane no world plane):
    the difference is strongly negative on the lesion, positive at its mirror image, small elsewhere."""
    affine = _affine(3.0, flip, rotate_deg)
    image, lesion, mirror, ventricles = _head(affine, tilt_deg=tilt_deg)
    (difference,), info = symmetry_channels([image], affine)
    assert difference[lesion].mean() < -0.2
    assert difference[mirror].mean() > 0.2
    assert abs(difference[ventricles].mean()) < 0.05
    assert np.abs(difference[image > 0]).mean() < 0.15
    assert info["plane_x_mm"] is not None and len(info["rigid"]) == 6
    assert np.all(difference[image == 0] == 0)


def test_the_channel_is_reproducible_bit_for_bit():
    affine = _affine(3.0, rotate_deg=5.0)
    image = _head(affine, tilt_deg=4.0)[0]
    first, _ = symmetry_channels([image], affine)
    again, _ = symmetry_channels([image], affine)
    np.testing.assert_array_equal(first[0], again[0])


def test_preprocessing_appends_one_symmetry_channel_per_image_channel():
    affine = _affine(2.0)
    image = _head(affine)[0]
    out, _, record = preprocess_image([image, 2 * image], affine, (3.0, 3.0, 3.0), symmetry=True)
    plain, _, plain_record = preprocess_image([image, 2 * image], affine, (3.0, 3.0, 3.0))
    assert out.shape[0] == 4 and plain.shape[0] == 2
    np.testing.assert_array_equal(out[:2], plain)
    np.testing.assert_allclose(out[2:], symmetry_channels(list(plain), np.asarray(record["affine"]))[0])
    assert "symmetry" in record and "symmetry" not in plain_record


def test_the_channel_does_not_depend_on_the_machine_s_thread_count():
    """A job on a 1-CPU cluster slot and one on a workstation preprocess the same subject alike."""
    affine = _affine(3.0, rotate_deg=7.0)
    image = _head(affine, tilt_deg=6.0)[0]
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    results = []
    try:
        for count in (1, 3):
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(count)
            results.append(symmetry_channels([image], affine))
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    np.testing.assert_array_equal(results[0][0][0], results[1][0][0])
    assert results[0][1]["rigid"] == results[1][1]["rigid"]

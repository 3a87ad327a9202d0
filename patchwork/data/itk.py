"""NumPy arrays with NIfTI affines as SimpleITK images: the geometry conversion (RAS to ITK's LPS) that
preprocessing and the symmetry channel share."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def voxel_spacing(affine: np.ndarray) -> np.ndarray:
    """Voxel size in mm along each array axis: the column norms of the affine's 3x3 part."""
    return np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)


def itk_geometry(affine: np.ndarray) -> tuple[list[float], list[float], list[float]]:
    """Return ITK ``(origin, spacing, direction)`` (LPS, row-major direction) of a NIfTI affine."""
    lps = _RAS_TO_LPS @ np.asarray(affine, dtype=np.float64)
    spacing = voxel_spacing(affine)
    direction = lps[:3, :3] / spacing
    return lps[:3, 3].tolist(), spacing.tolist(), direction.ravel().tolist()


def to_sitk(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A SimpleITK image of the ``[X, Y, Z]`` array with the geometry of the NIfTI ``affine``.

    The same image SimpleITK's own NIfTI reader would give for the file. Booleans become uint8
    and float16 becomes float32, the nearest types SimpleITK holds.
    """
    array = np.asarray(array)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    origin, spacing, direction = itk_geometry(affine)
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    return image

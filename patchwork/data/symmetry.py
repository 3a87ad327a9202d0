"""Hemispheric symmetry channels: each image minus its mirror image across the mid-sagittal plane.

A stroke lesion lies in one hemisphere, while the structures a network most easily mistakes for it, the
ventricles and sulci (as dark as a chronic lesion on T1, as dark as its surround on FLAIR), are close to
mirror-symmetric. The difference ``D(p) = I(p) - I(m(p))`` of an image ``I`` and its mirror, where ``m``
maps a point to its mirror point in the other hemisphere, is near 0 on symmetric anatomy and keeps the
lesion's contrast where a lesion is (with its sign flipped at the mirror point, the "ghost" a network learns
to tell apart by the sign and by ``I`` itself).

The mirror map is found in world coordinates, so flipped, oblique and non-MNI grids are handled alike:

1. ``R``: the reflection ``x -> 2 c - x`` of the world's left-right axis (NIfTI RAS x; ITK's LPS x is its
   negative, so the same matrix ``diag(-1, 1, 1)``) about the plane through ``c``, the x-coordinate of the
   intensity centroid of the head (non-zero voxels);
2. ``E``: a rigid transform (rotation + translation, 6 parameters) that registers the reflected image to the
   image (SimpleITK, mean squares of the normalised intensities inside the head, two resolution levels),
   absorbing head tilt and an off-centre midline: the mid-sagittal plane of a tilted head is not a world
   plane, but ``R E`` maps a point to its mirror point whatever the tilt;
3. ``m = R E``: one map per subject from the first channel, applied to every channel (linear interpolation,
   0 outside the head).

Everything runs single-threaded, with ITK's regular metric sampling jittered from a fixed seed, so the same
image gives the same channel bit for bit. On an MNI-registered cohort (ATLAS R2.0) ``E`` stays close to the
identity.

Example::

    differences, info = symmetry_channels(channels, affine)  # channels: list of [X, Y, Z] arrays
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import SimpleITK as sitk

from patchwork.data.itk import to_sitk

log = logging.getLogger(__name__)

_SHRINK = (2, 1)  # resolution levels of the registration (voxel shrink factors)
_SMOOTH_VOXELS = (1.0, 0.0)  # Gaussian smoothing per level (voxels)
_ITERATIONS = 60  # optimiser iterations per level
_SAMPLING = 0.5  # fraction of the head's voxels the metric samples (on a regular grid)
_SAMPLING_SEED = 1  # ITK jitters its regular sampling grid at random: a fixed seed (not the clock)


def _itk_image(array: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """``array`` as a float32 SimpleITK image on the grid of the NIfTI ``affine``."""
    return to_sitk(np.asarray(array, dtype=np.float32), affine)


def _resample(image: sitk.Image, transform: sitk.Transform) -> sitk.Image:
    """``image`` sampled at ``transform(p)`` for every point ``p`` of its own grid (linear, 0 outside)."""
    resampler = sitk.ResampleImageFilter()
    resampler.SetReferenceImage(image)
    resampler.SetTransform(transform)
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetDefaultPixelValue(0.0)
    resampler.SetNumberOfThreads(1)
    return resampler.Execute(image)


def _array(image: sitk.Image) -> np.ndarray:
    """The ``[X, Y, Z]`` array of a SimpleITK image."""
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def head_centroid(head: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World (RAS, mm) centroid of the voxels of the boolean mask ``head``."""
    index = np.argwhere(head).mean(axis=0)
    return np.asarray(affine, dtype=np.float64)[:3, :3] @ index + np.asarray(affine)[:3, 3]


def reflection(centroid_ras: np.ndarray) -> sitk.AffineTransform:
    """The world reflection ``x -> 2 c - x`` about the sagittal plane through ``centroid_ras`` (in ITK's LPS
    frame, where it has the same matrix)."""
    transform = sitk.AffineTransform(3)
    transform.SetMatrix((-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    transform.SetCenter([float(v) for v in np.diag([-1.0, -1.0, 1.0]) @ centroid_ras])
    return transform


def register_mirror(
    fixed: sitk.Image, mirrored: sitk.Image, mask: sitk.Image, centre: list[float]
) -> sitk.Euler3DTransform:
    """The rigid transform ``E`` that best aligns the ``mirrored`` image to ``fixed`` inside ``mask``."""
    transform = sitk.Euler3DTransform()
    transform.SetCenter(centre)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMeanSquares()
    method.SetMetricFixedMask(mask)
    method.SetMetricSamplingStrategy(method.REGULAR)
    method.SetMetricSamplingPercentage(_SAMPLING, _SAMPLING_SEED)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=1e-3, numberOfIterations=_ITERATIONS, gradientMagnitudeTolerance=1e-6
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(_SHRINK))
    method.SetSmoothingSigmasPerLevel(list(_SMOOTH_VOXELS))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(transform, inPlace=True)
    method.SetNumberOfThreads(1)
    # Parts of ITK's registration (the optimiser's scale estimation) follow the global thread count, and
    # their sums change in the last bits with it: one thread here, whatever the machine or the job has.
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    try:
        method.Execute(fixed, mirrored)
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    return transform


def symmetry_channels(
    channels: Sequence[np.ndarray], affine: np.ndarray
) -> tuple[list[np.ndarray], dict[str, Any]]:
    """``D_c = I_c - I_c(m(p))`` for every channel ``I_c`` (``[X, Y, Z]`` arrays on the grid of ``affine``,
    0 outside the head), and what was found: the plane's x (mm, RAS) and the rigid correction ``E`` (Euler
    angles in radians, translation in mm, LPS).

    ``D`` is 0 where either ``p`` or its mirror point lies outside the head (non-zero voxels of any channel).
    """
    affine = np.asarray(affine, dtype=np.float64)
    head = np.any(np.stack([np.asarray(c) != 0 for c in channels]), axis=0)
    if head.sum() < 8:
        return [np.zeros_like(c, dtype=np.float32) for c in channels], {"plane_x_mm": None, "rigid": None}
    centroid = head_centroid(head, affine)
    fixed = _itk_image(channels[0], affine)
    mask = sitk.Cast(_itk_image(head, affine), sitk.sitkUInt8)
    reflect = reflection(centroid)
    rigid = register_mirror(fixed, _resample(fixed, reflect), mask, list(reflect.GetCenter()))
    mirror_map = sitk.CompositeTransform([reflect, rigid])  # applies ``rigid`` first, then the reflection
    inside = _array(_resample(_itk_image(head, affine), mirror_map)) > 0.5
    both = head & inside
    differences = []
    for channel in channels:
        image = np.asarray(channel, dtype=np.float32)
        mirror = _array(_resample(_itk_image(image, affine), mirror_map))
        differences.append(np.where(both, image - mirror, np.float32(0)).astype(np.float32))
    info = {
        "plane_x_mm": float(centroid[0]),
        "rigid": [float(v) for v in rigid.GetParameters()],
    }
    log.debug("symmetry: plane x %.1f mm, rigid %s", info["plane_x_mm"], info["rigid"])
    return differences, info

"""Anti-aliasing at coarse levels (smoothfac_data, smoothfac_label)."""

from __future__ import annotations

import pytest
import torch
from dnp_images import voxel_indices

from patchwork.models.dnp import CropGenerator

SIZE = {2: 64, 3: 32}


def coarse_level(ndim: int, **kwargs: object) -> CropGenerator:
    """Level 0 sees the whole image with voxels 4 image voxels long; level 1 is at full resolution."""
    size = SIZE[ndim]
    scheme = {"patch_size": (size // 4,) * ndim, "fov_rel": 1.0, "destvox_rel": 1.0}
    return CropGenerator(depth=2, ndim=ndim, scheme=scheme, system="matrix", **kwargs)


def test_gaussian_removes_checkerboard_aliasing(ndim: int) -> None:
    shape = (SIZE[ndim],) * ndim
    checker = (voxel_indices(shape).sum(-1) % 2 * 2 - 1).float()[None]
    plain = coarse_level(ndim).sample(checker, generator=0).levels[0].inputs
    smoothed = coarse_level(ndim, smoothfac_data=1.0).sample(checker, generator=0).levels[0].inputs
    assert plain.abs().min() == 1.0
    assert smoothed.abs().max() < 0.05
    fine = coarse_level(ndim, smoothfac_data=1.0).sample(checker, generator=0).levels[1].inputs
    assert fine.abs().min() == 1.0


def test_max_keeps_a_single_bright_voxel_visible(ndim: int) -> None:
    shape = (SIZE[ndim],) * ndim
    image = torch.zeros(1, *shape)
    image[(0,) + (SIZE[ndim] // 2,) * ndim] = 10.0
    plain = coarse_level(ndim).sample(image, image[0] > 0, generator=0).levels[0]
    assert plain.inputs.max() == 0.0 and plain.labels.max() == 0.0
    kept = coarse_level(ndim, smoothfac_data="max", smoothfac_label="max").sample(
        image, image[0] > 0, generator=0
    )
    assert kept.levels[0].inputs.max() == 10.0 and kept.levels[0].labels.max() == 1.0
    assert (kept.levels[0].inputs > 0).sum() == 1
    boxcar = coarse_level(ndim, smoothfac_data="boxcar").sample(image, generator=0).levels[0].inputs
    assert 0.0 < boxcar.max() < 10.0 / 4**ndim


@pytest.mark.parametrize("ndim", [2, 3])
def test_mixture_stacks_boxcar_max_and_min(ndim: int) -> None:
    image = torch.randn(2, *(SIZE[ndim],) * ndim)
    patches = coarse_level(ndim, smoothfac_data="mixture").sample(image, generator=0)
    for level in patches.levels:
        assert level.inputs.shape[1] == 6
    boxcar, high, low = patches.levels[0].inputs[0].split(2)
    assert (low <= boxcar + 1e-6).all() and (boxcar <= high + 1e-6).all()
    assert torch.equal(patches.levels[1].inputs[0, :2], patches.levels[1].inputs[0, 2:4])


@pytest.mark.parametrize(
    ("smoothing", "interp"), [(1.0, "NN"), (1.0, "lin"), ("boxcar", "lin"), ("max", "NN")]
)
def test_dont_care_labels_do_not_spread(smoothing: float | str, interp: str) -> None:
    """One NaN (don't care) voxel in a 20x20 label image stays a local matter after smoothing and
    interpolation: the coarse labels are the normalised filter of the cared-for voxels."""
    labels = torch.zeros(20, 20)
    labels[5:12, 5:12] = 1.0
    labels[8, 8] = float("nan")
    scheme = {"patch_size": (5, 5), "fov_rel": 1.0, "destvox_rel": 1.0}
    gen = CropGenerator(
        depth=2, ndim=2, scheme=scheme, system="matrix", smoothfac_label=smoothing, interp_type=interp
    )
    patches = gen.sample(
        torch.zeros(1, 20, 20), labels[None], num_patches=8, augment={"dphi": 0.3}, generator=0
    )
    coarse = patches.levels[0].labels
    assert torch.isnan(coarse).sum() <= coarse.numel() // 25
    finite = coarse[torch.isfinite(coarse)]
    assert (
        finite.min() >= 0.0 and finite.max() <= 1.0 + 1e-6 and finite.max() > 0.2
    )  # the square stays visible
    fine = patches.levels[1].labels
    assert torch.isnan(fine).sum() <= 2 * len(fine)  # the one voxel, read by nearby patch voxels only

"""Augmentation: rotation keeps volumes, flip mirrors, dscale scales the field of view, levels share draws."""

from __future__ import annotations

import math

import pytest
import torch
from dnp_images import ball

from patchwork.errors import PatchworkError
from patchwork.models.dnp import Augment, CropGenerator
from patchwork.models.dnp.augment import draw, rotation_angle, rotations


def full_view(size: int, ndim: int) -> CropGenerator:
    """One level covering a ``size``-cube image at its resolution (matrix system, NN)."""
    return CropGenerator(
        depth=1, ndim=ndim, scheme={"patch_size": (size,) * ndim, "fov_rel": 1.0}, system="matrix"
    )


def test_rotation_keeps_the_volume_of_a_ball(ndim: int) -> None:
    size, radius = (40, 14.0) if ndim == 2 else (32, 9.0)
    labels = ball((size,) * ndim, radius)
    gen = full_view(size, ndim)
    patches = gen.sample(
        torch.zeros(1, *labels.shape), labels, num_patches=6, augment={"dphi": 0.6}, generator=4
    )
    linear = patches.levels[0].matrices[:, :ndim, :ndim]
    angles = torch.arccos(((linear.diagonal(dim1=1, dim2=2).sum(-1) - (ndim - 2)) / 2).clamp(-1, 1))
    assert (angles > 0.05).sum() >= 4
    assert torch.allclose(
        linear @ linear.transpose(1, 2), torch.eye(ndim, dtype=torch.float64).expand_as(linear)
    )
    volumes = patches.levels[0].labels.flatten(1).sum(1)
    assert ((volumes / labels.sum() - 1).abs() < 0.02).all()


def test_flip_mirrors(ndim: int) -> None:
    size = 12
    image = torch.randn(1, *(size,) * ndim)
    gen = full_view(size, ndim)
    patches = gen.sample(image, num_patches=16, augment={"flip": (1,) + (0,) * (ndim - 1)}, generator=0)
    mirrored = torch.flip(image, dims=(1,))
    flipped = [torch.equal(p, mirrored) for p in patches.levels[0].inputs]
    kept = [torch.equal(p, image) for p in patches.levels[0].inputs]
    assert all(f != k for f, k in zip(flipped, kept, strict=True))
    assert 0 < sum(flipped) < 16


def test_dscale_scales_the_field_of_view_by_the_drawn_factor() -> None:
    size = 36
    labels = ball((size,) * 3, 7.0)
    gen = CropGenerator(
        depth=1,
        ndim=3,
        scheme={"patch_size": (size,) * 3, "fov_rel": 1.0},
        system="matrix",
        interp_type="lin",
    )
    patches = gen.sample(
        torch.zeros(1, size, size, size), labels, num_patches=12, augment={"dscale": 0.2}, generator=1
    )
    factors = patches.levels[0].matrices[:, :3, :3].diagonal(dim1=1, dim2=2)
    assert torch.allclose(patches.levels[0].matrices[:, :3, :3], torch.diag_embed(factors))
    assert (factors - 1).abs().amax() > 0.1
    in_patch = patches.levels[0].labels.flatten(1).sum(1)
    assert ((in_patch * factors.prod(dim=1) / labels.sum() - 1).abs() < 0.03).all()
    draws = draw(Augment(dscale=0.2), 4000, 3, torch.Generator().manual_seed(0)).diagonal(dim1=1, dim2=2)
    assert abs((draws.log() / math.log(1.2)).std() - 1) < 0.05


def test_augmentation_draws_repeat_with_the_seed() -> None:
    augment = Augment(dphi=(0.1, 0.2, 0.3), flip=(1, 1, 0), dscale=(0.1, 0.0, 0.1))
    augment.check(3)
    first = draw(augment, 50, 3, torch.Generator().manual_seed(3))
    again = draw(augment, 50, 3, torch.Generator().manual_seed(3))
    other = draw(augment, 50, 3, torch.Generator().manual_seed(4))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert (torch.linalg.det(first) < 0).any()


@pytest.mark.parametrize("independent", [False, True])
def test_levels_share_or_redraw_the_transformation(ndim: int, independent: bool) -> None:
    gen = CropGenerator(
        depth=3, ndim=ndim, scheme={"patch_size": (4,) * ndim, "fov_rel": 0.8, "destvox_rel": 0.5}
    )
    volume = gen.prepare(torch.randn(1, *(24,) * ndim))
    patches = gen.sample(
        volume,
        num_patches=4,
        branch_factor=2,
        augment={"dphi": 0.5},
        independent_augmentation=independent,
        generator=0,
    )
    for n in (1, 2):
        level, above = patches.levels[n], patches.levels[n - 1]
        own = level.matrices[:, :ndim, :ndim] / volume.voxel_sizes[n]
        parent = above.matrices[level.parent, :ndim, :ndim] / volume.voxel_sizes[n - 1]
        assert torch.allclose(own, parent) != independent


def uniform_angle_cdf(angle: torch.Tensor) -> torch.Tensor:
    """CDF of the rotation angle of a uniform rotation in SO(3): ``(t - sin t) / pi``."""
    return (angle - angle.sin()) / math.pi


def test_rotation_angles_follow_dphi_up_to_uniform() -> None:
    generator = torch.Generator().manual_seed(0)
    small = rotation_angle(rotations(0.2, 4000, 3, generator))
    # |v| of v ~ N(0, 0.2^2 I) is 0.2 times a chi variable with 3 degrees of freedom (median 1.5382)
    assert abs(float(small.median()) / (0.2 * 1.5382) - 1) < 0.05
    wide = rotation_angle(rotations(20.0, 4000, 3, generator)).sort().values
    gap = (uniform_angle_cdf(wide) - torch.arange(1, 4001, dtype=torch.float64) / 4000).abs().max()
    assert gap < 0.03  # Kolmogorov-Smirnov distance to the uniform rotation's angle law
    medians = [float(rotation_angle(rotations(w, 2000, 3, generator)).median()) for w in (0.2, 0.5, 1.0, 2.0)]
    assert medians == sorted(medians)


def test_dscale_stretches_along_a_drawn_frame() -> None:
    """``A = R_1 Sigma R_2``: with ``dphi_frame`` alone the map is ``Q D Q^T``, symmetric positive definite,
    stretching along axes that are not the patch's."""
    augment = Augment(dscale=0.3, dphi_frame=10.0)
    augment.check(3)
    linear = draw(augment, 200, 3, torch.Generator().manual_seed(1))
    torch.testing.assert_close(linear, linear.transpose(1, 2))
    assert (torch.linalg.eigvalsh(linear) > 0).all()
    off_diagonal = linear - torch.diag_embed(linear.diagonal(dim1=1, dim2=2))
    assert off_diagonal.abs().amax(dim=(1, 2)).median() > 0.05
    plain = draw(Augment(dscale=0.3), 200, 3, torch.Generator().manual_seed(1))
    assert torch.equal(plain, torch.diag_embed(plain.diagonal(dim1=1, dim2=2)))


def test_per_level_augmentation() -> None:
    gen = CropGenerator(depth=2, ndim=2, scheme={"patch_size": (4, 4), "fov_rel": 0.8, "destvox_rel": 0.5})
    patches = gen.sample(
        torch.randn(1, 20, 20),
        num_patches=5,
        augment=[None, {"dphi": 0.5}],
        independent_augmentation=True,
        generator=0,
    )
    coarse = patches.levels[0].matrices[:, :2, :2]
    assert torch.allclose(coarse, torch.diag_embed(coarse.diagonal(dim1=1, dim2=2)))
    fine = patches.levels[1].matrices[:, :2, :2]
    assert not torch.allclose(fine, torch.diag_embed(fine.diagonal(dim1=1, dim2=2)))
    with pytest.raises(PatchworkError, match="per level need independent_augmentation"):
        gen.sample(torch.randn(1, 20, 20), augment=[None, {"dphi": 0.5}], generator=0)
    shared = gen.sample(torch.randn(1, 20, 20), augment=[{"dphi": 0.5}] * 2, generator=0)
    assert len(shared.levels) == 2
    with pytest.raises(PatchworkError, match="3 settings for depth 2"):
        gen.sample(torch.randn(1, 20, 20), augment=[None, None, None])
    with pytest.raises(PatchworkError, match="flip must hold 0 or 1"):
        gen.sample(torch.randn(1, 20, 20), augment={"flip": (2, 0)})

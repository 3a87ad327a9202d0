"""Patch geometry: identity crop, nesting, world vs matrix system, level sizes, settings."""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest
import torch
from dnp_images import smooth, voxel_indices

from patchwork.errors import PatchworkError
from patchwork.models.dnp import CropGenerator, Scheme
from patchwork.models.dnp.geometry import apply, patch_matrix, resize_matrix


def full_image_generator(shape: tuple[int, ...], **kwargs: object) -> CropGenerator:
    """One level whose patch is the whole image, in the matrix system."""
    scheme = {"patch_size": shape, "fov_rel": 1.0}
    return CropGenerator(depth=1, ndim=len(shape), scheme=scheme, system="matrix", **kwargs)


def test_identity_crop_and_scatter_are_exact(shape: tuple[int, ...]) -> None:
    image = torch.randn(2, *shape)
    gen = full_image_generator(shape)
    patches = gen.sample(image, num_patches=3, generator=0)
    level = patches.levels[0]
    assert torch.equal(level.matrices[0], torch.eye(len(shape) + 1, dtype=torch.float64))
    assert torch.equal(level.inputs, image.expand(3, *image.shape))
    for kind in ("NN", "lin"):
        total, weight = gen.scatter(level.inputs, level.matrices, patches.grid, scatter_type=kind)
        assert torch.equal(weight, torch.full(shape, 3.0))
        assert torch.allclose(total / weight, image, atol=1e-6)
    total, weight = gen.scatter(level.inputs[:1], level.matrices[:1], patches.grid)
    assert torch.equal(total / weight, image)


def test_linear_identity_crop_is_close(shape: tuple[int, ...]) -> None:
    image = torch.randn(1, *shape)
    patches = full_image_generator(shape, interp_type="lin").sample(image, generator=0)
    assert torch.allclose(patches.levels[0].inputs[0], image, atol=1e-5)


def corners(shape: tuple[int, ...]) -> torch.Tensor:
    """The ``2^d`` corners of a patch box in its voxel coordinates, ``[2^d, d]``."""
    return torch.tensor(list(itertools.product(*[(-0.5, n - 0.5) for n in shape])), dtype=torch.float64)


@pytest.mark.parametrize("independent", [False, True])
def test_children_nest_in_parents(ndim: int, shape: tuple[int, ...], independent: bool) -> None:
    """Snapped children lie inside their parents. The scheme leaves room for any rotation (a child whose
    rotated box is wider than its parent along a parent axis could only be centred)."""
    gen = CropGenerator(
        depth=3, ndim=ndim, scheme={"patch_size": (6,) * ndim, "fov_rel": 0.4, "destvox_rel": 0.1}
    )
    affine = torch.eye(ndim + 1, dtype=torch.float64)
    affine[0, 0], affine[1, 1], affine[0, ndim] = 1.5, -0.8, 7.0
    patches = gen.sample(
        torch.randn(1, *shape),
        affine=affine,
        num_patches=5,
        branch_factor=3,
        augment={"dphi": 0.3, "dscale": 0.05},
        independent_augmentation=independent,
        generator=3,
    )
    parent_shape = patches.grid.shape
    for n, level in enumerate(patches.levels):
        size = level.inputs.shape[2:]
        assert len(level) == 5 * 3**n
        box = corners(tuple(size))
        in_parent = torch.stack([apply(r.expand(len(box), -1, -1), box) for r in level.relative])
        upper = torch.tensor(parent_shape, dtype=torch.float64) - 0.5
        assert (in_parent >= -0.5 - 1e-6).all() and (in_parent <= upper + 1e-6).all()
        if n > 0:
            above = patches.levels[n - 1].matrices[level.parent]
            assert torch.allclose(above @ level.relative, level.matrices, atol=1e-9)
        else:
            assert (level.parent == -1).all()
            assert torch.allclose(patches.grid.matrix @ level.relative, level.matrices, atol=1e-9)
        parent_shape = tuple(size)


def test_without_snapper_only_centres_are_inside() -> None:
    gen = CropGenerator(
        depth=2, ndim=2, scheme={"patch_size": (8, 8), "fov_rel": 0.9, "destvox_rel": 1.0}, snapper=(1, 0)
    )
    patches = gen.sample(torch.randn(1, 30, 30), num_patches=40, branch_factor=5, generator=0)
    level = patches.levels[1]
    centre = torch.tensor([3.5, 3.5], dtype=torch.float64).expand(len(level), -1)
    in_parent = apply(level.relative, centre)
    size = patches.levels[0].inputs.shape[-1]
    assert (in_parent >= -0.5).all() and (in_parent <= size - 0.5).all()
    outside = [apply(level.relative, c.expand(len(level), -1)) for c in corners((8, 8))]
    assert any(((c < -0.5) | (c > size - 0.5)).any() for c in outside)


def two_copies(ndim: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The same smooth anatomy stored twice: 1 mm voxels, and 2 mm voxels with the second axis flipped."""
    copies = []
    for voxel, flip in ((1.0, False), (2.0, True)):
        shape = tuple(int(40 / voxel) if k == 0 else 40 for k in range(ndim))
        affine = torch.eye(ndim + 1, dtype=torch.float64)
        affine[0, 0] = voxel
        affine[0, ndim] = -20.0 + voxel / 2
        affine[1, 1] = -1.0 if flip else 1.0
        affine[1, ndim] = 19.5 if flip else -19.5
        affine[2:ndim, ndim] = -19.5
        world = apply(
            affine[None].expand(int(np.prod(shape)), -1, -1), voxel_indices(shape).reshape(-1, ndim)
        )
        copies.append((smooth(world).reshape(1, *shape), affine))
    return copies


def test_world_system_gives_the_same_anatomy_for_both_copies(ndim: int) -> None:
    scheme = {"patch_size": (8,) * ndim, "fov_mm": 16.0}
    crops = {}
    for system in ("world", "matrix"):
        gen = CropGenerator(depth=1, ndim=ndim, scheme=scheme, system=system, interp_type="lin")
        outs = []
        for data, affine in two_copies(ndim):
            volume = gen.prepare(data, affine=affine)
            voxel = volume.voxel_sizes[0]
            centre = volume.grid.matrix[:ndim, :ndim].new_tensor([3.3, -2.1, 1.7][:ndim])
            if system == "matrix":
                centre = apply(torch.linalg.inv(affine)[None], centre[None])[0]
            matrix = patch_matrix(centre[None], torch.diag(voxel)[None], (8,) * ndim)
            outs.append(gen.crop_patches(volume, 0, matrix)[0][0, 0])
        crops[system] = outs
    world_a, world_b = crops["world"]
    assert (world_a - world_b).abs().max() < 0.06
    matrix_a, matrix_b = crops["matrix"]
    assert (matrix_a - matrix_b).abs().mean() > 0.2


def test_world_fov_rel_uses_the_world_box() -> None:
    (a, affine_a), (b, affine_b) = two_copies(3)
    gen = CropGenerator(
        depth=3, ndim=3, scheme={"patch_size": (8, 8, 8), "fov_rel": 0.5, "destvox_rel": 1.0}, system="world"
    )
    sizes_a, sizes_b = (
        gen.prepare(a, affine=affine_a).voxel_sizes,
        gen.prepare(b, affine=affine_b).voxel_sizes,
    )
    assert torch.allclose(sizes_a[0], sizes_b[0])
    assert torch.allclose(sizes_a[0], torch.full((3,), 20.0 / 8, dtype=torch.float64))
    assert torch.allclose(sizes_b[-1], torch.tensor([2.0, 1.0, 1.0], dtype=torch.float64))


def test_level_sizes_interpolate_exponentially() -> None:
    gen = CropGenerator(
        depth=3,
        ndim=3,
        scheme={"patch_size": (10, 10, 10), "fov_mm": (160.0, 160.0, 80.0), "destvox_mm": 1.0},
    )
    volume = gen.prepare(torch.zeros(1, 4, 4, 4), affine=torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0])))
    fovs = torch.stack([h * 10 for h in volume.voxel_sizes])
    assert torch.allclose(fovs[0], torch.tensor([160.0, 160.0, 80.0], dtype=torch.float64))
    assert torch.allclose(fovs[-1], torch.full((3,), 10.0, dtype=torch.float64))
    assert torch.allclose(fovs[1], (fovs[0] * fovs[2]).sqrt())
    matrix_gen = CropGenerator(
        depth=1, ndim=3, scheme={"patch_size": (10, 10, 10), "fov_mm": 40.0}, system="matrix"
    )
    matrix_volume = matrix_gen.prepare(
        torch.zeros(1, 4, 4, 4), affine=torch.diag(torch.tensor([2.0, 4.0, 1.0, 1.0]))
    )
    assert torch.allclose(matrix_volume.voxel_sizes[0], torch.tensor([2.0, 1.0, 4.0], dtype=torch.float64))


def test_out_patch_size_covers_the_same_box() -> None:
    gen = CropGenerator(
        depth=2,
        ndim=2,
        scheme={"patch_size": (8, 8), "out_patch_size": (4, 4), "fov_rel": 0.8, "destvox_rel": 1.0},
    )
    labels = torch.zeros(1, 20, 20)
    patches = gen.sample(torch.randn(1, 20, 20), labels, num_patches=3, augment={"dphi": 0.5}, generator=0)
    level = patches.levels[1]
    assert level.labels.shape == (3, 1, 4, 4)
    box, out_box = corners((8, 8)), corners((4, 4))
    for matrix, out in zip(level.matrices, level.out_matrices, strict=True):
        assert torch.allclose(apply(matrix.expand(4, -1, -1), box), apply(out.expand(4, -1, -1), out_box))
    assert torch.allclose(resize_matrix(level.matrices, (8, 8), (8, 8)), level.matrices)


def test_nibabel_input_brings_its_affine_and_channels() -> None:
    data = np.random.default_rng(0).normal(size=(12, 10, 8, 2)).astype(np.float32)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    gen = CropGenerator(depth=1, ndim=3, scheme={"patch_size": (12, 10, 8), "fov_rel": 1.0})
    patches = gen.sample(nib.Nifti1Image(data, affine), generator=0)
    assert torch.equal(patches.grid.affine, torch.as_tensor(affine))
    assert torch.equal(patches.levels[0].inputs[0], torch.from_numpy(np.moveaxis(data, -1, 0)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"scheme": {"patch_size": (8, 8), "fov_rel": 0.5, "fov_mm": 3.0}}, "exactly one of fov_mm"),
        ({"scheme": {"patch_size": (8, 8, 8), "fov_rel": 0.5}}, "2 entries per level"),
        ({"scheme": {"patch_size": (8, 8), "fov_rel": 0.5, "destvox_rel": 1.0}}, "omit destvox"),
        ({"scheme": {"patch_size": (8, 8), "fov_rel": 0.5, "size": 1}}, "unknown key"),
        ({"system": "voxel"}, "system='voxel'"),
        ({"interp_type": "cubic"}, "interp_type='cubic'"),
        ({"smoothfac_data": "median"}, "smoothfac_data='median': expected number or one of boxcar"),
        ({"normalize_input": "z"}, "normalize_input='z'"),
        ({"snapper": (1, 1)}, "snapper needs 1 entries"),
        ({"categorial_label": [1, 1]}, "distinct ints"),
    ],
)
def test_bad_settings_are_rejected(kwargs: dict, message: str) -> None:
    settings = {"depth": 1, "ndim": 2, "scheme": {"patch_size": (8, 8), "fov_rel": 0.5}} | kwargs
    with pytest.raises(PatchworkError, match=message):
        CropGenerator(**settings)


def test_bad_sampling_arguments_are_rejected() -> None:
    gen = CropGenerator(depth=1, ndim=2, scheme=Scheme(patch_size=(4, 4), fov_rel=0.5))
    image = torch.zeros(1, 8, 8)
    with pytest.raises(PatchworkError, match="branch_factor applies"):
        gen.sample(image, generate_type="tree", branch_factor=2)
    with pytest.raises(PatchworkError, match="balance needs labels"):
        gen.sample(image, balance={"ratio": 0.5})
    with pytest.raises(PatchworkError, match="unknown key"):
        gen.sample(image, augment={"rotate": 1.0})
    with pytest.raises(PatchworkError, match="spatial shape"):
        gen.sample(image, torch.zeros(1, 8, 7))

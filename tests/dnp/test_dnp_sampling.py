"""Patch placement: tree and random coverage, balance, reproducibility."""

from __future__ import annotations

import torch

from patchwork.models.dnp import CropGenerator, PatchSet
from patchwork.models.dnp.geometry import apply, invert


def covered(gen: CropGenerator, patches: PatchSet) -> torch.Tensor:
    """Voxels that received at least one finest-level patch voxel."""
    finest = patches.levels[-1]
    ones = torch.ones(len(finest), 1, *finest.inputs.shape[2:])
    return gen.scatter(ones, finest.matrices, patches.grid)[1] > 0


def test_tree_sampling_covers_every_voxel(ndim: int, shape: tuple[int, ...]) -> None:
    gen = CropGenerator(
        depth=3, ndim=ndim, scheme={"patch_size": (5,) * ndim, "fov_rel": 0.6, "destvox_rel": 1.0}
    )
    affine = torch.eye(ndim + 1, dtype=torch.float64)
    affine[0, 0] = -1.0
    patches = gen.sample(torch.randn(1, *shape), affine=affine, generate_type="tree", generator=0)
    assert covered(gen, patches).all()
    counts = [len(level) for level in patches.levels]
    assert counts[0] > 1 and counts[2] > counts[1] > counts[0]
    again = gen.sample(
        torch.randn(1, *shape), affine=affine, generate_type="tree", num_patches=2, generator=1
    )
    assert len(again.levels[0]) == 2 * counts[0]


def test_random_coverage_grows_with_num_patches(ndim: int, shape: tuple[int, ...]) -> None:
    gen = CropGenerator(
        depth=2, ndim=ndim, scheme={"patch_size": (4,) * ndim, "fov_rel": 0.5, "destvox_rel": 1.0}
    )
    image = torch.randn(1, *shape)
    fractions = [
        covered(gen, gen.sample(image, num_patches=n, generator=5)).float().mean() for n in (2, 8, 64)
    ]
    assert fractions[0] < fractions[1] < fractions[2]


def test_same_seed_same_patches_other_seed_other_patches(ndim: int, shape: tuple[int, ...]) -> None:
    gen = CropGenerator(
        depth=2,
        ndim=ndim,
        scheme={"patch_size": (4,) * ndim, "fov_rel": 0.5, "destvox_rel": 1.0},
        interp_type="lin",
    )
    image, labels = torch.randn(1, *shape), (torch.rand(*shape) > 0.9).float()
    options = {"num_patches": 6, "branch_factor": 2, "augment": {"dphi": 0.3, "flip": 1, "dscale": 0.1}}
    options |= {"balance": {"ratio": 0.5}}
    first = gen.sample(image, labels, generator=torch.Generator().manual_seed(7), **options)
    second = gen.sample(image, labels, generator=torch.Generator().manual_seed(7), **options)
    other = gen.sample(image, labels, generator=8, **options)
    for a, b, c in zip(first.levels, second.levels, other.levels, strict=True):
        assert torch.equal(a.matrices, b.matrices) and torch.equal(a.inputs, b.inputs)
        assert torch.equal(a.labels, b.labels)
        assert not torch.equal(a.matrices, c.matrices)


def finest_contains(patches: PatchSet, channel: int = 0) -> torch.Tensor:
    """Whether each finest label patch contains label ``channel``."""
    labels = patches.levels[-1].labels[:, channel]
    return labels.flatten(1).amax(dim=1) > 0


def test_balance_ratio_half_gives_half_foreground_patches(ndim: int, shape: tuple[int, ...]) -> None:
    gen = CropGenerator(
        depth=2, ndim=ndim, scheme={"patch_size": (4,) * ndim, "fov_rel": 0.5, "destvox_rel": 1.0}
    )
    labels = torch.zeros(*shape)
    labels[(3,) * ndim] = 1.0
    image = torch.randn(1, *shape)
    volume = gen.prepare(image, labels)
    fractions = {}
    for ratio in (0.0, 0.5, 1.0):
        patches = gen.sample(volume, num_patches=1000, balance={"ratio": ratio}, generator=11)
        fractions[ratio] = finest_contains(patches).float().mean().item()
    assert abs(fractions[0.5] - 0.5) < 0.1
    assert fractions[0.0] < 0.1
    assert fractions[1.0] == 1.0


def test_autoweight_weights_rare_labels_up(ndim: int, shape: tuple[int, ...]) -> None:
    gen = CropGenerator(
        depth=2, ndim=ndim, scheme={"patch_size": (4,) * ndim, "fov_rel": 0.5, "destvox_rel": 1.0}
    )
    labels = torch.zeros(2, *shape)
    labels[0, : shape[0] // 2] = 1.0
    labels[1][tuple(n - 3 for n in shape)] = 1.0
    volume = gen.prepare(torch.randn(1, *shape), labels)
    plain = gen.sample(volume, num_patches=400, balance={"ratio": 1.0}, generator=2)
    auto = gen.sample(volume, num_patches=400, balance={"ratio": 1.0, "autoweight": True}, generator=2)
    only_rare = gen.sample(
        volume, num_patches=50, balance={"ratio": 1.0, "label_weight": (0.0, 1.0)}, generator=2
    )
    assert finest_contains(plain, 1).float().mean() < 0.1
    assert abs(finest_contains(auto, 1).float().mean() - 0.5) < 0.1
    assert finest_contains(only_rare, 1).all()


def test_tree_and_random_children_per_parent() -> None:
    gen = CropGenerator(depth=3, ndim=2, scheme={"patch_size": (4, 4), "fov_rel": 0.8, "destvox_rel": 1.0})
    patches = gen.sample(torch.randn(1, 30, 30), num_patches=4, branch_factor=3, generator=0)
    assert [len(level) for level in patches.levels] == [4, 12, 36]
    assert torch.equal(patches.levels[2].parent, torch.arange(12).repeat_interleave(3))


def test_balance_targets_stay_inside_rotated_snapped_children(ndim: int, shape: tuple[int, ...]) -> None:
    """A foreground tree's patches all contain its target voxel, even when snapping a rotated child into
    its parent would push the target out."""
    gen = CropGenerator(
        depth=3, ndim=ndim, scheme={"patch_size": (4,) * ndim, "fov_rel": 0.7, "destvox_rel": 0.6}
    )
    labels = torch.zeros(*shape)
    target = torch.tensor([1.0] * ndim, dtype=torch.float64)  # near a corner, where snapping bites
    labels[(1,) * ndim] = 1.0
    options = {"augment": {"dphi": 1.0}, "independent_augmentation": True, "balance": {"ratio": 1.0}}
    patches = gen.sample(torch.randn(1, *shape), labels, num_patches=200, generator=4, **options)
    for level in patches.levels:
        voxel = apply(invert(level.matrices), target.expand(len(level), ndim))
        inside = ((voxel >= -0.5 - 1e-9) & (voxel <= 4 - 0.5 + 1e-9)).all(dim=1)
        assert inside.all()


def test_tree_copies_are_jittered_copies_of_a_covering_tiling(ndim: int, shape: tuple[int, ...]) -> None:
    gen = CropGenerator(
        depth=3, ndim=ndim, scheme={"patch_size": (5,) * ndim, "fov_rel": 0.6, "destvox_rel": 1.0}
    )
    patches = gen.sample(torch.randn(1, *shape), generate_type="tree", num_patches=3, generator=0)
    roots = patches.levels[0].matrices
    per_copy = len(roots) // 3
    first, second, third = roots.split(per_copy)
    assert not torch.equal(first, second) and not torch.equal(second, third)
    exact = gen.sample(torch.randn(1, *shape), generate_type="tree", generator=5)
    assert torch.equal(exact.levels[0].matrices, first)  # the first copy is the exact tiling
    assert covered(gen, exact).all()

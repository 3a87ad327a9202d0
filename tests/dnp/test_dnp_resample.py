"""Low-level crop and scatter: windows, linear splatting, cropping a parent's output at its children."""

from __future__ import annotations

import pytest
import torch

from patchwork.dnp import CropGenerator, scatter, window_weights
from patchwork.dnp.geometry import patch_matrix
from patchwork.dnp.resample import crop


def test_windows_are_positive_and_peak_in_the_middle() -> None:
    cos = window_weights((6, 7), "cos", torch.device("cpu"))
    assert (cos > 0).all() and cos.max() <= 1.0
    assert cos[2:4, 3].min() == cos.max()
    assert torch.allclose(window_weights((6, 7), "cos2", torch.device("cpu")), cos**2)
    assert torch.equal(window_weights((6, 7), None, torch.device("cpu")), torch.ones(6, 7))


@pytest.mark.parametrize("window", [None, "cos", "cos2"])
def test_linear_scatter_conserves_weight_and_constants(ndim: int, window: str | None) -> None:
    size = (5,) * ndim
    matrices = patch_matrix(
        torch.tensor([[7.3, 6.6, 7.9][:ndim]], dtype=torch.float64), torch.eye(ndim)[None].double(), size
    )
    values = torch.full((1, 2, *size), 4.0)
    total, weight = scatter(values, matrices, (16,) * ndim, "lin", window)
    assert torch.isclose(weight.sum(), window_weights(size, window, torch.device("cpu")).sum())
    covered = weight > 1e-6
    assert torch.allclose(total[:, covered] / weight[covered], torch.tensor(4.0))
    nn_total, nn_weight = scatter(values, matrices, (16,) * ndim, "NN", window)
    assert (nn_weight > 0).sum() == 5**ndim and (covered.sum() > 5**ndim)


def test_scatter_ignores_voxels_outside_the_target() -> None:
    matrices = patch_matrix(
        torch.tensor([[0.2, 0.2]], dtype=torch.float64), torch.eye(2)[None].double(), (4, 4)
    )
    total, weight = scatter(torch.ones(1, 1, 4, 4), matrices, (6, 6), "NN")
    assert torch.equal(weight[:3, :3], torch.ones(3, 3)) and weight.sum() == 9
    assert torch.equal(total[0], weight)


def test_crop_of_parent_output_at_child_matches_child_coordinates(ndim: int, shape: tuple[int, ...]) -> None:
    gen = CropGenerator(
        depth=2, ndim=ndim, scheme={"patch_size": (6,) * ndim, "fov_rel": 0.8, "destvox_rel": 0.5}
    )
    patches = gen.sample(
        torch.randn(1, *shape),
        num_patches=3,
        branch_factor=2,
        augment={"dphi": 0.3},
        independent_augmentation=True,
        generator=0,
    )
    parent_level, child = patches.levels
    grid = torch.stack(torch.meshgrid(*[torch.arange(6.0)] * ndim, indexing="ij"), dim=0)
    homogeneous = torch.cat([grid.reshape(ndim, -1), torch.ones(1, 6**ndim)]).double()
    # the parent's "output": its world coordinates per voxel, a linear function the crop must reproduce
    outputs = (parent_level.matrices @ homogeneous)[:, :ndim].reshape(3, ndim, *(6,) * ndim).float()
    expected = (child.matrices @ homogeneous)[:, :ndim].reshape(6, ndim, *(6,) * ndim).float()
    by_index = crop(outputs, child.relative, (6,) * ndim, "lin", source_index=child.parent)
    gathered = crop(outputs[child.parent], child.relative, (6,) * ndim, "lin")
    assert torch.equal(by_index, gathered)
    inside = ((child.relative @ homogeneous)[:, :ndim] >= 0) & ((child.relative @ homogeneous)[:, :ndim] <= 5)
    inside = inside.all(dim=1).reshape(6, 1, *(6,) * ndim).expand_as(expected)
    assert inside.float().mean() > 0.5
    assert torch.allclose(by_index[inside], expected[inside], atol=1e-3)
    nearest = crop(outputs, child.relative, (6,) * ndim, "NN", source_index=child.parent)
    assert (nearest[inside] - expected[inside]).abs().max() > 1e-2

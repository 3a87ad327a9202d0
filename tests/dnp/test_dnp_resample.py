"""Low-level crop and scatter: windows, linear splatting, cropping a parent's output at its children."""

from __future__ import annotations

import math

import pytest
import torch

from patchwork.models.dnp import CropGenerator, resample, scatter, window_weights
from patchwork.models.dnp.geometry import patch_matrix
from patchwork.models.dnp.resample import crop


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


def random_matrices(count: int, ndim: int, seed: int) -> torch.Tensor:
    """Patch -> voxel matrices with random rotation-like linear parts (scaled, sheared) and translations
    that put some patches partly outside a 12 x 14 (x 10) array."""
    generator = torch.Generator().manual_seed(seed)
    linear = torch.linalg.qr(torch.randn(count, ndim, ndim, generator=generator, dtype=torch.float64))[0]
    linear = linear * (0.5 + 2.0 * torch.rand(count, 1, ndim, generator=generator, dtype=torch.float64))
    translation = torch.rand(count, ndim, generator=generator, dtype=torch.float64) * 16.0 - 3.0
    matrices = torch.eye(ndim + 1, dtype=torch.float64).repeat(count, 1, 1)
    matrices[:, :ndim, :ndim], matrices[:, :ndim, ndim] = linear, translation
    return matrices


def exact_nearest(matrices: torch.Tensor, shape: tuple[int, ...], spatial: tuple[int, ...]) -> tuple:
    """Float64 reference of the NN crop index: ``round(A v)`` clamped into the padded array, flattened,
    and the distance of every coordinate to a rounding tie (x.5)."""
    d = len(shape)
    axes = [torch.arange(n, dtype=torch.float64) for n in shape]
    voxels = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, d)
    coords = torch.einsum("nij,vj->nvi", matrices[:, :d, :d], voxels) + matrices[:, None, :d, d] + 1.0
    padded = torch.tensor(spatial, dtype=torch.float64) + 2.0
    rounded = coords.round().clamp(min=torch.zeros(d, dtype=torch.float64), max=padded - 1.0)
    strides = torch.tensor([padded[k + 1 :].prod().item() for k in range(d)], dtype=torch.float64)
    tie = (coords - coords.floor() - 0.5).abs().amin(dim=-1)
    return (rounded @ strides).long().reshape(-1), tie.reshape(-1)


@pytest.mark.parametrize("chunk", [64, 2**17])
def test_nearest_crop_matches_float64_rounding(
    ndim: int, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The separable, chunked index equals exact rounding except within float32 error of a tie."""
    monkeypatch.setattr(resample, "chunk_voxels", lambda: chunk)
    shape, spatial = (5, 6, 7)[:ndim], (12, 14, 10)[:ndim]
    matrices = random_matrices(40, ndim, seed=ndim)
    source = torch.arange(math.prod(s + 2 for s in spatial), dtype=torch.float64).reshape(1, 1, -1)
    reader = resample.PointSampler(matrices, shape, spatial, "NN", torch.device("cpu"))
    got = reader(source.reshape(1, 1, *(s + 2 for s in spatial)))
    expected, tie = exact_nearest(matrices, shape, spatial)
    differ = got.reshape(-1).long() != expected
    assert differ.float().mean() < 1e-3 and bool((tie[differ] < 1e-4).all())


def test_one_sweep_reads_every_source_like_separate_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """``read`` of several sources (several channels, int16 labels) in chunks equals one read each."""
    monkeypatch.setattr(resample, "chunk_voxels", lambda: 100)
    matrices = random_matrices(9, 3, seed=5)
    data = resample.pad_source(torch.randn(1, 2, 12, 14, 10))
    labels = resample.pad_source(torch.randint(-1, 3, (1, 1, 12, 14, 10), dtype=torch.int16))
    reader = resample.PointSampler(matrices, (4, 5, 6), (12, 14, 10), "NN", torch.device("cpu"))
    both = reader.read([data, labels])
    assert torch.equal(both[0], reader(data)) and torch.equal(both[1], reader(labels))
    assert both[1].dtype == torch.int16 and both[0].shape == (9, 2, 4, 5, 6)
    for n in range(9):  # and a patch reads what a crop of that patch alone reads
        alone = resample.PointSampler(matrices[n : n + 1], (4, 5, 6), (12, 14, 10), "NN", torch.device("cpu"))
        assert torch.equal(both[0][n], alone(data)[0])


def test_batched_sources_are_read_per_patch() -> None:
    """With several sources, patch ``n`` reads source ``source_index[n]`` (chunked index plus offset)."""
    sources = torch.randn(3, 2, 9, 8, 7)
    matrices = random_matrices(7, 3, seed=7)
    which = torch.tensor([2, 0, 1, 1, 0, 2, 2])
    together = crop(sources, matrices, (3, 4, 5), "NN", source_index=which)
    for n in range(7):
        alone = crop(sources[which[n] : which[n] + 1], matrices[n : n + 1], (3, 4, 5), "NN")
        assert torch.equal(together[n], alone[0])


def test_threads_share_the_chunks_without_changing_the_patches(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks read by a pool of threads give the same patches as one thread reading them all."""
    monkeypatch.setattr(resample, "chunk_voxels", lambda: 50)
    matrices = random_matrices(11, 3, seed=3)
    data = resample.pad_source(torch.randn(1, 1, 12, 14, 10))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = resample.PointSampler(matrices, (4, 5, 6), (12, 14, 10), "NN", torch.device("cpu"))(data)
        torch.set_num_threads(3)
        shared = resample.PointSampler(matrices, (4, 5, 6), (12, 14, 10), "NN", torch.device("cpu"))(data)
        with torch.inference_mode():  # the pool's threads take the caller's (thread-local) mode
            inferred = resample.PointSampler(matrices, (4, 5, 6), (12, 14, 10), "NN", torch.device("cpu"))(
                data
            )
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(alone, shared) and torch.equal(alone, inferred)


def test_nearest_crop_stays_differentiable() -> None:
    """A source that requires grad (a parent's output) gets the gradient of every voxel read from it."""
    source = torch.ones(3, 2, 9, 8, 7, requires_grad=True)
    matrices = random_matrices(5, 3, seed=9)
    out = crop(source, matrices, (3, 4, 5), "NN", source_index=torch.tensor([2, 0, 1, 1, 0]))
    out.sum().backward()
    assert source.grad is not None and source.grad.sum() == out.detach().sum() > 0
    assert torch.equal(
        out.detach(), crop(source.detach(), matrices, (3, 4, 5), "NN", torch.tensor([2, 0, 1, 1, 0]))
    )

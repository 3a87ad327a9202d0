"""Input normalisation (normalize_input): each option's documented statistics."""

from __future__ import annotations

import pytest
import torch

from patchwork.errors import PatchworkError
from patchwork.models.dnp import CropGenerator


def two_channel_image(shape: tuple[int, ...]) -> torch.Tensor:
    """Two channels with different offsets and scales."""
    generator = torch.Generator().manual_seed(0)
    noise = torch.rand(2, *shape, generator=generator)
    return noise * torch.tensor([3.0, 0.5]).view(2, *[1] * len(shape)) + torch.tensor([1.0, 7.0]).view(
        2, *[1] * len(shape)
    )


def whole_image(shape: tuple[int, ...], mode: str | None) -> torch.Tensor:
    """The identity crop of the image under ``normalize_input=mode``, ``[C, *shape]``."""
    gen = CropGenerator(
        depth=1,
        ndim=len(shape),
        scheme={"patch_size": shape, "fov_rel": 1.0},
        system="matrix",
        normalize_input=mode,
    )
    return gen.sample(two_channel_image(shape), generator=0).levels[0].inputs[0]


def test_whole_image_modes(shape: tuple[int, ...]) -> None:
    dims = tuple(range(1, len(shape) + 1))
    assert torch.equal(whole_image(shape, None), two_channel_image(shape))
    assert torch.allclose(whole_image(shape, "max").abs().amax(dim=dims), torch.ones(2))
    assert torch.allclose(whole_image(shape, "mean").mean(dim=dims), torch.ones(2))
    standard = whole_image(shape, "m0s1")
    assert torch.allclose(standard.mean(dim=dims), torch.zeros(2), atol=1e-5)
    assert torch.allclose(standard.std(dim=dims, correction=0), torch.ones(2), atol=1e-5)


def test_patch_mode_standardises_every_patch(ndim: int, shape: tuple[int, ...]) -> None:
    gen = CropGenerator(
        depth=2,
        ndim=ndim,
        scheme={"patch_size": (5,) * ndim, "fov_rel": 0.6, "destvox_rel": 1.0},
        normalize_input="patch_m0s1",
    )
    for level in gen.sample(two_channel_image(shape), num_patches=6, generator=0).levels:
        flat = level.inputs.flatten(2)
        assert torch.allclose(flat.mean(-1), torch.zeros(6, 2), atol=1e-5)
        assert torch.allclose(flat.std(-1, correction=0), torch.ones(6, 2), atol=1e-4)


def test_mean_of_zero_is_an_error() -> None:
    gen = CropGenerator(
        depth=1, ndim=2, scheme={"patch_size": (4, 4), "fov_rel": 1.0}, normalize_input="mean"
    )
    with pytest.raises(PatchworkError, match="mean 0"):
        gen.prepare(torch.zeros(1, 4, 4))

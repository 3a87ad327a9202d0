"""Small synthetic images for the DNP cropping tests (imported by the test modules)."""

from __future__ import annotations

import torch

SHAPES = {2: (26, 22), 3: (18, 20, 16)}


def voxel_indices(shape: tuple[int, ...]) -> torch.Tensor:
    """Voxel index coordinates ``[*shape, d]`` (float64)."""
    axes = [torch.arange(n, dtype=torch.float64) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)


def ball(shape: tuple[int, ...], radius: float) -> torch.Tensor:
    """A centred ball (disc in 2D) of ``radius`` voxels as a float mask."""
    centre = (torch.tensor(shape, dtype=torch.float64) - 1) / 2
    return ((voxel_indices(shape) - centre).norm(dim=-1) <= radius).float()


def smooth(points: torch.Tensor) -> torch.Tensor:
    """A smooth test function of points ``[..., d]`` (millimetres)."""
    value = torch.sin(0.25 * points[..., 0]) + torch.cos(0.2 * points[..., 1])
    if points.shape[-1] == 3:
        value = value + 0.5 * torch.sin(0.15 * points[..., 2] + 0.3)
    return value.float()

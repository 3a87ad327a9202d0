"""A researcher's own block factories, importable by name (``dnp_blocks:conv_block``) for the DNP tests."""

from __future__ import annotations

import torch
from torch import nn


class ConvBlock(nn.Sequential):
    """Two convolutions with a ReLU between them, keeping the patch size."""


def conv_block(level: int, out_channels: int, in_channels: int, ndim: int, width: int = 4) -> nn.Module:
    """A ``blockCreator``: the same small network at every level, ``width`` hidden channels."""
    conv = nn.Conv2d if ndim == 2 else nn.Conv3d
    return ConvBlock(
        conv(in_channels, width, 3, padding=1), nn.ReLU(), conv(width, out_channels, 3, padding=1)
    )


class Scale(nn.Module):
    """A learnt per-channel scale of the output."""

    def __init__(self, channels: int, ndim: int, start: float = 1.0) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full((channels,), float(start)))
        self.shape = (1, channels) + (1,) * ndim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale.view(self.shape)


def final_scale(channels: int, ndim: int, start: float = 1.0) -> nn.Module:
    """A ``finalBlock``: :class:`Scale` of the finest level's ``channels``."""
    return Scale(channels, ndim, start)

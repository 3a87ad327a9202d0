"""The per-level blocks ``B_n`` of a patchwork and the default ``blockCreator``.

A ``blockCreator`` is any callable ``(level, out_channels, in_channels, ndim) -> nn.Module`` whose module maps
``[N, in_channels, *patch_size]`` to ``[N, out_channels, *out_patch_size]`` (2D or 3D after ``ndim``). The
default, :class:`UNetBlocks`, gives every level a small U-Net (the baseline's
:class:`~patchwork.networks.UNet3D`, built with 2D or 3D layers): ``stages`` resolution stages with
``min(features * 2**s, max_features)`` features at stage ``s``, so the patch size must be divisible by
``2**(stages - 1)``. The authors' ATLAS model uses one such U-Net per level as well (ATLAS2_RECIPE.md).
A researcher's own ``blockCreator`` is given to the settings by name
(:attr:`~.settings.ModelParams.blockCreator`), so a trained model file rebuilds it on loading.

Example::

    creator = UNetBlocks(features=8, max_features=32, stages=3)
    block = creator(level=1, out_channels=9, in_channels=10, ndim=3)  # [N, 10, 32, 32, 32] -> [N, 9, ...]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from patchwork.errors import PatchworkError
from patchwork.networks import UNet3D

BlockCreator = Callable[[int, int, int, int], nn.Module]


@dataclass(frozen=True)
class UNetBlocks:
    """Default ``blockCreator``: a U-Net of ``stages`` stages, ``features`` .. ``max_features`` channels."""

    features: int = 8
    max_features: int = 32
    stages: int = 3

    def __post_init__(self) -> None:
        for name in ("features", "max_features", "stages"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PatchworkError(f"block {name} must be a positive int, got {value!r}")
        if self.max_features < self.features:
            raise PatchworkError(f"block max_features={self.max_features} < features={self.features}")

    @property
    def divisor(self) -> int:
        """Every patch axis must be a multiple of this (``2**(stages - 1)``, one halving per stage)."""
        return 2 ** (self.stages - 1)

    def __call__(self, level: int, out_channels: int, in_channels: int, ndim: int) -> nn.Module:
        """The U-Net of ``level`` (all levels get the same architecture; their weights are separate)."""
        return UNet3D(in_channels, out_channels, self.features, self.max_features, self.stages, ndim=ndim)

"""The nnU-Net style 3D U-Net ("generic U-Net" of nnU-Net's 3d_fullres configuration).

Each stage is two blocks ``conv 3³ -> InstanceNorm (affine) -> LeakyReLU(0.01)``. The encoder
downsamples with the first convolution of a stage (stride 2) instead of pooling; the decoder
upsamples with a 2³ transposed convolution of stride 2, concatenates the skip connection of the
same resolution and applies two blocks. A 1³ convolution gives the logits. With deep supervision
every decoder stage has its own 1³ head, so the network also predicts at 1/2, 1/4, ... resolution.

Features at stage ``s``: ``min(base_features * 2**s, max_features)``. Input sizes must be divisible
by ``2**(n_stages - 1)`` (the patch size is validated for that in :class:`UNetParams`). ``ndim=2`` builds
the same network from 2D layers (used as the per-level block of Deep Neural Patchworks on 2D images).

Example::

    net = UNet3D(in_channels=1, out_channels=2, n_stages=4)
    init_weights(net, torch.Generator().manual_seed(0))
    logits = net(torch.zeros(1, 1, 48, 48, 48))  # [1, 2, 48, 48, 48]
"""

from __future__ import annotations

import torch
from torch import nn

CONV = {2: nn.Conv2d, 3: nn.Conv3d}
CONV_TRANSPOSE = {2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
INSTANCE_NORM = {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}


class ConvBlock(nn.Sequential):
    """``conv 3^d (stride) -> InstanceNorm(affine) -> LeakyReLU(0.01)`` in ``ndim`` (2 or 3) dimensions."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, ndim: int = 3) -> None:
        super().__init__(
            CONV[ndim](in_channels, out_channels, kernel_size=3, stride=stride, padding=1),
            INSTANCE_NORM[ndim](out_channels, eps=1e-5, affine=True),
            nn.LeakyReLU(negative_slope=0.01, inplace=True),
        )


def stage(in_channels: int, out_channels: int, stride: int, ndim: int = 3) -> nn.Sequential:
    """Two :class:`ConvBlock`; the first one carries the stride (2 = downsampling)."""
    return nn.Sequential(
        ConvBlock(in_channels, out_channels, stride, ndim), ConvBlock(out_channels, out_channels, 1, ndim)
    )


class UNet3D(nn.Module):
    """3D U-Net with strided-convolution downsampling and transposed-convolution upsampling.

    ``ndim=2`` gives the same network with 2D layers. ``forward`` returns the full-resolution logits
    ``[B, out_channels, X, Y, Z]``;
    ``forward_deep`` returns the list of logits of every decoder stage, full resolution first
    (only the first one when ``deep_supervision`` is off).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        base_features: int = 8,
        max_features: int = 64,
        n_stages: int = 4,
        deep_supervision: bool = False,
        ndim: int = 3,
    ) -> None:
        super().__init__()
        features = [min(base_features * 2**s, max_features) for s in range(n_stages)]
        self.in_channels = in_channels
        self.deep_supervision = deep_supervision
        self.encoder = nn.ModuleList(
            stage(in_channels if s == 0 else features[s - 1], features[s], 1 if s == 0 else 2, ndim)
            for s in range(n_stages)
        )
        # decoder stage s (s = n_stages-2 .. 0) brings stage s+1 up to the resolution of stage s
        self.up = nn.ModuleList(
            CONV_TRANSPOSE[ndim](features[s + 1], features[s], kernel_size=2, stride=2)
            for s in range(n_stages - 1)
        )
        self.decoder = nn.ModuleList(
            stage(2 * features[s], features[s], 1, ndim) for s in range(n_stages - 1)
        )
        n_heads = max(n_stages - 1, 1) if deep_supervision else 1
        self.heads = nn.ModuleList(
            CONV[ndim](features[s], out_channels, kernel_size=1) for s in range(n_heads)
        )

    def forward_deep(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Logits of every supervised decoder stage, ordered from full resolution to coarsest."""
        return self._run(x, len(self.heads))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Full-resolution logits ``[B, out_channels, *x.shape[2:]]``."""
        return self._run(x, 1)[0]

    def _run(self, x: torch.Tensor, n_heads: int) -> list[torch.Tensor]:
        """Encoder, decoder and the first ``n_heads`` heads (head ``s`` sits on decoder stage ``s``)."""
        skips = []
        for enc in self.encoder:
            x = enc(x)
            skips.append(x)
        outputs: list[torch.Tensor] = []
        for s in reversed(range(len(self.decoder))):
            x = self.decoder[s](torch.cat([self.up[s](x), skips[s]], dim=1))
            if s < n_heads:
                outputs.append(self.heads[s](x))
        if not self.decoder:  # a single stage: no decoder, the head sits on the encoder
            outputs.append(self.heads[0](x))
        return outputs[::-1]


def init_weights(model: nn.Module, generator: torch.Generator) -> None:
    """He (Kaiming) normal initialisation for a LeakyReLU(0.01), biases zero, as nnU-Net.

    Drawn from ``generator`` only, so the same seed gives bitwise identical weights on CPU and the
    global torch RNG is left untouched.
    """
    for module in model.modules():
        if isinstance(module, (*CONV.values(), *CONV_TRANSPOSE.values())):
            nn.init.kaiming_normal_(module.weight, a=1e-2, generator=generator)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

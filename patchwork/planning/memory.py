"""Closed-form memory of one training step of the U-Net (:class:`patchwork.networks.UNet3D`).

Notation: ``n`` stages, stage ``s`` has ``C_s = min(base * 2**s, max)`` features on a feature map of ``V_s``
voxels (``V_0`` = the patch; ``V_s`` follows the planned pooling, so an axis that is not pooled keeps its
size), ``c`` input channels, ``K`` output channels, batch ``B``, 4 bytes a value (float32).

What autograd keeps from the forward pass, per sample, in values:

* every :class:`~patchwork.networks.ConvBlock` keeps its convolution output (for the instance norm) and
  its normalised output (for the in-place LeakyReLU): ``2 C_s V_s``; a stage has two blocks, so an encoder
  stage keeps ``4 C_s V_s``;
* a decoder stage (``s < n-1``) also keeps the transposed-convolution output ``C_s V_s`` and the
  concatenation with the skip ``2 C_s V_s``: ``7 C_s V_s``;
* heads and loss (logits, softmax/sigmoid, one-hot target, their gradients): ``8 K V_s`` on every
  supervised stage (all decoder stages, so deep supervision is covered); the batch itself and its
  augmented copy (image channels and int64 labels): ``2 (c + 2) V_0``.

The backward pass holds, at its peak, the gradients of the activations it is working on plus the
convolution workspaces; bounding it by the forward activations again gives the factor 2. Weights, their
gradients and AdamW's two moments are ``4 P`` values for ``P`` weights. So

    bytes = 4 (2 B A + 4 P) + overhead
    A = sum_s C_s V_s (4 + 7 [s < n-1]) + 8 K sum_s V_s + 2 (c + 2) V_0

``overhead`` covers what a step allocates beside its tensors: 64 MiB on a CPU (libraries loaded and
buffers kept at the first convolution, measured), and on a GPU a reserve of 1 GiB plus 10 % of the card
(CUDA context, cuDNN workspaces, allocator fragmentation). Calibration on a CPU (PyTorch 2.13, one
thread, growth of the peak resident memory over one forward + backward + AdamW step of a process that
has built the model and the batch), measured vs estimated MiB: 32³, 8 features, batch 2: 74 vs 140;
64³ / 8 / 2: 375 vs 643; 64³ / 16 / 1: 355 vs 637; 96x96x32 / 8 / 2: 449 vs 701; 48x64x64 / 8 / 2
(softmax, ``tests/test_planning.py``): 393 vs 502; 2-D 256² / 16 / 4: 443 vs 823. The estimate stays
25-90 % above the measurement, so a plan that fits its budget by this formula fits it in practice.
On a GPU training runs under float16 autocast, which keeps most activations in half precision:
the float32 formula is an over-estimate there (not measured in this session: no GPU).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from math import prod

BYTES_PER_VALUE = 4
CPU_OVERHEAD = 64 * 2**20
GPU_RESERVE = 2**30
GPU_RESERVE_FRACTION = 0.1
MIN_FEATURE_MAP = 4  # nnU-Net: the bottleneck keeps at least 4 voxels along a pooled axis
MIN_BATCH = 2  # nnU-Net: a step trains at least 2 samples
MAX_DATASET_FRACTION = 0.05  # nnU-Net: a step sees at most 5 % of the dataset's voxels


def stage_features(base: int, maximum: int, n_stages: int) -> list[int]:
    """Features of each stage: ``min(base * 2**s, maximum)`` (as :class:`~patchwork.networks.UNet3D`)."""
    return [min(base * 2**s, maximum) for s in range(n_stages)]


def stage_voxels(patch: Sequence[int], strides: Sequence[Sequence[int]]) -> list[int]:
    """Voxels of the feature map of every stage: the patch divided by the strides so far."""
    shape = list(patch)
    voxels = [prod(shape)]
    for stride in strides:
        shape = [max(1, size // s) for size, s in zip(shape, stride)]
        voxels.append(prod(shape))
    return voxels


def _conv(cin: int, cout: int, kernel: int) -> int:
    """Weights and biases of a convolution with ``kernel`` taps."""
    return kernel * cin * cout + cout


def _block(cin: int, cout: int, ndim: int) -> int:
    """Weights of a :class:`~patchwork.networks.ConvBlock`: a 3^d convolution and an affine instance norm."""
    return _conv(cin, cout, 3**ndim) + 2 * cout


def unet_weights(in_channels: int, out_channels: int, features: Sequence[int], ndim: int) -> int:
    """Number of weights of the U-Net (convolutions, biases, instance norms, a head per decoder stage)."""
    total = 0
    for s, c in enumerate(features):
        total += _block(in_channels if s == 0 else features[s - 1], c, ndim) + _block(c, c, ndim)
    for s, c in enumerate(features[:-1]):
        total += _conv(features[s + 1], c, 2**ndim) + _block(2 * c, c, ndim) + _block(c, c, ndim)
        total += _conv(c, out_channels, 1)
    return total


def unet_step_bytes(
    patch: Sequence[int],
    strides: Sequence[Sequence[int]],
    base_features: int,
    max_features: int,
    batch_size: int,
    in_channels: int,
    out_channels: int,
) -> int:
    """Estimated bytes of one training step without the overhead (the module docstring's formula).

    ``strides``: one per-axis stride (1 or 2) per pooling, so the network has ``len(strides) + 1`` stages.
    """
    n = len(strides) + 1
    features = stage_features(base_features, max_features, n)
    voxels = stage_voxels(patch, strides)
    activations = sum(c * v * (4 + 7 * (s < n - 1)) for s, (c, v) in enumerate(zip(features, voxels)))
    activations += 8 * out_channels * sum(voxels) + 2 * (in_channels + 2) * voxels[0]
    weights = unet_weights(in_channels, out_channels, features, len(patch))
    return BYTES_PER_VALUE * (2 * batch_size * activations + 4 * weights)


def usable_bytes(device: str, memory_gb: float) -> int:
    """Bytes a training step may take from a budget of ``memory_gb`` on ``device`` (less the overhead)."""
    budget = memory_gb * 2**30
    if device == "cuda":
        return int(budget * (1 - GPU_RESERVE_FRACTION) - GPU_RESERVE)
    return int(budget - CPU_OVERHEAD)


def largest_batch(
    step_bytes: Callable[[int], int], usable: int, dataset_voxels: float, sample_voxels: int
) -> int:
    """nnU-Net's batch rule: as large as ``usable`` bytes allow (``step_bytes(batch)``), but a step sees at
    most :data:`MAX_DATASET_FRACTION` of the dataset's voxels (``sample_voxels`` a sample), and at least
    :data:`MIN_BATCH`."""
    cap = max(MIN_BATCH, int(MAX_DATASET_FRACTION * dataset_voxels / sample_voxels))
    batch = MIN_BATCH
    while batch < cap and step_bytes(batch + 1) <= usable:
        batch += 1
    return batch

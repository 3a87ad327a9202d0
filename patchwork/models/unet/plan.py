"""nnU-Net's rules for the U-Net's patch size, depth and batch size.

1. **Start**: a patch of 256³ voxels (2-D: 2048²) whose axes follow the target spacing, so its field of
   view is isotropic in mm (``1/spacing`` scaled to that volume), cut to the median image shape. nnU-Net
   does not go larger: beyond the median image a patch is mostly padding.
2. **Topology** (nnU-Net's ``get_pool_and_conv_props``): pool an axis while its feature map keeps at least
   4 voxels after pooling (the bottleneck ends at 4-7 voxels an axis) and while its spacing is at most 2x
   the finest spacing of the current feature map. A thick-slice axis (5 mm beside 0.8 mm) is therefore
   not pooled until the pooling of the fine axes has brought their spacing within 2x of it. The
   number of stages is one more than the most poolings of any axis.
3. **Divisibility**: :class:`~patchwork.networks.UNet3D` pools every axis at every stage, so every patch
   axis is made a multiple of ``2**(n_stages - 1)`` (rounded to the nearest multiple, at least one). The
   per-axis pooling of rule 2 is kept in the plan (``pool_strides``) for a network that honours it; the
   memory estimate uses it, which bounds the isotropically pooling network too (less pooling, larger maps).
4. **Memory**: while one step at batch 2 does not fit the budget
   (:func:`~patchwork.planning.memory.unet_step_bytes`), shrink the patch axis that is largest relative to
   the median shape by one multiple of ``2**(n_stages - 1)``, and go back to rule 2.
5. **Batch**: as large as the memory allows, but a step sees at most 5 % of the voxels of the dataset
   (the median image times the training subjects), and at least 2
   (:func:`~patchwork.planning.memory.largest_batch`).
6. **Features**: nnU-Net's 32 features doubling per stage up to 320 (3-D) or 512 (2-D) on a GPU. A CPU
   trains some 50x slower, so there the features start at 8 and stop at 64 (16x fewer multiply-adds per
   voxel); the memory rule then lets the patch grow instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod
from typing import Any

from patchwork.errors import PatchworkError
from patchwork.planning.memory import MIN_BATCH, MIN_FEATURE_MAP, largest_batch, unet_step_bytes

POOL_SPACING_RATIO = 2.0  # nnU-Net: an axis is pooled only while its spacing <= 2x the finest
START_VOXELS = {2: 2048**2, 3: 256**3}  # nnU-Net's initial patch volume
FEATURES = {("cuda", 2): (32, 512), ("cuda", 3): (32, 320), ("cpu", 2): (8, 64), ("cpu", 3): (8, 64)}


def pool_strides(patch: Sequence[int], spacing: Sequence[float]) -> list[list[int]]:
    """Per-axis strides (2 = pooled, 1 = kept) of every pooling, by rule 2 of the module docstring."""
    size = [float(p) for p in patch]
    current = [float(s) for s in spacing]
    strides = []
    while True:
        finest = min(current)
        stride = [
            2 if sz >= 2 * MIN_FEATURE_MAP and sp <= POOL_SPACING_RATIO * finest * (1 + 1e-6) else 1
            for sz, sp in zip(size, current)
        ]
        if 2 not in stride:
            return strides
        strides.append(stride)
        size = [sz / st for sz, st in zip(size, stride)]
        current = [sp * st for sp, st in zip(current, stride)]


def snap(patch: Sequence[float], spacing: Sequence[float]) -> list[int]:
    """The patch with every axis a multiple of ``2**(n_stages - 1)`` of its own topology (rule 3)."""
    snapped = [float(p) for p in patch]
    while True:
        factor = 2 ** len(pool_strides(snapped, spacing))
        new = [float(max(factor, factor * round(p / factor))) for p in snapped]
        if new == snapped:
            return [int(p) for p in new]
        snapped = new


def plan_unet(
    median_shape: Sequence[float],
    spacing: Sequence[float],
    n_train: int,
    in_channels: int,
    out_channels: int,
    device: str,
    usable: int,
) -> dict[str, Any]:
    """The U-Net plan for images of ``median_shape`` voxels at ``spacing`` mm and ``usable`` bytes a step.

    ``out_channels`` is the widest head the spec may choose (softmax over all labels). Returns ``params``
    (:class:`~.settings.UNetParams` keys) and ``derived`` (the topology and the estimate).
    """
    ndim = len(spacing)
    base, maximum = FEATURES[(device, ndim)]
    inverse = [1 / s for s in spacing]
    scale = (START_VOXELS[ndim] / prod(inverse)) ** (1 / ndim)
    patch = snap([min(i * scale, m) for i, m in zip(inverse, median_shape)], spacing)

    def step_bytes(patch: Sequence[int], batch: int) -> int:
        strides = pool_strides(patch, spacing)
        return unet_step_bytes(patch, strides, base, maximum, batch, in_channels, out_channels)

    while step_bytes(patch, MIN_BATCH) > usable:
        factor = 2 ** len(pool_strides(patch, spacing))
        shrinkable = [a for a in range(ndim) if patch[a] > factor]
        if not shrinkable:
            raise PatchworkError(
                f"plan: a U-Net step at patch {patch}, batch {MIN_BATCH} needs "
                f"{step_bytes(patch, MIN_BATCH) / 2**30:.2f} GiB, over the budget; give more memory"
            )
        axis = max(shrinkable, key=lambda a: patch[a] / median_shape[a])
        patch[axis] -= factor
        patch = snap(patch, spacing)
    batch = largest_batch(lambda b: step_bytes(patch, b), usable, prod(median_shape) * n_train, prod(patch))
    strides = pool_strides(patch, spacing)
    return {
        "params": {
            "patch_size": patch,
            "batch_size": batch,
            "n_stages": len(strides) + 1,
            "base_features": base,
            "max_features": maximum,
        },
        "derived": {
            "pool_strides": strides,
            "bottleneck": [p // prod(s[a] for s in strides) for a, p in enumerate(patch)],
            "memory_gb": round(step_bytes(patch, batch) / 2**30, 3),
        },
    }

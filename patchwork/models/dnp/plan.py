"""The Deep Neural Patchwork scheme: levels, patch size, fields of view and block size.

A DNP (``patchwork.models.dnp``) looks at the image through ``depth`` nested patches of one matrix size; the
coarsest patch should see the whole image, the finest has the target spacing, and the voxel sizes between
are geometric (``patchwork.models.dnp.scheme.voxel_sizes``). The rules:

1. **Patch edge**: the longest patch axis gets ``edge`` voxels: 64 on a GPU (the authors' ATLAS R2.0
   model, ``ATLAS2_RECIPE.md``), 32 on a CPU (the paper's typical matrix), never more than the longest
   axis of the median image (a coarsest voxel finer than the target spacing gains nothing).
2. **Coarsest level**: isotropic voxels of ``h_0 = E / edge`` mm, ``E`` the longest extent (mm) of the
   median image; the other axes get as many voxels as their extent needs, so the patch follows the
   image's aspect, and ``fov_mm = patch * h_0`` covers the whole median image.
3. **Blocks**: every level is a U-Net (``model.block_*``) pooled like nnU-Net's until the longest patch
   axis is 4-7 voxels; every patch axis is rounded up to a multiple of ``2**(block_stages - 1)``.
   Features 16..128 on a GPU (the authors' 16 features on their first level), 8..32 on a CPU.
4. **Depth**: the finest voxel is the target spacing and each level zooms in by at most 2x per axis (the
   U-Net's pooling factor, read the other way), so ``depth = 1 + ceil(log2(max_a h_0 / target_a))``.
5. **Memory and batch**: a step trains ``depth`` blocks on ``batch`` trees; the edge shrinks by 8 voxels
   while batch 2 does not fit the budget, then the batch grows as the memory allows, at most to 5 % of
   the dataset's voxels per step (nnU-Net's rule), at least 2.

The plan's ``params`` use the keys of :class:`~.settings.DNPParams` (``crop.depth``,
``crop.ndim``, ``crop.scheme.patch_size`` / ``fov_mm`` / ``destvox_mm``, ``model.block_*``,
``train.batch_size``).
"""

from __future__ import annotations

from collections.abc import Sequence
from math import ceil, log2, prod
from typing import Any

from patchwork.errors import PatchworkError
from patchwork.planning.memory import MIN_BATCH, MIN_FEATURE_MAP, largest_batch, unet_step_bytes

EDGE = {"cuda": 64, "cpu": 32}
BLOCK_FEATURES = {"cuda": (16, 128), "cpu": (8, 32)}
MIN_EDGE = 8
EDGE_STEP = 8
MAX_ZOOM = 2.0  # at most this zoom from one level to the next, per axis
INTERMEDIATE_OUT = 8  # DNP default: channels a level passes on beside its label outputs


def block_stages(edge: int) -> int:
    """Stages of a block U-Net whose longest axis is ``edge``: pooled while it keeps >= 4 voxels."""
    stages = 1
    while edge / 2 ** (stages - 1) >= 2 * MIN_FEATURE_MAP:
        stages += 1
    return stages


def scheme_for(edge: int, extent: Sequence[float], spacing: Sequence[float]) -> dict[str, Any]:
    """Patch, fields of view, voxel sizes, depth and block stages for a longest patch axis of ``edge``."""
    coarsest = max(extent) / edge
    stages = block_stages(edge)
    factor = 2 ** (stages - 1)
    patch = [factor * max(1, ceil(e / coarsest / factor - 1e-9)) for e in extent]
    zoom = max(coarsest / s for s in spacing)
    depth = 1 + max(0, ceil(log2(zoom) / log2(MAX_ZOOM) - 1e-9))
    fov = [p * coarsest for p in patch]
    finest = [p * s for p, s in zip(patch, spacing)]
    steps = [n / (depth - 1) if depth > 1 else 0.0 for n in range(depth)]
    voxels = [[f0 ** (1 - t) * f1**t / p for f0, f1, p in zip(fov, finest, patch)] for t in steps]
    return {"patch": patch, "fov": fov, "voxels": voxels, "depth": depth, "stages": stages}


def plan_dnp(
    median_shape: Sequence[float],
    spacing: Sequence[float],
    n_train: int,
    in_channels: int,
    n_labels: int,
    device: str,
    usable: int,
) -> dict[str, Any]:
    """The DNP plan for images of ``median_shape`` voxels at ``spacing`` mm and ``usable`` bytes a step.

    Returns ``params`` (:class:`~.settings.DNPParams` keys) and ``derived`` (voxel sizes and
    fields of view per level, the memory estimate).
    """
    ndim = len(spacing)
    extent = [m * s for m, s in zip(median_shape, spacing)]
    features, maximum = BLOCK_FEATURES[device]
    passed = INTERMEDIATE_OUT + n_labels  # channels a level's output gives the next level

    def step_bytes(scheme: dict[str, Any], batch: int) -> int:
        strides = [[2] * ndim] * (scheme["stages"] - 1)
        block = unet_step_bytes(
            scheme["patch"], strides, features, maximum, batch, in_channels + passed, passed
        )
        return scheme["depth"] * block

    edge = min(EDGE[device], max(MIN_EDGE, int(max(median_shape))))
    scheme = scheme_for(edge, extent, spacing)
    while step_bytes(scheme, MIN_BATCH) > usable:
        if edge - EDGE_STEP < MIN_EDGE:
            raise PatchworkError(
                f"plan: a DNP step at patch {scheme['patch']}, batch {MIN_BATCH} needs "
                f"{step_bytes(scheme, MIN_BATCH) / 2**30:.2f} GiB, over the budget; give more memory"
            )
        edge -= EDGE_STEP
        scheme = scheme_for(edge, extent, spacing)
    tree_voxels = scheme["depth"] * prod(scheme["patch"])
    batch = largest_batch(lambda b: step_bytes(scheme, b), usable, prod(median_shape) * n_train, tree_voxels)
    return {
        "params": {
            "crop": {
                "depth": scheme["depth"],
                "ndim": ndim,
                "scheme": {
                    "patch_size": scheme["patch"],
                    "fov_mm": [round(f, 3) for f in scheme["fov"]],
                    # with one level its voxel size is fov / patch: the scheme then takes no destvox
                    **({"destvox_mm": [round(s, 6) for s in spacing]} if scheme["depth"] > 1 else {}),
                },
            },
            "model": {
                "block_features": features,
                "block_max_features": maximum,
                "block_stages": scheme["stages"],
            },
            "train": {"batch_size": batch},
        },
        "derived": {
            "voxel_sizes_mm": [[round(v, 3) for v in level] for level in scheme["voxels"]],
            "fov_mm_per_level": [
                [round(v * p, 1) for v, p in zip(level, scheme["patch"])] for level in scheme["voxels"]
            ],
            "memory_gb": round(step_bytes(scheme, batch) / 2**30, 3),
        },
    }

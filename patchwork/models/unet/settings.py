"""Settings of the U-Net baseline: :class:`UNetParams` (what training uses) and :class:`UNetApply` (how a
trained model is applied: changing it re-predicts, never retrains). Both are validated once when built
and import no torch.

The defaults are sized for a fast CPU demo (48³ patches, 8 base features, 4 stages, batch 2, a few
hundred iterations); nnU-Net's own values are given in the field comments for real data.

Example::

    params = UNetParams.from_dict({"head": "softmax", "iterations": 1000})
    params.to_dict()  # plain JSON/torch-safe dict, round-trips through from_dict
    apply = UNetApply.from_dict({"test_time_mirroring": True})
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from patchwork.errors import PatchworkError
from patchwork.schema import check_fields, setting
from patchwork.settings import dataclass_from_dict
from patchwork.training.schedule import SCHEDULES

HEADS = ("sigmoid", "softmax")
OPTIMIZERS = ("sgd", "adamw")


@dataclass(frozen=True)
class UNetParams:
    """Architecture and training settings of the nnU-Net style 3D U-Net.

    Network: ``n_stages`` resolution stages, stage ``s`` has ``min(base_features * 2**s, max_features)``
    features; every patch axis must be divisible by ``2**(n_stages - 1)``. Head ``"sigmoid"`` gives one
    output channel (foreground = any label > 0); ``"softmax"`` gives ``num_classes`` channels.

    Optimiser: ``"adamw"`` (default: converges within the few hundred iterations of a demo) or
    ``"sgd"`` (nnU-Net: Nesterov, ``momentum`` 0.99, lr 1e-2, weight decay 3e-5, 250k iterations).
    The learning rate rises linearly over ``warmup_iterations`` and then follows ``lr_schedule``
    (``"poly"``, nnU-Net's ``(1 - t) ** 0.9``; ``"cosine"``; ``"constant"``; see
    :mod:`patchwork.training.schedule`).
    """

    head: str = "sigmoid"
    num_classes: int = 2
    patch_size: tuple[int, int, int] = (48, 48, 48)  # nnU-Net: planned from the median image shape
    base_features: int = 8  # nnU-Net: 32
    max_features: int = 64  # nnU-Net: 320
    n_stages: int = 4  # nnU-Net: down to a 4-8 voxel bottleneck
    deep_supervision: bool = False
    batch_size: int = 2
    iterations: int = 250  # nnU-Net: 1000 epochs x 250 iterations
    optimizer: str = "adamw"
    lr: float = 3e-3
    weight_decay: float = 1e-4
    momentum: float = 0.99  # SGD only
    lr_schedule: str = "poly"
    warmup_iterations: int = 0
    grad_clip: float = 12.0  # max L2 norm of the gradient, as nnU-Net
    oversample_foreground: float = 1 / 3
    sample_by_lesion: bool = False  # a foreground patch picks a lesion uniformly, then a voxel of it
    augment: bool = True
    rotation_deg: float = 30.0  # max |angle| about each axis, drawn with p = 0.2
    scale_range: tuple[float, float] = (0.7, 1.4)  # isotropic zoom, drawn with p = 0.2
    mirror: bool = True  # random flip of each axis, p = 0.5
    gamma: bool = False  # gamma augmentation, p = 0.3, gamma in [0.7, 1.5]
    checkpoint_every: int = 50
    val_every: int = 50
    val_patches: int = 16

    def __post_init__(self) -> None:
        problems = _check_values(self)
        if problems:
            raise PatchworkError(problems=[f"unet params: {p}" for p in problems])

    @property
    def out_channels(self) -> int:
        """Channels of the network output: 1 for sigmoid, ``num_classes`` for softmax."""
        return 1 if self.head == "sigmoid" else self.num_classes

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UNetParams:
        """Build from a plain dict (config file, checkpoint); unknown keys and wrong types are errors."""
        return dataclass_from_dict(cls, d, "unet params")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of builtins (tuples as lists), safe for JSON and ``torch.load(weights_only=True)``."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


def _check_values(p: UNetParams) -> list[str]:
    """Semantic checks on a fully built :class:`UNetParams`; returns one message per problem."""
    problems = []
    if p.head not in HEADS:
        problems.append(f"head={p.head!r}: expected one of {', '.join(HEADS)}")
    if p.lr_schedule not in SCHEDULES:
        problems.append(f"lr_schedule={p.lr_schedule!r}: expected one of {', '.join(SCHEDULES)}")
    if not 0 <= p.warmup_iterations < p.iterations:
        problems.append(f"warmup_iterations={p.warmup_iterations}: must be in [0, iterations)")
    if p.optimizer not in OPTIMIZERS:
        problems.append(f"optimizer={p.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
    if p.num_classes < 2:
        problems.append(f"num_classes={p.num_classes}: need at least 2 (background and one class)")
    if p.n_stages < 1:
        problems.append(f"n_stages={p.n_stages}: must be at least 1")
    else:
        factor = 2 ** (p.n_stages - 1)
        if any(s < 1 or s % factor for s in p.patch_size):
            problems.append(
                f"patch_size={list(p.patch_size)}: each axis must be a positive multiple of "
                f"2**(n_stages-1) = {factor}"
            )
    for name in ("base_features", "max_features", "batch_size", "iterations", "checkpoint_every",
                 "val_every", "val_patches"):  # fmt: skip
        if getattr(p, name) < 1:
            problems.append(f"{name}={getattr(p, name)}: must be at least 1")
    if p.max_features < p.base_features:
        problems.append(f"max_features={p.max_features}: must be >= base_features={p.base_features}")
    for name in ("lr", "grad_clip"):
        if getattr(p, name) <= 0:
            problems.append(f"{name}={getattr(p, name)}: must be positive")
    if p.weight_decay < 0:
        problems.append(f"weight_decay={p.weight_decay}: must be >= 0")
    if not 0 <= p.momentum < 1:
        problems.append(f"momentum={p.momentum}: must be in [0, 1)")
    if not 0 <= p.oversample_foreground <= 1:
        problems.append(f"oversample_foreground={p.oversample_foreground}: must be in [0, 1]")
    if not 0 <= p.rotation_deg <= 180:
        problems.append(f"rotation_deg={p.rotation_deg}: must be in [0, 180]")
    if not 0 < p.scale_range[0] <= p.scale_range[1]:
        problems.append(f"scale_range={list(p.scale_range)}: need 0 < low <= high")
    return problems


@dataclass(frozen=True)
class UNetApply:
    """How a trained U-Net is applied: Gaussian-weighted sliding windows of the training patch size.

    ``overlap``: fraction of a window shared with its neighbour along each axis (nnU-Net: 0.5);
    ``sw_batch_size``: windows per forward pass; ``test_time_mirroring``: average the logits over the 8
    combinations of flipped axes (8x the time).
    """

    overlap: float = setting(0.5, minimum=0, exclusiveMaximum=1)
    sw_batch_size: int = setting(2, minimum=1)
    test_time_mirroring: bool = False

    def __post_init__(self) -> None:
        problems = check_fields(self)
        if problems:
            raise PatchworkError(problems=[f"unet apply: {p}" for p in problems])

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UNetApply:
        """Build from a plain dict (the spec's ``apply``); unknown keys and wrong types are errors."""
        return dataclass_from_dict(cls, d, "unet apply")

    def to_dict(self) -> dict[str, Any]:
        """Plain dict of builtins."""
        return dataclasses.asdict(self)

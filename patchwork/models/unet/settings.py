"""Settings of the U-Net baseline: :class:`UNetParams` (what training uses) and :class:`UNetApply` (how a
trained model is applied: changing it re-predicts, never retrains). Both are validated once when built
and import no torch.

The defaults are sized for a fast CPU demo (48³ patches, 8 base features, 4 stages, batch 2, a few
hundred iterations); nnU-Net's own values are given in the fields' docs for real data.

Example::

    params = UNetParams.from_dict({"head": "softmax", "iterations": 1000})
    params.to_dict()  # plain JSON/torch-safe dict, round-trips through from_dict
    apply = UNetApply.from_dict({"test_time_mirroring": True})
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from patchwork.settings import Settings, setting
from patchwork.training.schedule import SCHEDULES

HEADS = ("sigmoid", "softmax")
OPTIMIZERS = ("sgd", "adamw")


@dataclass(frozen=True)
class UNetParams(Settings):
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

    what: ClassVar[str] = "unet params"
    head: str = setting(
        "sigmoid",
        enum=list(HEADS),
        doc="`sigmoid` (one foreground channel) or `softmax` (`num_classes` channels)",
    )
    num_classes: int = setting(2, minimum=2, doc="classes of a softmax head, background included")
    patch_size: tuple[int, int, int] = setting(
        (48, 48, 48),
        items={"minimum": 1},
        doc="training patch and sliding-window size in voxels, each axis a multiple of "
        "`2**(n_stages - 1)` (nnU-Net: planned from the median image shape)",
    )
    base_features: int = setting(8, minimum=1, doc="features of the first stage (nnU-Net: 32)")
    max_features: int = setting(64, minimum=1, doc="most features of a stage (nnU-Net: 320)")
    n_stages: int = setting(4, minimum=1, doc="resolution stages (nnU-Net: down to a 4-8 voxel bottleneck)")
    deep_supervision: bool = setting(False, doc="a loss on every decoder stage's output (nnU-Net's)")
    batch_size: int = setting(2, minimum=1, doc="patches per step")
    iterations: int = setting(250, minimum=1, doc="optimiser steps (nnU-Net: 1000 epochs x 250 iterations)")
    optimizer: str = setting(
        "adamw", enum=list(OPTIMIZERS), doc="`adamw` or `sgd` (nnU-Net: Nesterov, momentum 0.99)"
    )
    lr: float = setting(3e-3, exclusiveMinimum=0, doc="base learning rate")
    weight_decay: float = setting(1e-4, minimum=0, doc="weight decay")
    momentum: float = setting(0.99, minimum=0, exclusiveMaximum=1, doc="SGD's momentum")
    lr_schedule: str = setting(
        "poly",
        enum=list(SCHEDULES),
        doc="after the warm-up: `poly` (nnU-Net's `(1 - t)^0.9`), `cosine` or `constant`",
    )
    warmup_iterations: int = setting(
        0, minimum=0, doc="iterations of linear learning-rate warm-up, fewer than `iterations`"
    )
    grad_clip: float = setting(12.0, exclusiveMinimum=0, doc="max L2 norm of the gradient, as nnU-Net")
    oversample_foreground: float = setting(
        1 / 3, minimum=0, maximum=1, doc="fraction of each batch centred on a foreground voxel"
    )
    sample_by_lesion: bool = setting(
        False,
        doc="a foreground patch first picks one of the image's lesions (connected components) uniformly, "
        "then a voxel of it, so small lesions are not starved by large ones (nnU-Net picks a voxel "
        "uniformly)",
    )
    lesion_dice_weight: float = setting(  # hidden at 0: models trained before it keep their identity
        0.0,
        minimum=0,
        hide_default=True,
        doc="weight of blob loss's lesion-wise Dice term (every lesion of a patch scored on its own, so a "
        "small lesion counts as much as a large one), added to Dice + CE; 0 = off",
    )
    augment: bool = setting(True, doc="spatial and intensity augmentation")
    rotation_deg: float = setting(
        30.0, minimum=0, maximum=180, doc="max |angle| about each axis (degrees), drawn with p = 0.2"
    )
    scale_range: tuple[float, float] = setting(
        (0.7, 1.4), items={"exclusiveMinimum": 0}, doc="isotropic zoom range, drawn with p = 0.2"
    )
    mirror: bool = setting(True, doc="random flip of each axis, p = 0.5")
    gamma: bool = setting(False, doc="gamma augmentation, p = 0.3, gamma in [0.7, 1.5]")
    checkpoint_every: int = setting(50, minimum=1, doc="iterations between checkpoints")
    val_every: int = setting(50, minimum=1, doc="iterations between validations")
    val_patches: int = setting(16, minimum=1, doc="patches of each validation")

    @property
    def out_channels(self) -> int:
        """Channels of the network output: 1 for sigmoid, ``num_classes`` for softmax."""
        return 1 if self.head == "sigmoid" else self.num_classes

    def problems(self) -> list[str]:
        """The rules between fields: warm-up shorter than training, patch divisible, features ordered."""
        problems = []
        if self.warmup_iterations >= self.iterations:
            problems.append(f"warmup_iterations={self.warmup_iterations}: must be in [0, iterations)")
        factor = 2 ** (self.n_stages - 1)
        if any(s % factor for s in self.patch_size):
            problems.append(
                f"patch_size={list(self.patch_size)}: each axis must be a positive multiple of "
                f"2**(n_stages-1) = {factor}"
            )
        if self.max_features < self.base_features:
            problems.append(
                f"max_features={self.max_features}: must be >= base_features={self.base_features}"
            )
        if self.scale_range[0] > self.scale_range[1]:
            problems.append(f"scale_range={list(self.scale_range)}: need 0 < low <= high")
        return problems


@dataclass(frozen=True)
class UNetApply(Settings):
    """How a trained U-Net is applied: Gaussian-weighted sliding windows of the training patch size."""

    what: ClassVar[str] = "unet apply"
    overlap: float = setting(
        0.5,
        minimum=0,
        exclusiveMaximum=1,
        doc="fraction of a window shared with its neighbour along each axis (nnU-Net: 0.5); windows "
        "weighted by a Gaussian",
    )
    sw_batch_size: int = setting(2, minimum=1, doc="windows per forward pass")
    test_time_mirroring: bool = setting(
        False, doc="average the logits over the 8 combinations of flipped axes (8x the time)"
    )

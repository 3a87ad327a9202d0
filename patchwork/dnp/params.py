"""Settings of a Deep Neural Patchwork: crop scheme, model, training and application, validated once.

:class:`DNPParams` has four sections, each built from a plain dict by ``from_dict`` (unknown keys and wrong
types raise :class:`~patchwork.errors.PatchworkError` naming the key) and written back by ``to_dict``
(builtins only: JSON- and ``torch.load(weights_only=True)``-safe):

* ``crop``: the :class:`~patchwork.dnp.crop.CropGenerator` keywords (its :class:`CropConfig`);
* ``model``: :class:`ModelParams`, the :class:`~patchwork.dnp.model.PatchWorkModel` keywords plus the size of
  the default U-Net blocks;
* ``train``: :class:`TrainParams`, the outer/inner loop (:mod:`patchwork.dnp.train`);
* ``apply``: the :class:`~patchwork.dnp.apply.ApplyConfig` settings of the application
  (:func:`~patchwork.dnp.apply.apply_dnp`): ``DEFAULT_APPLY`` updated by the given keys, checked here
  and kept as a plain dict (settings not named fall back to :class:`ApplyConfig`'s defaults).

The defaults are a fast CPU demo on 2 mm brains (about 75×95×80 voxels): 3 levels of 16³ patches, the
coarsest covering the whole image (about 10 mm voxels), the finest at the image's voxel size (a 32 mm box),
U-Net blocks of 8..32 features, 30 outer iterations of 4 trees per image, 2 epochs in batches of 8. (32³
patches, as in the paper, cost about ten times more per step on a CPU.) A coarsest patch smaller than the
image (``fov_rel`` 0.9) makes the tree application tile the image with 2 nearly identical roots per axis,
8 in 3D, and evaluate every finer level 8 times over: on the demo its full coverage took 12x longer
for a lower test Dice (0.83 vs 0.86 on 5 subjects, ``benchmarks/inference.py``). With one root, a
single tree tiles the image once; the default application averages 4 trees with random rotations
(``dphi`` 0.2) and cosine windows, which on the demo's out-of-fold subjects lifted Dice from 0.74 to
0.82 (small lesions cut by tile borders were missed by the single tiling) for 4x the time.

Example::

    params = DNPParams.from_dict({"crop": {"depth": 3}, "train": {"num_its": 60, "hard_mining": 0.25}})
    params.to_dict()  # round-trips through from_dict
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from patchwork.dnp.apply import ApplyConfig
from patchwork.dnp.augment import Augment
from patchwork.dnp.balance import Balance
from patchwork.dnp.blocks import UNetBlocks
from patchwork.dnp.crop import CropConfig, CropGenerator
from patchwork.dnp.model import FORWARD_TYPES, PatchWorkModel, crop_kwargs, plain
from patchwork.errors import PatchworkError, check_keys
from patchwork.settings import dataclass_from_dict

LOSSES = ("dice", "ce", "dice+ce")
HARD_MINING_ORDERS = ("loss", "f1", "balance")
DEFAULT_CROP: dict[str, Any] = {
    "depth": 3,
    "ndim": 3,
    "scheme": {"patch_size": [16, 16, 16], "fov_rel": [1.0], "destvox_rel": [1.0]},
}

DEFAULT_APPLY: dict[str, Any] = {"num_patches": 4, "augment": {"dphi": 0.2}, "window": "cos"}


def _check(problems: list[str], section: str) -> None:
    """Raise one error listing ``problems`` of ``section``, if any."""
    if problems:
        raise PatchworkError(problems=[f"dnp {section}: {p}" for p in problems])


def _choice(problems: list[str], name: str, value: Any, options: tuple) -> None:
    """Record a problem if ``value`` is not one of ``options``."""
    if value not in options:
        problems.append(f"{name}={value!r}: expected one of {', '.join(map(str, options))}")


def _at_least(problems: list[str], obj: Any, names: tuple[str, ...], low: float) -> None:
    """Record a problem for every field in ``names`` below ``low``."""
    problems.extend(f"{n}={getattr(obj, n)}: must be >= {low}" for n in names if getattr(obj, n) < low)


@dataclass(frozen=True)
class ModelParams:
    """:class:`~patchwork.dnp.model.PatchWorkModel` keywords (see there) and the default blocks' size:
    ``block_features`` .. ``block_max_features`` channels over ``block_stages`` U-Net stages."""

    forward_type: str = "simple"
    identical_blocks: bool = False
    intermediate_out: int = 8
    intermediate_loss: bool = True
    block_out: tuple[int, ...] | None = None
    crop_fdim: tuple[int, ...] | None = None
    block_features: int = 8
    block_max_features: int = 32
    block_stages: int = 3

    def __post_init__(self) -> None:
        problems: list[str] = []
        _choice(problems, "forward_type", self.forward_type, FORWARD_TYPES)
        _at_least(problems, self, ("intermediate_out",), 0)
        _at_least(problems, self, ("block_features", "block_max_features", "block_stages"), 1)
        if self.block_max_features < self.block_features:
            problems.append(f"block_max_features={self.block_max_features} < block_features")
        _check(problems, "model")

    @property
    def blocks(self) -> UNetBlocks:
        """The default ``blockCreator`` these settings describe."""
        return UNetBlocks(self.block_features, self.block_max_features, self.block_stages)


@dataclass(frozen=True)
class TrainParams:
    """The training loops (:mod:`patchwork.dnp.train`).

    ``num_its`` outer iterations each draw ``num_patches`` trees per image (``augment``,
    ``independent_augmentation``, ``balance`` as in ``CropGenerator.sample``) and run ``epochs`` passes over
    them in batches of ``batch_size``. ``loss``: ``'dice'``, ``'ce'``, ``'dice+ce'``, or one per level.
    AdamW at ``lr * lr_decay**it`` in outer iteration ``it``, ``weight_decay``. ``hard_mining``: the fraction
    of each set kept (the hardest by ``hard_mining_order``) for the next one, each tree at most
    ``hard_mining_maxage`` times. ``dontcare``: NaN/negative labels give no loss. ``parallel``: crop the
    next set in a worker process while this one trains. ``checkpoint_every`` outer iterations.
    """

    num_its: int = 30
    num_patches: int = 4
    epochs: int = 2
    batch_size: int = 8
    loss: str | tuple[str, ...] = "dice+ce"
    lr: float = 3e-3
    weight_decay: float = 1e-2
    lr_decay: float = 1.0
    augment: dict[str, Any] | None = None
    independent_augmentation: bool = False
    balance: dict[str, Any] | None = field(default_factory=lambda: {"ratio": 0.5})
    hard_mining: float = 0.0
    hard_mining_order: str = "loss"
    hard_mining_maxage: int = 3
    dontcare: bool = True
    parallel: bool = False
    checkpoint_every: int = 1

    def __post_init__(self) -> None:
        problems: list[str] = []
        _at_least(problems, self, ("num_its", "num_patches", "epochs", "batch_size", "checkpoint_every"), 1)
        _at_least(problems, self, ("hard_mining_maxage",), 1)
        for name in ("loss",) if isinstance(self.loss, str) else ():
            _choice(problems, name, self.loss, LOSSES)
        for i, kind in enumerate(() if isinstance(self.loss, str) else self.loss):
            _choice(problems, f"loss[{i}]", kind, LOSSES)
        if self.lr <= 0 or self.weight_decay < 0 or not 0 < self.lr_decay <= 1:
            problems.append("need lr > 0, weight_decay >= 0 and 0 < lr_decay <= 1")
        if not 0 <= self.hard_mining < 1:
            problems.append(f"hard_mining={self.hard_mining}: must be in [0, 1)")
        _choice(problems, "hard_mining_order", self.hard_mining_order, HARD_MINING_ORDERS)
        _check(problems, "train")
        Augment.from_value(self.augment)
        if self.balance is not None:
            Balance.from_value(self.balance)

    def losses(self, depth: int) -> tuple[str, ...]:
        """The loss of every level."""
        if isinstance(self.loss, str):
            return (self.loss,) * depth
        if len(self.loss) != depth:
            raise PatchworkError(f"dnp train.loss: {len(self.loss)} entries for depth {depth}")
        return self.loss


def _mapping(value: Any, what: str) -> dict[str, Any]:
    """A copy of the mapping ``value`` (else an error naming ``what``)."""
    if not isinstance(value, Mapping):
        raise PatchworkError(f"{what}: expected a mapping, got {type(value).__name__}")
    return dict(value)


def crop_config(d: Mapping[str, Any]) -> CropConfig:
    """The validated :class:`CropConfig` of ``DEFAULT_CROP`` updated by ``d`` (unknown keys named)."""
    d = _mapping(d, "dnp crop")
    check_keys(d, inspect.signature(CropGenerator).parameters, "dnp crop")
    try:
        return CropGenerator(**{**DEFAULT_CROP, **d}).config
    except PatchworkError as err:
        raise PatchworkError(f"dnp crop: {err}") from None
    except (TypeError, ValueError) as err:
        raise PatchworkError(f"dnp crop: {err}") from None


@dataclass(frozen=True)
class DNPParams:
    """All settings of a Deep Neural Patchwork (see the module docstring)."""

    crop: CropConfig = field(default_factory=lambda: crop_config({}))
    model: ModelParams = field(default_factory=ModelParams)
    train: TrainParams = field(default_factory=TrainParams)
    apply: Mapping[str, Any] = field(default_factory=lambda: dict(DEFAULT_APPLY))

    def __post_init__(self) -> None:
        self.train.losses(self.crop.depth)
        try:
            Augment.from_value(self.train.augment).check(self.crop.ndim)
        except PatchworkError as err:
            raise PatchworkError(f"dnp train.{err}") from None
        with torch.device("meta"):  # builds the modules without memory: checks every model setting
            try:
                model = build_model(self, in_channels=1)
            except PatchworkError as err:
                raise PatchworkError(f"dnp model: {err}") from None
        try:
            self.application().check(model.cropper)
        except PatchworkError as err:
            raise PatchworkError(f"dnp apply: {err}") from None

    def application(self, **overrides: Any) -> ApplyConfig:
        """The application settings: the ``apply`` section (and ``overrides``) over the defaults."""
        return ApplyConfig.from_value(self.apply, **overrides)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DNPParams:
        """Build from a plain dict with optional sections ``crop``, ``model``, ``train``, ``apply``."""
        if not isinstance(d, Mapping):
            raise PatchworkError(f"dnp params: expected a mapping, got {type(d).__name__}")
        check_keys(d, ("crop", "model", "train", "apply"), "dnp params")
        return cls(
            crop=crop_config(d.get("crop", {})),
            model=dataclass_from_dict(ModelParams, d.get("model", {}), "dnp model"),
            train=dataclass_from_dict(TrainParams, d.get("train", {}), "dnp train"),
            apply=DEFAULT_APPLY | _mapping(d.get("apply", {}), "dnp apply"),
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of builtins; ``DNPParams.from_dict(p.to_dict()) == p``."""
        return {
            "crop": crop_kwargs(self.crop),
            "model": plain(dataclasses.asdict(self.model)),
            "train": plain(dataclasses.asdict(self.train)),
            "apply": plain(self.apply),
        }


def build_model(params: DNPParams, in_channels: int) -> PatchWorkModel:
    """The :class:`PatchWorkModel` that ``params`` describes, for images of ``in_channels`` channels."""
    m = params.model
    return PatchWorkModel(
        CropGenerator(**crop_kwargs(params.crop)),
        in_channels,
        blockCreator=m.blocks,
        forward_type=m.forward_type,  # type: ignore[arg-type]
        identical_blocks=m.identical_blocks,
        intermediate_out=m.intermediate_out,
        intermediate_loss=m.intermediate_loss,
        block_out=m.block_out,
        crop_fdim=m.crop_fdim,
    )

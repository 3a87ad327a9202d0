"""PatchWorkModel: the network of a Deep Neural Patchwork, level by level, coarse to fine.

Level ``n`` sees its image patch ``I_n`` and the crop ``C_n`` of its parent's output ``X_{n-1}`` at the
child's position (``C_n = R((p_{n-1}, X_{n-1}), p_n)``, :meth:`PatchWorkModel.crop_parent`) and computes

    X_n = B_n([I_n, C_n])          ([.,.] = concatenation along channels; C_0 = [])

with a block ``B_n`` from ``blockCreator`` (default: a small U-Net per level, :mod:`.blocks`). Options
(names from the paper):

* ``intermediate_out``: level ``n < D-1`` outputs ``F_n = P + intermediate_out`` channels, the finest
  ``F_{D-1} = P``; ``P`` (prediction channels) is ``num_labels`` for a sigmoid head and ``num_labels + 1``
  for a softmax head (``categorical``). Channels ``0 .. P-1`` of every level are prediction logits
  (:meth:`PatchWorkModel.prediction`), the rest are features passed on. ``block_out`` sets ``F_n`` per level.
* ``crop_fdim``: the channels of ``X_{n-1}`` that enter ``C_n`` (default all).
* ``forward_type``:

  - ``'simple'``: ``X_n = B_n([I_n, C_n])``;
  - ``'bridge'``: a residual 1×1 convolution ``W_n`` carries the parent's features past the block,
    ``X_n = B_n([I_n, C_n]) + W_n C_n``, so a level starts from (a linear map of) its parent's answer and
    learns a correction;
  - ``'mult'``: the prediction channels of ``B_n([I_n, C_n])`` are gated by the cropped parent prediction.
    Sigmoid: ``p_n = sigmoid(z) * sigmoid(z_{n-1})`` per label, returned as its logit
    ``log p_n - log(1 - p_n)`` (so a child can only keep or remove what its parent found). Softmax: the
    product of experts ``p_n ∝ softmax(z) * softmax(z_{n-1})``, i.e. logits ``z + log_softmax(z_{n-1})``.
    Feature channels pass unchanged.

* ``identical_blocks``: one block (and bridge) shared by all levels ``n > 0`` (level 0 has no ``C_0``, so a
  different input width); then every level ``n > 0`` outputs ``F_1`` channels, the finest included.
* ``finalBlock``: a module ``[N, F, *s] -> [N, F, *s]`` applied to the finest output, or with
  ``finalBlock_all_levels`` to every level's output (before its children crop it).
* ``intermediate_loss`` is read by the training (loss on every level or on the finest only).

Example::

    cropper = CropGenerator(depth=2, ndim=3, scheme={"patch_size": (32,) * 3, "fov_rel": 0.9,
                            "destvox_rel": 1.0})
    model = PatchWorkModel(cropper, in_channels=1, intermediate_out=8)
    outputs = model(cropper.sample(image, affine=affine, num_patches=4, generator=0))  # one per level
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from patchwork.errors import PatchworkError
from patchwork.models.dnp.blocks import BlockCreator, UNetBlocks
from patchwork.models.dnp.crop import CropGenerator
from patchwork.models.dnp.geometry import invert, resize_matrix
from patchwork.models.dnp.patchset import PatchSet
from patchwork.models.dnp.resample import crop
from patchwork.models.dnp.settings import FORWARD_TYPES, Augment, DNPParams, ForwardType, ModelParams

Tensor = torch.Tensor
CONV = {2: nn.Conv2d, 3: nn.Conv3d}


def gate(child: Tensor, parent: Tensor, activation: str) -> Tensor:
    """Prediction logits of ``'mult'`` (see the module docstring) from the child's and parent's logits."""
    if activation == "softmax":
        return child + F.log_softmax(parent, dim=1)
    log_p = (F.logsigmoid(child) + F.logsigmoid(parent)).clamp(max=-1e-20)
    return log_p - torch.log(-torch.expm1(log_p))


class PatchWorkModel(nn.Module):
    """A Deep Neural Patchwork over the levels of ``cropper`` (see the module docstring).

    ``in_channels`` is the number of image channels. ``num_labels`` comes from the cropper
    (``num_labels``, else ``len(categorial_label)``, else 1); ``categorical`` selects a softmax over
    ``num_labels + 1`` classes (class 0 = background) instead of one sigmoid per label.
    """

    cropper: CropGenerator
    activation: str

    def __init__(
        self,
        cropper: CropGenerator,
        in_channels: int,
        *,
        blockCreator: BlockCreator | None = None,  # noqa: N803 - the paper's name
        forward_type: ForwardType = "simple",
        identical_blocks: bool = False,
        intermediate_out: int = 8,
        intermediate_loss: bool = True,
        block_out: Sequence[int] | None = None,
        finalBlock: nn.Module | None = None,  # noqa: N803 - the paper's name
        finalBlock_all_levels: bool = False,  # noqa: N803 - the paper's name
        crop_fdim: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        cfg = cropper.config
        self.cropper = cropper
        self.activation = "softmax" if cfg.categorical else "sigmoid"
        labels = cfg.label_count
        self.num_labels = labels
        self.num_pred = labels + (1 if cfg.categorical else 0)
        self.in_channels = _positive("in_channels", in_channels)
        if forward_type not in FORWARD_TYPES:
            raise PatchworkError(f"forward_type must be one of {FORWARD_TYPES}, got {forward_type!r}")
        self.forward_type = forward_type
        self.identical_blocks = bool(identical_blocks)
        self.intermediate_out = _positive("intermediate_out", intermediate_out, allow_zero=True)
        self.intermediate_loss = bool(intermediate_loss)
        self.finalBlock_all_levels = bool(finalBlock_all_levels)
        if blockCreator is None:
            blockCreator = UNetBlocks()
        self.default_blocks = blockCreator if isinstance(blockCreator, UNetBlocks) else None
        depth, ndim = cfg.depth, cfg.ndim
        self.out_channels = self._level_channels(block_out)
        self.block_out = None if block_out is None else list(self.out_channels)
        self.crop_fdim = None if crop_fdim is None else [int(c) for c in crop_fdim]
        self.carried = [self._carried(n) for n in range(depth - 1)]
        self._check_sizes()
        widths = [in_channels + (len(self.carried[n - 1]) if n else 0) for n in range(depth)]
        if self.identical_blocks and len(set(widths[1:])) > 1:
            raise PatchworkError(f"identical_blocks needs the same input width at levels > 0, got {widths}")
        blocks = [blockCreator(0, self.out_channels[0], widths[0], ndim)]
        bridges: list[nn.Module] = []
        for n in range(1, depth):
            if self.identical_blocks and n > 1:
                blocks.append(blocks[1])
                bridges.extend(bridges[:1])
                continue
            blocks.append(blockCreator(n, self.out_channels[n], widths[n], ndim))
            if forward_type == "bridge":
                bridges.append(CONV[ndim](len(self.carried[n - 1]), self.out_channels[n], kernel_size=1))
        self.blocks = nn.ModuleList(blocks)
        self.bridges = nn.ModuleList(bridges)
        self.finalBlock = finalBlock
        # the training's augmentation, the application's default (the paper's); set by build_model
        self.train_augment: Augment | None = None
        self.train_independent_augmentation = False

    def _level_channels(self, block_out: Sequence[int] | None) -> list[int]:
        """Output channels ``F_n`` of every level (see the module docstring)."""
        depth = self.cropper.config.depth
        if block_out is None:
            out = [self.num_pred + self.intermediate_out] * (depth - 1) + [self.num_pred]
            if self.identical_blocks and depth > 2:  # the finest level shares level 1's block
                out[-1] = out[1]
            return out
        out = [int(c) for c in block_out]
        if len(out) != depth:
            raise PatchworkError(f"block_out needs {depth} entries (one per level), got {len(out)}")
        if any(c < self.num_pred for c in out):
            raise PatchworkError(f"block_out entries must be >= {self.num_pred} prediction channels: {out}")
        if self.identical_blocks and len(set(out[1:])) > 1:
            raise PatchworkError(f"identical_blocks needs equal block_out at levels > 0, got {out}")
        return out

    def _carried(self, level: int) -> list[int]:
        """The channels of level ``level``'s output that its children crop (``crop_fdim``, default all)."""
        channels = self.out_channels[level]
        if self.crop_fdim is None:
            return list(range(channels))
        if not self.crop_fdim or any(c < 0 or c >= channels for c in self.crop_fdim):
            raise PatchworkError(
                f"crop_fdim {self.crop_fdim} must index the {channels} channels of level {level}"
            )
        return list(self.crop_fdim)

    def _check_sizes(self) -> None:
        """Patch sizes that the default blocks and the bridge/mult options can handle."""
        scheme, depth = self.cropper.config.scheme, self.cropper.config.depth
        sizes, outs = scheme.sizes(depth), scheme.out_sizes(depth)
        if (self.default_blocks is not None or self.forward_type != "simple") and sizes != outs:
            raise PatchworkError(
                "out_patch_size must equal patch_size with the default blocks and forward_type "
                f"'bridge'/'mult' (got {outs} vs {sizes})"
            )
        if self.default_blocks is not None:
            k = self.default_blocks.divisor
            if any(s % k for size in sizes for s in size):
                raise PatchworkError(f"patch_size {sizes} must be divisible by {k} for the default blocks")

    @property
    def depth(self) -> int:
        return self.cropper.config.depth

    def forward_level(self, level: int, inputs: Tensor, parent: Tensor | None) -> Tensor:
        """Output ``X_level`` [N, F_level, *out_size] of image patches ``inputs`` [N, C, *patch_size].

        ``parent`` is the parent level's full output cropped at this level's patches
        (:meth:`crop_parent`, all ``F_{level-1}`` channels; ``crop_fdim`` is applied here), ``None`` at
        level 0.
        """
        if (parent is None) != (level == 0):
            raise PatchworkError(f"level {level}: a parent crop is needed exactly for levels > 0")
        if parent is None:
            out = self.blocks[0](inputs)
        else:
            carried = parent[:, self.carried[level - 1]]
            out = self.blocks[level](torch.cat([inputs, carried], dim=1))
            if self.forward_type == "bridge":
                out = out + self.bridges[level - 1](carried)
            elif self.forward_type == "mult":
                gated = gate(self.prediction(level, out), self.prediction(level - 1, parent), self.activation)
                out = torch.cat([gated, out[:, self.num_pred :]], dim=1)
        if self.finalBlock is not None and (self.finalBlock_all_levels or level == self.depth - 1):
            out = self.finalBlock(out)
        return out

    def crop_parent(
        self, level: int, parent_output: Tensor, relative: Tensor, parent_index: Tensor
    ) -> Tensor:
        """``C_level``: crop ``parent_output`` [M, F, *out_size_{level-1}] at this level's patches.

        ``relative`` [N, d+1, d+1] maps child patch voxels to parent (input) patch voxels, ``parent_index``
        [N] picks each child's parent. The parent output's own voxel grid (``out_patch_size``) is reached by
        the inverse of :func:`~.geometry.resize_matrix`. Reads with the cropper's
        ``interp_type`` and is differentiable with respect to ``parent_output``. Returns
        ``[N, F, *patch_size_level]``.
        """
        scheme, depth = self.cropper.config.scheme, self.depth
        size, out_size = scheme.sizes(depth)[level - 1], scheme.out_sizes(depth)[level - 1]
        matrices = relative.to(torch.float64)
        if size != out_size:
            eye = torch.eye(len(size) + 1, dtype=torch.float64)[None]
            matrices = invert(resize_matrix(eye, size, out_size)) @ matrices
        shape = scheme.sizes(depth)[level]
        return crop(
            parent_output, matrices, shape, self.cropper.config.interp_type, source_index=parent_index
        )

    def prediction(self, level: int, output: Tensor) -> Tensor:
        """The prediction logits of a level output: its first ``num_pred`` channels."""
        return output[:, : self.num_pred]

    def probabilities(self, level: int, output: Tensor) -> Tensor:
        """Sigmoid (per label) or softmax (over ``num_labels + 1`` classes) of :meth:`prediction`."""
        logits = self.prediction(level, output)
        return torch.softmax(logits, dim=1) if self.activation == "softmax" else torch.sigmoid(logits)

    def forward_tree(
        self, inputs: Sequence[Tensor], relative: Sequence[Tensor], parent: Sequence[Tensor]
    ) -> list[Tensor]:
        """Outputs of every level for per-level ``inputs``, ``relative`` matrices and ``parent`` indices."""
        device = next(self.parameters()).device
        outputs = [self.forward_level(0, inputs[0].to(device), None)]
        for n in range(1, self.depth):
            cropped = self.crop_parent(n, outputs[-1], relative[n], parent[n])
            outputs.append(self.forward_level(n, inputs[n].to(device), cropped))
        return outputs

    def forward(self, patchset: PatchSet) -> list[Tensor]:
        """Outputs ``[X_0, ..., X_{D-1}]`` of a sampled patch set."""
        levels = patchset.levels
        return self.forward_tree(
            [lv.inputs for lv in levels], [lv.relative for lv in levels], [lv.parent for lv in levels]
        )


def block_creator(m: ModelParams) -> BlockCreator:
    """The settings' ``blockCreator``: the researcher's function imported by name with its ``kwargs``
    bound, or the default U-Net blocks of ``block_features`` .. ``block_max_features``, ``block_stages``."""
    if m.blockCreator is None:
        return UNetBlocks(m.block_features, m.block_max_features, m.block_stages)
    return functools.partial(m.blockCreator.load("blockCreator"), **m.blockCreator.kwargs)


def final_block(m: ModelParams, channels: int, ndim: int) -> nn.Module | None:
    """The settings' ``finalBlock`` for ``channels`` output channels (imported by name), or ``None``."""
    if m.finalBlock is None:
        return None
    block = m.finalBlock.load("finalBlock")(channels, ndim, **m.finalBlock.kwargs)
    if not isinstance(block, nn.Module):
        raise PatchworkError(
            f"finalBlock {m.finalBlock.target} returned {type(block).__name__}, no nn.Module"
        )
    return block


def build_model(params: DNPParams, in_channels: int) -> PatchWorkModel:
    """The :class:`PatchWorkModel` (untrained) that ``params`` describe, for images of ``in_channels``
    channels, with the settings' blocks (:func:`block_creator`, :func:`final_block`) and the training's
    augmentation (the application's default); a setting that does not fit raises ``dnp model: ...``."""
    m = params.model
    try:
        model = PatchWorkModel(
            CropGenerator(params.crop),
            in_channels,
            blockCreator=block_creator(m),
            forward_type=m.forward_type,  # type: ignore[arg-type]
            identical_blocks=m.identical_blocks,
            intermediate_out=m.intermediate_out,
            intermediate_loss=m.intermediate_loss,
            block_out=m.block_out,
            crop_fdim=m.crop_fdim,
            finalBlock_all_levels=m.finalBlock_all_levels,
        )
        model.finalBlock = final_block(m, model.out_channels[-1], params.crop.ndim)
    except PatchworkError as err:
        raise PatchworkError(problems=[f"dnp model: {p}" for p in err.problems]) from None
    model.train_augment = params.train.augment
    model.train_independent_augmentation = params.train.independent_augmentation
    return model


def check_model(params: DNPParams) -> None:
    """Check that ``params`` describe a model that can be built (patch sizes against the blocks,
    ``block_out``, ``crop_fdim``, ...): the one check of the settings that needs torch. Builds on the meta
    device, so it allocates no memory."""
    with torch.device("meta"):
        build_model(params, in_channels=1)


def _positive(name: str, value: int, allow_zero: bool = False) -> int:
    """``value`` checked to be a positive (or, with ``allow_zero``, non-negative) int."""
    low = 0 if allow_zero else 1
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise PatchworkError(f"{name} must be an int >= {low}, got {value!r}")
    return value

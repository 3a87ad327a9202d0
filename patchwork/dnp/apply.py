"""Application of a trained patchwork to a whole image (the paper's application section).

For ``num_patches`` trees the patches are placed level by level exactly as in training
(:meth:`CropGenerator.children`: ``generate_type`` 'random' with ``branch_factor`` children per parent, or
'tree' tilings; test-time ``augment``), then the network runs coarse to fine,
``X_n = B_n([I_n, C_n])``, and the foreground probabilities of the scattered level(s) are stitched into
the output grid (:mod:`~patchwork.dnp.stitch`):

* ``lazyEval`` (:mod:`~patchwork.dnp.lazy`): only the most promising patches of a level get children;
* ``level``: ``-1`` stitches the finest level, ``k`` level ``k`` (finer levels are not evaluated),
  ``'mix'`` all levels with weight ``10^n`` for level ``n``, so where the finest level reaches it decides
  and coarser levels fill the regions it skipped;
* ``window`` ('cos' | 'cos2'): patch centres weigh more than borders; ``sparse_suppression`` ``alpha``
  scales the mean by ``n / sqrt(n^2 + 3 alpha)``;
* ``scale_to_original``: stitch into the image's own grid; otherwise into an axis-aligned grid of the
  finest voxel size divided by ``sampling_factor``;
* ``out_typ`` (:mod:`~patchwork.dnp.outtype`) encodes the result, ``ce_threshold`` is the softmax
  models' default threshold.

The per-voxel standard deviation of the overlapping outputs is the uncertainty.

**Chunks and randomness.** The whole patch geometry (all trees, every parent with its children) is drawn
first from ``generator``, then the trees are evaluated in ``num_chunks`` groups of level-0 patches, the
network seeing at most ``batch_size`` patches at once. Memory grows with one chunk's trees only (the
outputs of its coarser levels are kept for their children), and the geometry depends neither on the
chunking nor on lazyEval (lazy evaluation evaluates a subset of the same patches). Without lazyEval the
result is the same for any ``num_chunks``; with it, each chunk keeps its own best ``fraction``.

Example::

    result = apply_dnp(model, image, affine, generate_type="tree", lazyEval={"fraction": 0.5},
                       window="cos", out_typ="mask", generator=0)
    mask, probability, spread = result.output, result.probabilities, result.std
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np
import torch

from patchwork.dnp.augment import Augment
from patchwork.dnp.crop import Children, CropGenerator, GenerateType, Parents, as_generator
from patchwork.dnp.lazy import LazyEval
from patchwork.dnp.model import PatchWorkModel
from patchwork.dnp.outtype import OutType
from patchwork.dnp.resample import WINDOWS, Window
from patchwork.dnp.stitch import OutputGrid, Stitcher
from patchwork.dnp.volume import ImageLike, Volume
from patchwork.errors import PatchworkError, check_keys

Tensor = torch.Tensor
LevelChoice = int | Literal["mix"]
MIX_BASE = 10.0


@dataclass(frozen=True)
class ApplyConfig:
    """The application settings (names from the paper), validated once; see the module docstring."""

    generate_type: GenerateType = "tree"
    num_patches: int = 1
    branch_factor: int = 1
    num_chunks: int = 1
    batch_size: int = 64
    augment: Augment | None = None
    independent_augmentation: bool = False
    lazyEval: LazyEval | None = None  # noqa: N815 - the paper's name
    window: Window = None
    sparse_suppression: float = 0.0
    scale_to_original: bool = True
    sampling_factor: float = 1.0
    level: LevelChoice = -1
    ce_threshold: float = 0.5
    out_typ: OutType = OutType()

    def __post_init__(self) -> None:
        augment = None if self.augment is None else Augment.from_value(self.augment)
        object.__setattr__(self, "augment", None if augment == Augment() else augment)
        object.__setattr__(self, "lazyEval", LazyEval.from_value(self.lazyEval))
        object.__setattr__(self, "out_typ", OutType.parse(self.out_typ))
        for name in ("num_chunks", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PatchworkError(f"{name} must be a positive int, got {value!r}")
        if self.window not in WINDOWS:
            raise PatchworkError(f"window must be one of {WINDOWS}, got {self.window!r}")
        if not isinstance(self.sparse_suppression, (int, float)) or self.sparse_suppression < 0:
            raise PatchworkError(f"sparse_suppression must be a number >= 0, got {self.sparse_suppression!r}")
        if not isinstance(self.sampling_factor, (int, float)) or self.sampling_factor <= 0:
            raise PatchworkError(f"sampling_factor must be a number > 0, got {self.sampling_factor!r}")
        if self.level != "mix" and (isinstance(self.level, bool) or not isinstance(self.level, int)):
            raise PatchworkError(f"level must be an int or 'mix', got {self.level!r}")
        if not isinstance(self.ce_threshold, (int, float)) or not 0.0 <= self.ce_threshold <= 1.0:
            raise PatchworkError(f"ce_threshold must be in [0, 1], got {self.ce_threshold!r}")

    @classmethod
    def from_value(cls, value: object, **overrides: Any) -> ApplyConfig:
        """Settings from an :class:`ApplyConfig` or a dictionary of its fields (a checkpoint's ``apply``
        section, :class:`~patchwork.dnp.params.DNPParams`), with ``overrides``.

        ``sparse_suppression=None`` means 0.
        """
        if isinstance(value, ApplyConfig):
            if not overrides:
                return value
            base = {f.name: getattr(value, f.name) for f in fields(value)}
        elif isinstance(value, Mapping) or value is None:
            base = dict(value or {})
        else:
            raise PatchworkError(f"apply settings must be a mapping, got {type(value).__name__}")
        merged = {**base, **overrides}
        if merged.get("sparse_suppression") is None:
            merged["sparse_suppression"] = 0.0
        check_keys(merged, (f.name for f in fields(cls)), "application settings")
        return cls(**merged)

    def check(self, cropper: CropGenerator) -> list[int]:
        """Check these settings against a patchwork's ``cropper``; return the levels stitched into the
        output (:meth:`scattered`)."""
        cropper.check_sampling(self.num_patches, self.generate_type, self.branch_factor)
        if self.augment is not None:
            self.augment.check(cropper.config.ndim)
        return self.scattered(cropper.config.depth)

    def scattered(self, depth: int) -> list[int]:
        """The levels stitched into the output (checks ``level`` against ``depth``)."""
        if self.level == "mix":
            return list(range(depth))
        if not -depth <= self.level < depth:
            raise PatchworkError(f"level {self.level} does not exist in a patchwork of depth {depth}")
        return [self.level % depth]


@dataclass(frozen=True)
class DNPResult:
    """The stitched foreground ``probabilities`` [L, *S] (float32), their per-voxel standard deviation
    ``std`` [L, *S], the number of outputs ``count`` [*S] each voxel received, the ``affine`` (world <-
    voxel) of the output grid, the ``output`` encoded by ``out_typ`` and ``patches_per_level``, the number
    of patches the network evaluated per level."""

    probabilities: Tensor
    std: Tensor
    count: Tensor
    affine: Tensor
    output: Tensor
    patches_per_level: tuple[int, ...]


def foreground(model: PatchWorkModel, level: int, output: Tensor) -> Tensor:
    """Foreground probabilities [N, L, *s] of a level output: all sigmoid channels, or the softmax
    classes without the background class 0."""
    probabilities = model.probabilities(level, output)
    return probabilities[:, 1:] if model.activation == "softmax" else probabilities


def draw_geometry(
    cropper: CropGenerator, volume: Volume, config: ApplyConfig, levels: int, generator: torch.Generator
) -> list[Children]:
    """The full patch geometry of ``levels`` levels: every parent with its children, drawn coarse to fine.

    Children of parent ``p`` at level ``n`` are ``p * k_n + [0, k_n)`` (``k_n`` children per parent).
    """
    parents = Parents.of_image(volume.grid)
    geometry = []
    for n in range(levels):
        children = cropper.children(
            volume,
            n,
            parents,
            generate_type=config.generate_type,
            per_parent=config.num_patches if n == 0 else config.branch_factor,
            augment=config.augment,
            independent_augmentation=config.independent_augmentation,
            generator=generator,
        )
        geometry.append(children)
        parents = children.as_parents()
    return geometry


def apply_dnp(
    model: PatchWorkModel,
    image: ImageLike,
    affine: Tensor | np.ndarray | None = None,
    config: ApplyConfig | Mapping[str, Any] | None = None,
    *,
    generator: torch.Generator | int | None = None,
    device: torch.device | str | None = None,
    **settings: Any,
) -> DNPResult:
    """Apply ``model`` to ``image`` (``[C, *spatial]`` with ``affine``, or a nibabel image).

    ``config`` and the keyword ``settings`` (which win) are :class:`ApplyConfig` fields; ``generator`` (a
    ``torch.Generator`` or a seed) makes every random choice; ``device`` defaults to the model's.
    """
    config = ApplyConfig.from_value(config, **settings)
    cropper = model.cropper
    scattered = config.check(cropper)
    last = max(scattered)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    volume = cropper.prepare(image, affine=None if affine is None else torch.as_tensor(affine), device=device)
    geometry = draw_geometry(cropper, volume, config, last + 1, as_generator(generator))
    grid = OutputGrid.of_image(volume.grid)
    if not config.scale_to_original:
        grid = OutputGrid.covering(volume.grid, volume.voxel_sizes[-1] / config.sampling_factor)
    evaluated = [0] * (last + 1)
    stitchers: list[Stitcher] = []

    def stitch(level: int, output: Tensor, out_matrices: Tensor) -> None:
        """Stitch a level's foreground probabilities (creating the stitcher on first use)."""
        probabilities = foreground(model, level, output)
        if not stitchers:
            window, interp = config.window, cropper.config.scatter_type
            stitchers.append(Stitcher(grid, probabilities.shape[1], window, interp, device))
        stitchers[0].add(probabilities, out_matrices, MIX_BASE**level if config.level == "mix" else 1.0)

    model.eval()
    with torch.inference_mode():
        for roots in torch.tensor_split(torch.arange(len(geometry[0])), config.num_chunks):
            if len(roots) == 0:  # more chunks than trees
                continue
            alive, kept_output, local_parent = roots, None, None
            for n in range(last + 1):
                children, outputs, scores = geometry[n], [], []
                for batch in torch.split(torch.arange(len(alive)), config.batch_size):
                    inputs, _ = cropper.crop_patches(volume, n, children.matrices[alive[batch]])
                    parent = None
                    if n > 0:
                        relative = children.relative[alive[batch]]
                        parent = model.crop_parent(n, kept_output, relative, local_parent[batch])
                    output = model.forward_level(n, inputs.to(device), parent)
                    if n in scattered:
                        stitch(n, output, children.out_matrices[alive[batch]])
                    if n < last:
                        outputs.append(output)
                    if n < last and config.lazyEval is not None:
                        scores.append(attention(model, config.lazyEval, n, output).cpu())
                evaluated[n] += len(alive)
                if n == last:
                    break
                keep = config.lazyEval.keep(torch.cat(scores)) if scores else torch.arange(len(alive))
                per_parent = len(geometry[n + 1]) // len(children)
                kept_output = torch.cat(outputs)[keep.to(device)]
                alive = (alive[keep][:, None] * per_parent + torch.arange(per_parent)).reshape(-1)
                local_parent = torch.arange(len(keep)).repeat_interleave(per_parent)
    return _result(model, stitchers[0], config, tuple(evaluated))


def attention(model: PatchWorkModel, lazy: LazyEval, level: int, output: Tensor) -> Tensor:
    """Evidence scores [N] of a level's patches: ``reduceFun(attentionFun(prediction logits))``."""
    if lazy.attentionFun is None:
        return lazy.scores(foreground(model, level, output))
    return lazy.scores(lazy.attentionFun(model.prediction(level, output)))


def _result(
    model: PatchWorkModel, stitcher: Stitcher, config: ApplyConfig, evaluated: tuple[int, ...]
) -> DNPResult:
    """Collect the stitched sums into a :class:`DNPResult` and encode ``out_typ``."""
    probabilities = stitcher.mean(config.sparse_suppression)
    threshold = config.ce_threshold if model.activation == "softmax" else 0.5
    output = config.out_typ.encode(
        probabilities, threshold, label_values(model.cropper, probabilities.shape[0])
    )
    return DNPResult(
        probabilities=probabilities,
        std=stitcher.std(),
        count=stitcher.count(),
        affine=stitcher.grid.affine,
        output=output,
        patches_per_level=evaluated,
    )


def label_values(cropper: CropGenerator, count: int) -> Sequence[int]:
    """The label value of each foreground channel: ``categorial_label``, else ``1 .. count``."""
    values = cropper.config.categorial_label
    return tuple(values) if values is not None else tuple(range(1, count + 1))

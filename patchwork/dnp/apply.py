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

The settings are an :class:`~patchwork.dnp.settings.ApplyConfig` (its defaults: 4 trees with random
rotations, ``dphi`` 0.2, and cosine windows). The per-voxel standard deviation of the overlapping outputs
is the uncertainty.

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
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from patchwork.dnp.crop import Children, CropGenerator, Parents, as_generator
from patchwork.dnp.lazy import attention_function, keep, scores
from patchwork.dnp.model import PatchWorkModel
from patchwork.dnp.outtype import encode
from patchwork.dnp.settings import ApplyConfig, LazyEval
from patchwork.dnp.stitch import OutputGrid, Stitcher
from patchwork.dnp.volume import ImageLike, Volume

Tensor = torch.Tensor
MIX_BASE = 10.0


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

    ``config`` (an :class:`~patchwork.dnp.settings.ApplyConfig` or its plain mapping; ``None``: the defaults)
    and the keyword ``settings`` (the paper's names, which win); ``generator`` (a ``torch.Generator`` or a
    seed) makes every random choice; ``device`` defaults to the model's.
    """
    config = ApplyConfig.from_value(config, **settings)
    cropper = model.cropper
    scattered = config.check(cropper.config)
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
                children, outputs, evidence = geometry[n], [], []
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
                        evidence.append(attention(model, config.lazyEval, n, output).cpu())
                evaluated[n] += len(alive)
                if n == last:
                    break
                kept = keep(config.lazyEval, torch.cat(evidence)) if evidence else torch.arange(len(alive))
                per_parent = len(geometry[n + 1]) // len(children)
                kept_output = torch.cat(outputs)[kept.to(device)]
                alive = (alive[kept][:, None] * per_parent + torch.arange(per_parent)).reshape(-1)
                local_parent = torch.arange(len(kept)).repeat_interleave(per_parent)
    return _result(model, stitchers[0], config, tuple(evaluated))


def attention(model: PatchWorkModel, lazy: LazyEval, level: int, output: Tensor) -> Tensor:
    """Evidence scores [N] of a level's patches: ``reduceFun(attentionFun(prediction logits))``."""
    function = attention_function(lazy)
    if function is None:
        return scores(lazy, foreground(model, level, output))
    return scores(lazy, function(model.prediction(level, output)))


def _result(
    model: PatchWorkModel, stitcher: Stitcher, config: ApplyConfig, evaluated: tuple[int, ...]
) -> DNPResult:
    """Collect the stitched sums into a :class:`DNPResult` and encode ``out_typ``."""
    probabilities = stitcher.mean(config.sparse_suppression)
    threshold = config.ce_threshold if model.activation == "softmax" else 0.5
    output = encode(
        config.output_type, probabilities, threshold, label_values(model.cropper, probabilities.shape[0])
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
    return values if values is not None else tuple(range(1, count + 1))

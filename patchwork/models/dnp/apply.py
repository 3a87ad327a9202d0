"""Application of a trained patchwork to a whole image (the paper's application section).

Coarse to fine, each level's patches are placed from what the level above found, the network runs on them,
``X_n = B_n([I_n, C_n])``, and the foreground probabilities of the scattered level(s) are stitched into
the output grid (:mod:`~.stitch`):

* level 0: ``num_patches`` roots, uniform in the image (``generate_type`` 'random') or ``num_patches``
  tilings of the image ('tree'; the first exact, so the image is covered, the others jittered);
* ``lazyEval`` (:mod:`~.lazy`): only the most promising patches of a level get children;
* children: 'tree' tiles every kept parent; 'random' draws ``branch_factor`` children per kept parent
  *where the parent's output points* -- a child centre at parent output voxel ``v`` (inside the image)
  with probability ``(p(v) + explore) / sum_v' (p(v') + explore)``, ``p`` the parent's largest foreground
  probability (as the authors' ``sort_score`` weights a child by its parent's probability; ``explore``
  mixes in the uniform draw, 0 follows the probability alone). Without intermediate losses the coarse
  probabilities are untrained and children are drawn uniformly;
* test-time ``augment``: by default the training's (the paper's default), ``{}`` switches it off;
* ``num_chunks``: the whole process is repeated that many times into the same sums (the paper's repeats
  for robustness and coverage); ``max_trees`` level-0 trees at most are held in memory at once and
  ``batch_size`` patches go through the network at once (memory only);
* ``level``: ``-1`` stitches the finest level, ``k`` level ``k`` (finer levels are not evaluated),
  ``'mix'`` all levels with weight ``10^n`` for level ``n``, so where the finest level reaches it decides
  and coarser levels fill the regions it skipped (lazyEval, ``level`` and ``'mix'`` need a model trained
  with ``intermediate_loss``);
* ``window`` ('cos' | 'cos2'): patch centres weigh more than borders; ``sparse_suppression`` ``alpha``
  scales the mean by ``n / sqrt(n^2 + 3 alpha)``;
* ``scale_to_original``: stitch into the image's grid (voxels ``sampling_factor`` times smaller along each
  axis); otherwise into an axis-aligned grid of the finest voxel size divided by ``sampling_factor``;
* ``out_typ`` (:mod:`~.outtype`) encodes the result, ``ce_threshold`` is the softmax
  models' default threshold.

The per-voxel standard deviation of the overlapping outputs is the uncertainty. ``coverage`` is the
fraction of output voxels that received an output; below 1 without lazyEval a warning says so (those
voxels read probability 0). Every random draw comes from ``generator``, in the order the trees are
evaluated, so ``max_trees`` changes the draws (not their distribution).

Example::

    result = apply_dnp(model, image, affine, generate_type="random", branch_factor=2,
                       lazyEval={"fraction": 0.5}, window="cos", out_typ="mask", generator=0)
    mask, probability, spread = result.output, result.probabilities, result.std
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from patchwork.models.dnp.apply_settings import DNPApply, LazyEval
from patchwork.models.dnp.crop import Children, CropGenerator, Parents, as_generator
from patchwork.models.dnp.geometry import patch_coordinates
from patchwork.models.dnp.grid import ImageGrid
from patchwork.models.dnp.lazy import attention_function, keep, scores
from patchwork.models.dnp.model import PatchWorkModel
from patchwork.models.dnp.outtype import encode
from patchwork.models.dnp.placement import driven
from patchwork.models.dnp.settings import Augment
from patchwork.models.dnp.stitch import OutputGrid, Stitcher
from patchwork.models.dnp.volume import ImageLike, Volume

log = logging.getLogger(__name__)

Tensor = torch.Tensor
MIX_BASE = 10.0


@dataclass(frozen=True)
class DNPResult:
    """The stitched foreground ``probabilities`` [L, *S] (float32), their per-voxel standard deviation
    ``std`` [L, *S], the number of outputs ``count`` [*S] each voxel received, the ``affine`` (world <-
    voxel) of the output grid, the ``output`` encoded by ``out_typ``, ``patches_per_level``, the number
    of patches the network evaluated per level, and ``coverage``, the fraction of voxels with
    ``count > 0``."""

    probabilities: Tensor
    std: Tensor
    count: Tensor
    affine: Tensor
    output: Tensor
    patches_per_level: tuple[int, ...]
    coverage: float


@dataclass(frozen=True)
class Run:
    """What every tree of one application shares: the model, the prepared image, the settings, the
    resolved test-time augmentation, the last evaluated level, the stitched levels and the stitcher."""

    model: PatchWorkModel
    volume: Volume
    config: DNPApply
    augment: Augment | None
    independent: bool
    last: int
    scattered: list[int]
    stitcher: Stitcher
    generator: torch.Generator
    device: torch.device

    def children(self, level: int, parents: Parents, per_parent: int, positions: Tensor | None) -> Children:
        """Place level ``level``'s children of ``parents`` with this run's settings."""
        return self.model.cropper.children(
            self.volume,
            level,
            parents,
            generate_type=self.config.generate_type,  # type: ignore[arg-type]
            per_parent=per_parent,
            augment=self.augment,
            independent_augmentation=self.independent,
            generator=self.generator,
            positions=positions,
        )


def foreground(model: PatchWorkModel, level: int, output: Tensor) -> Tensor:
    """Foreground probabilities [N, L, *s] of a level output: all sigmoid channels, or the softmax
    classes without the background class 0."""
    probabilities = model.probabilities(level, output)
    return probabilities[:, 1:] if model.activation == "softmax" else probabilities


def output_grid(grid: ImageGrid, config: DNPApply, finest_voxel: Tensor) -> OutputGrid:
    """The stitching grid: the image's (refined by ``sampling_factor``) or an axis-aligned one."""
    if config.scale_to_original:
        return OutputGrid.of_image(grid).refined(config.sampling_factor)
    return OutputGrid.covering(grid, finest_voxel / config.sampling_factor)


def apply_dnp(
    model: PatchWorkModel,
    image: ImageLike,
    affine: Tensor | np.ndarray | None = None,
    config: DNPApply | Mapping[str, Any] | None = None,
    *,
    generator: torch.Generator | int | None = None,
    device: torch.device | str | None = None,
    **settings: Any,
) -> DNPResult:
    """Apply ``model`` to ``image`` (``[C, *spatial]`` with ``affine``, or a nibabel image).

    ``config`` (an :class:`~.settings.DNPApply` or its plain mapping; ``None``: the defaults)
    and the keyword ``settings`` (the paper's names, which win); ``generator`` (a ``torch.Generator`` or a
    seed) makes every random choice; ``device`` defaults to the model's.
    """
    config = DNPApply.from_value(config, **settings)
    cropper = model.cropper
    scattered = config.check(cropper.config, model.intermediate_loss)
    augment, independent = config.augmentation(model.train_augment, model.train_independent_augmentation)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    volume = cropper.prepare(image, affine=None if affine is None else torch.as_tensor(affine), device=device)
    grid = output_grid(volume.grid, config, volume.voxel_sizes[-1])
    stitcher = Stitcher(grid, model.num_labels, config.window, cropper.config.scatter_type, device)
    run = Run(
        model,
        volume,
        config,
        augment,
        independent,
        max(scattered),
        scattered,
        stitcher,
        as_generator(generator),
        device,
    )
    evaluated = [0] * (run.last + 1)
    model.eval()
    with torch.inference_mode():
        for _ in range(config.num_chunks):
            roots = run.children(0, Parents.of_image(volume.grid), config.num_patches, None)
            for group in torch.split(torch.arange(len(roots)), config.max_trees or len(roots)):
                _evaluate_trees(run, roots.select(group), evaluated)
    return _result(run, tuple(evaluated))


def _evaluate_trees(run: Run, children: Children, evaluated: list[int]) -> None:
    """Evaluate trees from their level-0 patches ``children`` down to the last level, stitching on the way."""
    model, config, cropper = run.model, run.config, run.model.cropper
    parent_output: Tensor | None = None
    statistics = None
    if cropper.config.normalize_input == "tree_m0s1":
        statistics = cropper.tree_statistics(run.volume, children.matrices)
    for n in range(run.last + 1):
        outputs = []
        for batch in torch.split(torch.arange(len(children)), config.batch_size):
            tree = None if statistics is None else statistics[batch]
            inputs, _ = cropper.crop_patches(run.volume, n, children.matrices[batch], tree)
            parent = None
            if parent_output is not None:
                parent = model.crop_parent(n, parent_output, children.relative[batch], children.parent[batch])
            output = model.forward_level(n, inputs.to(run.device), parent)
            if n in run.scattered:
                weight = MIX_BASE**n if config.level == "mix" else 1.0
                run.stitcher.add(foreground(model, n, output), children.out_matrices[batch], weight)
            if n < run.last:
                outputs.append(output)
        evaluated[n] += len(children)
        if n == run.last:
            return
        output = torch.cat(outputs)
        kept = torch.arange(len(children))
        if config.lazyEval is not None:
            kept = keep(config.lazyEval, attention(model, config.lazyEval, n, output).cpu())
        parent_output = output[kept.to(output.device)]
        positions = None
        per_parent = 1 if config.generate_type == "tree" else config.branch_factor
        if config.generate_type == "random":
            weights = placement_weights(run, n, parent_output, children.out_matrices[kept])
            positions = driven(weights.cpu(), per_parent, run.generator)
        children = run.children(n + 1, children.as_parents(kept), per_parent, positions)
        if statistics is not None:
            statistics = statistics[kept][children.parent]


def placement_weights(run: Run, level: int, output: Tensor, out_matrices: Tensor) -> Tensor:
    """Weights [P, *o] of the parents' output voxels for drawing their children: ``inside (p + explore)``
    (``inside`` where the voxel lies in the image; untrained coarse levels and all-zero rows: ``inside``,
    then uniform)."""
    model, grid = run.model, run.volume.grid
    shape = tuple(output.shape[2:])
    voxels = patch_coordinates(grid.voxel_from(out_matrices), shape, output.device)
    upper = torch.tensor(grid.shape, dtype=voxels.dtype, device=voxels.device) - 0.5
    inside = ((voxels >= -0.5) & (voxels <= upper)).all(dim=-1).to(torch.float64)
    if not model.intermediate_loss:
        weights = inside
    else:
        probability = foreground(model, level, output).amax(dim=1).to(torch.float64)
        weights = inside * (probability + run.config.explore)
    for fallback in (inside, torch.ones_like(inside)):
        empty = weights.flatten(1).sum(dim=1) <= 0
        weights = torch.where(empty.view(-1, *[1] * len(shape)), fallback, weights)
    return weights


def attention(model: PatchWorkModel, lazy: LazyEval, level: int, output: Tensor) -> Tensor:
    """Evidence scores [N] of a level's patches: ``reduceFun(attentionFun(prediction logits))``."""
    function = attention_function(lazy)
    if function is None:
        return scores(lazy, foreground(model, level, output))
    return scores(lazy, function(model.prediction(level, output)))


def _result(run: Run, evaluated: tuple[int, ...]) -> DNPResult:
    """Collect the stitched sums into a :class:`DNPResult`, encode ``out_typ`` and report the coverage."""
    model, config, stitcher = run.model, run.config, run.stitcher
    probabilities = stitcher.mean(config.sparse_suppression)
    threshold = config.ce_threshold if model.activation == "softmax" else 0.5
    output = encode(
        config.output_type, probabilities, threshold, label_values(model.cropper, probabilities.shape[0])
    )
    count = stitcher.count()
    coverage = float((count > 0).float().mean())
    if coverage < 1.0 and config.lazyEval is None:
        log.warning(
            "DNP application: %.2f%% of the output voxels received no patch output (probability 0 there); "
            "use generate_type='tree', more num_patches or num_chunks",
            100.0 * (1.0 - coverage),
        )
    return DNPResult(
        probabilities=probabilities,
        std=stitcher.std(),
        count=count,
        affine=stitcher.grid.affine,
        output=output,
        patches_per_level=evaluated,
        coverage=coverage,
    )


def label_values(cropper: CropGenerator, count: int) -> Sequence[int]:
    """The label value of each foreground channel: ``categorial_label``, else ``1 .. count``."""
    values = cropper.config.categorial_label
    return values if values is not None else tuple(range(1, count + 1))

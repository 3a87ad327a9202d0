"""Training of a Deep Neural Patchwork: the paper's two nested loops, hard mining, exact resume.

Outer iteration ``it`` (``num_its`` of them) draws ``num_patches`` trees (one patch per level, nested) from
every training image with ``CropGenerator.sample(generate_type='random', augment, balance)`` into a
:class:`TreeSet`, adds the hard-mining pool kept from the previous set (:mod:`.hardmining`), and runs the
inner loop: ``epochs`` shuffled passes in batches of ``batch_size``, one AdamW step per batch at

    lr_it = learning_rate(lr, it, num_its, lr_schedule, warmup_its) * lr_decay ** it

(:mod:`patchwork.training.schedule`: a linear warm-up over ``warmup_its``, then constant, poly or cosine
decay over the outer iterations; ``lr_decay`` < 1 adds the authors' exponential decay). These are the
defaults: :func:`train_dnp` also takes a researcher's own optimiser, scheduler and loss callables.

The batch loss of level ``n`` is :func:`~.loss.level_loss` of its prediction channels against
its label patch (``loss`` per level; don't-care voxels are masked); the optimised loss is their mean
(``intermediate_loss``) or the finest level's alone. Gradients flow from a level into its parent through
the crop ``C_n``.

Every random draw is a function of ``(seed, iteration, stream)`` (:mod:`patchwork.training.seeding`): the tree
set of iteration ``it`` does not depend on training, so with ``parallel`` a spawned worker process crops set
``it + 1`` while set ``it`` trains and returns the very trees the serial loop would draw (a script that calls
:func:`train_dnp` with ``parallel`` must guard its own code by ``if __name__ == "__main__":``, as spawn
re-imports it). A checkpoint
(weights, AdamW state, hard-mining pool, log rows) is written atomically every ``checkpoint_every`` outer
iterations; a run restarted with the same arguments resumes there and ends with bitwise the weights of an
uninterrupted run on CPU (no RNG state needs saving). ``train_log.tsv`` gets one row per outer iteration
(losses per level, total, lr, seconds, patches, hard-mined trees, validation loss and Dice of the finest
level on fixed validation trees), plotted in ``curve.png``.

Labels are integer maps ``[*S]`` (0 background); with one label the foreground is ``label > 0``, with
``categorial_label`` channel ``i`` is ``label == categorial_label[i]``, with ``num_labels = L > 1`` and no
``categorial_label`` the values ``1..L``. Or they are label channels ``[L, *S]`` of 0/1 (the paper's label
array with one channel per label, ``num_labels = L``), which may overlap (sigmoid heads; a softmax head,
``categorical``, needs disjoint labels). NaN or negative values are don't-care voxels (``dontcare``; a
voxel that is don't-care in one channel gives no loss in any).
2D images are ``[C, X, Y]`` with a 3×3 affine (a 4×4 NIfTI affine is reduced to its x/y rows and columns).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.lr_scheduler import LRScheduler
from tqdm import tqdm

from patchwork.errors import PatchworkError
from patchwork.models.dnp.crop import CropGenerator
from patchwork.models.dnp.grid import reduce_affine
from patchwork.models.dnp.hardmining import hardness, select_hard
from patchwork.models.dnp.loss import ConfiguredLoss, LevelLoss, patch_f1, patch_scores
from patchwork.models.dnp.model import PatchWorkModel, build_model, check_model
from patchwork.models.dnp.patchset import PatchSet
from patchwork.models.dnp.settings import CropConfig, DNPParams, TrainParams
from patchwork.models.dnp.volume import Volume
from patchwork.networks import init_weights
from patchwork.ondemand import Mapped, position
from patchwork.training.cases import BoundedCache
from patchwork.training.modelfile import (
    content_digest,
    finished_model,
    read_checkpoint,
    read_model,
    resolve_device,
    write_model_file,
)
from patchwork.training.schedule import learning_rate
from patchwork.training.seeding import (
    STREAM_INIT,
    STREAM_PATCHES,
    STREAM_VALIDATION,
    numpy_rng,
    torch_generator,
)
from patchwork.training.trainlog import plot_curve, write_train_log

log = logging.getLogger(__name__)

Tensor = torch.Tensor
OptimizerFactory = Callable[[Iterator[torch.nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], LRScheduler]
# version 2: the training settings are stored once (``params``, without ``apply``), with ``in_channels``
MODEL_FORMAT, CHECKPOINT_FORMAT, VERSION = "patchwork-dnp", "patchwork-dnp-checkpoint", 2
CHECKPOINT_VERSION = 3  # 3: with the learning-rate scheduler's state
STREAM_SHUFFLE = 5
STREAM_CASES, STREAM_VALIDATION_CASES = 6, 7  # which images a set draws from (``cases_per_iteration``)
CHANNELS_LAST = {2: torch.channels_last, 3: torch.channels_last_3d}


@dataclass
class TreeSet:
    """``N`` trees of one patch per level: per level ``inputs`` [N, C, *s], ``labels`` [N, L, *o] (NaN =
    don't care) and ``relative`` matrices [N, d+1, d+1] (child voxel -> parent voxel); ``age`` [N] counts
    how often hard mining kept a tree. Tree ``i`` of level ``n`` is the child of tree ``i`` of level
    ``n-1``."""

    inputs: list[Tensor]
    labels: list[Tensor]
    relative: list[Tensor]
    age: Tensor

    def __len__(self) -> int:
        return self.age.shape[0]

    @classmethod
    def from_patchset(cls, patches: PatchSet) -> TreeSet:
        """The trees of a patch set drawn with ``branch_factor`` 1."""
        levels = patches.levels
        return cls(
            [lv.inputs for lv in levels],
            [lv.labels for lv in levels],  # type: ignore[misc]
            [lv.relative for lv in levels],
            torch.zeros(len(patches), dtype=torch.long),
        )

    @classmethod
    def cat(cls, sets: Sequence[TreeSet]) -> TreeSet:
        """The trees of ``sets`` one after the other."""
        depth = len(sets[0].inputs)
        join = [
            [torch.cat([getattr(s, name)[n] for s in sets]) for n in range(depth)]
            for name in ("inputs", "labels", "relative")
        ]
        return cls(*join, torch.cat([s.age for s in sets]))

    def select(self, index: Tensor) -> TreeSet:
        """The trees at ``index``."""
        return TreeSet(
            [x[index] for x in self.inputs],
            [x[index] for x in self.labels],
            [x[index] for x in self.relative],
            self.age[index],
        )

    def state(self) -> dict[str, Any]:
        """A ``weights_only``-safe dict (see :meth:`from_state`)."""
        return {"inputs": self.inputs, "labels": self.labels, "relative": self.relative, "age": self.age}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TreeSet:
        return cls(state["inputs"], state["labels"], state["relative"], state["age"])


@dataclass(frozen=True)
class Case:
    """One training image: ``image`` [C, *S] float32, ``targets`` [L, *S] (NaN = don't care), ``affine``."""

    image: Tensor
    targets: Tensor
    affine: Tensor


def channel_targets(values: Tensor, care: Tensor, crop: CropConfig) -> Tensor:
    """Label channels ``[L, *S]`` given as such (0/1, NaN where not ``care``), checked against ``crop``:
    ``L`` labels, no ``categorial_label`` (that maps one integer map), no overlap for a softmax head."""
    count = values.shape[0]
    if crop.categorial_label is not None:
        raise PatchworkError(f"categorial_label picks values of one label map, got {count} label channels")
    if count != crop.label_count:
        raise PatchworkError(f"labels have {count} channels, the model {crop.label_count} (set num_labels)")
    if bool(((values[care] != 0) & (values[care] != 1)).any()):
        raise PatchworkError("label channels must hold 0 or 1 (NaN or -1 for don't care)")
    if crop.categorical and bool(((values == 1) & care).sum(dim=0).gt(1).any()):
        raise PatchworkError(
            "categorical (softmax) labels must not overlap; overlapping ones need sigmoid heads"
        )
    return torch.where(care, values, float("nan")).float()


def label_targets(label: np.ndarray, crop: CropConfig, dontcare: bool) -> Tensor:
    """Label channels ``[L, *S]`` (NaN = don't care) of an integer label map ``[*S]`` or of label channels
    ``[L, *S]`` (see the module docstring)."""
    values = torch.as_tensor(np.asarray(label, dtype=np.float64))
    care = torch.isfinite(values) & (values >= 0)
    if not dontcare and not bool(care.all()):
        raise PatchworkError("labels contain NaN or negative values but dontcare is off")
    if values.ndim == crop.ndim + 1:
        return channel_targets(values, care, crop)
    if bool((values[care] != values[care].round()).any()):
        raise PatchworkError("labels must be integers (NaN or -1 for don't care)")
    count = crop.label_count
    picks = crop.categorial_label or (tuple(range(1, count + 1)) if count > 1 else None)
    channels = (values > 0)[None] if picks is None else torch.stack([values == v for v in picks])
    channels = channels.float()
    channels[:, ~care] = float("nan")
    return channels


def make_case(
    image: np.ndarray, label: np.ndarray, affine: np.ndarray, crop: CropConfig, dontcare: bool
) -> Case:
    """The :class:`Case` of one image (read-only arrays, e.g. memory-mapped ones, are copied; others are
    shared)."""
    targets = label_targets(label, crop, dontcare)
    matrix = reduce_affine(torch.as_tensor(np.asarray(affine)), crop.ndim)
    data = np.ascontiguousarray(image, dtype=np.float32)
    return Case(torch.from_numpy(data if data.flags.writeable else data.copy()), targets, matrix)


class CaseList(Sequence[Case]):
    """Checked cases (:func:`check_cases`), each built when indexed from its image, label map and affine
    (lists of arrays or lazily read sequences, :class:`patchwork.training.cases.LazyCases`), so only the
    cases in use are in memory. Pickles as its sources: a worker process builds its own."""

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        affines: Sequence[np.ndarray],
        crop: CropConfig,
        dontcare: bool,
    ) -> None:
        self.images, self.labels, self.affines = images, labels, affines
        self.crop, self.dontcare = crop, dontcare

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Case:  # type: ignore[override]
        at = position(index, len(self))
        return make_case(self.images[at], self.labels[at], self.affines[at], self.crop, self.dontcare)


def check_cases(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    affines: Sequence[np.ndarray],
    params: DNPParams,
    what: str,
) -> CaseList:
    """Validate images ``[C, *S]`` (``ndim`` spatial axes), label maps ``[*S]`` (or label channels
    ``[L, *S]``) and affines, one case at a time; return the cases, built when used (:class:`CaseList`)."""
    ndim = params.crop.ndim
    if not images or not (len(images) == len(labels) == len(affines)):
        raise PatchworkError(f"{what} set: need as many images, label maps and affines (at least one)")
    channels = images[0].shape[0]
    for i, (image, label, affine) in enumerate(zip(images, labels, affines, strict=True)):
        name = f"{what} case {i}"
        if image.ndim != ndim + 1 or image.shape[0] != channels:
            raise PatchworkError(
                f"{name}: image shape {list(image.shape)}, expected [C, {ndim} spatial axes]"
            )
        if label.ndim not in (ndim, ndim + 1) or tuple(label.shape[-ndim:]) != tuple(image.shape[1:]):
            raise PatchworkError(
                f"{name}: label shape {list(label.shape)} differs from image {list(image.shape[1:])}"
            )
        if not np.isfinite(image).all():
            raise PatchworkError(f"{name}: image contains NaN or infinite values")
        try:  # the checks of make_case, without copying the image
            label_targets(label, params.crop, params.train.dontcare)
            reduce_affine(torch.as_tensor(np.asarray(affine)), ndim)
        except PatchworkError as err:
            raise PatchworkError(f"{name}: {err}") from None
    return CaseList(images, labels, affines, params.crop, params.train.dontcare)


def training_cropper(crop: CropConfig) -> CropGenerator:
    """The cropper that draws training trees: the configured geometry, labels given as channels."""
    return CropGenerator(dataclasses.replace(crop, categorial_label=None, categorical=False, num_labels=None))


def draw_trees(
    cropper: CropGenerator, volumes: Sequence[Volume], train: TrainParams, generator: torch.Generator
) -> TreeSet:
    """``num_patches`` random trees from every volume, one after the other, drawn from ``generator``.

    ``volumes`` may prepare each volume when indexed (:class:`PreparedVolumes`): one volume at a time is
    needed."""
    return TreeSet.cat(
        [
            TreeSet.from_patchset(
                cropper.sample(
                    volume,
                    num_patches=train.num_patches,
                    generate_type="random",
                    augment=train.augment,
                    independent_augmentation=train.independent_augmentation,
                    balance=train.balance,
                    generator=generator,
                )
            )
            for volume in volumes
        ]
    )


def volume_bytes(volume: Volume) -> int:
    """Bytes held by a prepared volume's tensors (shared storage counted once) and labelled sites."""
    tensors = [s.data for s in volume.sources] + [s.labels.data for s in volume.sources if s.labels]
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
    return sum(storages.values()) + (volume.sites.nbytes if volume.sites is not None else 0)


class PreparedVolumes(Sequence[Volume]):
    """The volumes of ``cases`` (``cropper.prepare``), prepared when indexed and kept for the most recently
    used cases up to ``max_mb`` megabytes and ``max_items`` volumes (None: no count bound;
    :class:`~patchwork.training.cases.BoundedCache`). Preparing is deterministic, so the trees never depend
    on the bounds, only the time spent preparing again: a cache smaller than the images an outer iteration
    draws from prepares them anew in every outer iteration."""

    def __init__(
        self, cropper: CropGenerator, cases: Sequence[Case], max_mb: float, max_items: int | None = None
    ) -> None:
        self.cropper, self.cases = cropper, cases
        self.cache: BoundedCache[int, Volume] = BoundedCache(
            self._prepare, max_items=max_items, max_bytes=int(max_mb * 2**20), size=volume_bytes
        )

    def _prepare(self, index: int) -> Volume:
        case = self.cases[index]
        return self.cropper.prepare(case.image, case.targets, case.affine)

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, index: int) -> Volume:  # type: ignore[override]
        return self.cache[position(index, len(self))]


def case_subset(count: int, chosen: int | None, seed: int, index: int, stream: int) -> list[int]:
    """The images a set of trees is drawn from: all ``count`` (``chosen`` None or at least ``count``), else
    ``chosen`` of them picked at random by ``(seed, index, stream)``, in ascending order."""
    if chosen is None or chosen >= count:
        return list(range(count))
    return sorted(numpy_rng(seed, index, stream).choice(count, chosen, replace=False).tolist())


def draw_set(
    cropper: CropGenerator,
    volumes: PreparedVolumes,
    train: TrainParams,
    seed: int,
    index: int,
    streams: tuple[int, int] = (STREAM_CASES, STREAM_PATCHES),
) -> TreeSet:
    """The trees of set ``index``: ``num_patches`` from each of its images (all, or ``cases_per_iteration``
    picked by ``(seed, index, streams[0])``), drawn from ``(seed, index, streams[1])``. Set ``it`` with the
    default streams holds the fresh trees of outer iteration ``it``."""
    chosen = case_subset(len(volumes), train.cases_per_iteration, seed, index, streams[0])
    generator = torch_generator(seed, index, streams[1])
    return draw_trees(cropper, Mapped(chosen, volumes.__getitem__), train, generator)


def validation_trees(
    params: DNPParams,
    images: Sequence[np.ndarray] | None,
    labels: Sequence[np.ndarray] | None,
    affines: Sequence[np.ndarray] | None,
    seed: int,
) -> TreeSet | None:
    """The fixed validation trees (``None`` without images): ``num_patches`` from each validation image
    (or from ``cases_per_iteration`` of them, picked once), each prepared when drawn and dropped after."""
    if not images:
        return None
    cases = check_cases(images, labels or [], affines or [], params, "validation")
    cropper = training_cropper(params.crop)
    volumes = PreparedVolumes(cropper, cases, max_mb=0)
    return draw_set(cropper, volumes, params.train, seed, 0, (STREAM_VALIDATION_CASES, STREAM_VALIDATION))


_WORKER: dict[str, Any] = {}


def _exit_with(parent: multiprocessing.process.BaseProcess) -> None:
    """Wait until ``parent`` has ended, then end this process at once."""
    parent.join()
    os._exit(1)


def _worker_init(crop: CropConfig, cases: Sequence[Case], train: TrainParams, seed: int) -> None:
    """Set up the cropping process (one thread: training owns the others), which prepares the volumes into
    its own bounded cache. The worker ends with the training process even when that is killed by SIGKILL
    (which runs no clean-up)."""
    threading.Thread(target=_exit_with, args=(multiprocessing.parent_process(),), daemon=True).start()
    torch.set_num_threads(1)
    cropper = CropGenerator(crop)
    volumes = PreparedVolumes(cropper, cases, train.volume_cache_mb, train.cases_per_iteration)
    _WORKER.update(cropper=cropper, volumes=volumes, train=train, seed=seed)


def _worker_draw(iteration: int) -> TreeSet:
    """The fresh trees of outer iteration ``iteration``, drawn in the worker."""
    w = _WORKER
    return draw_set(w["cropper"], w["volumes"], w["train"], w["seed"], iteration)


class Drawer:
    """Gives the fresh trees of each outer iteration, cropped here or (``parallel``) ahead in a worker; the
    prepared volumes are kept in a cache of ``volume_cache_mb`` (:class:`PreparedVolumes`), in the worker
    when parallel."""

    def __init__(self, crop: CropConfig, cases: Sequence[Case], train: TrainParams, seed: int) -> None:
        self.cropper, self.train, self.seed = training_cropper(crop), train, seed
        self.pending: dict[int, Future[TreeSet]] = {}
        self.executor: ProcessPoolExecutor | None = None
        self.volumes = PreparedVolumes(self.cropper, cases, train.volume_cache_mb, train.cases_per_iteration)
        if train.parallel:
            self.executor = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
                initargs=(self.cropper.config, cases, train, seed),
            )

    def prefetch(self, iteration: int) -> None:
        """Start cropping ``iteration``'s trees in the worker (no-op when serial)."""
        if self.executor is not None and iteration not in self.pending:
            self.pending[iteration] = self.executor.submit(_worker_draw, iteration)

    def get(self, iteration: int) -> TreeSet:
        """The fresh trees of ``iteration`` (same trees serial or parallel)."""
        if self.executor is None:
            return draw_set(self.cropper, self.volumes, self.train, self.seed, iteration)
        self.prefetch(iteration)
        return self.pending.pop(iteration).result()

    def close(self) -> None:
        if self.executor is not None:
            for future in self.pending.values():
                future.cancel()
            self.executor.shutdown(wait=True, cancel_futures=True)


@dataclass
class SetResult:
    """What the inner loop reports: mean loss per level and of the optimised total over all batches, and
    per tree the loss and finest F1 of its last-epoch batch (hard mining)."""

    level_losses: list[float]
    total: float
    tree_loss: Tensor
    tree_f1: Tensor


def _tree_outputs(model: PatchWorkModel, trees: TreeSet) -> list[Tensor]:
    """Outputs of every level for ``trees`` (tree ``i`` of each level is the parent of tree ``i`` below)."""
    index = torch.arange(len(trees))
    return model.forward_tree(trees.inputs, trees.relative, [index] * model.depth)


def train_on_set(
    model: PatchWorkModel,
    optimizer: torch.optim.Optimizer,
    trees: TreeSet,
    train: TrainParams,
    generator: torch.Generator,
    loss_fn: LevelLoss | None = None,
) -> SetResult:
    """The inner loop: ``epochs`` shuffled passes over ``trees`` in batches, one optimiser step per batch
    on ``loss_fn`` (default: the settings' :class:`~.loss.ConfiguredLoss`)."""
    device = next(model.parameters()).device
    depth, act = model.depth, model.activation
    loss_fn = loss_fn or ConfiguredLoss(act, train.losses(depth))
    supervised = range(depth) if model.intermediate_loss else range(depth - 1, depth)
    sums, total, steps = torch.zeros(depth, dtype=torch.float64), 0.0, 0
    tree_loss, tree_f1 = torch.zeros(len(trees)), torch.ones(len(trees))
    for epoch in range(train.epochs):
        order = torch.randperm(len(trees), generator=generator)
        for first in range(0, len(trees), train.batch_size):
            index = order[first : first + train.batch_size]
            batch = trees.select(index)
            outputs = _tree_outputs(model, batch)
            labels = [y.to(device) for y in batch.labels]
            losses = [loss_fn(model.prediction(n, outputs[n]), labels[n], n) for n in range(depth)]
            loss = torch.stack([losses[n] for n in supervised]).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums += torch.tensor([float(v.detach()) for v in losses], dtype=torch.float64)
            total, steps = total + float(loss.detach()), steps + 1
            if epoch == train.epochs - 1:
                with torch.no_grad():
                    per_tree = [
                        patch_scores(loss_fn, model.prediction(n, outputs[n]), labels[n], n)
                        for n in supervised
                    ]
                    tree_loss[index] = torch.stack(per_tree).mean(dim=0).cpu()
                    tree_f1[index] = patch_f1(model.prediction(depth - 1, outputs[-1]), labels[-1], act).cpu()
    return SetResult((sums / steps).tolist(), total / steps, tree_loss, tree_f1)


def label_voxels(trees: TreeSet) -> Tensor:
    """Voxels of every label in each tree's finest label patch, ``[N, L]``."""
    finest = torch.nan_to_num(trees.labels[-1], nan=0.0).clamp(min=0)
    return finest.flatten(2).sum(dim=2)


def next_pool(trees: TreeSet, result: SetResult, train: TrainParams) -> TreeSet | None:
    """The hard-mining pool for the next outer iteration (kept trees aged by one), or ``None``."""
    if train.hard_mining <= 0:
        return None
    hard = hardness(train.hard_mining_order, result.tree_loss, result.tree_f1, label_voxels(trees))
    pool = trees.select(select_hard(hard, trees.age, train.hard_mining, train.hard_mining_maxage))
    pool.age += 1
    return pool if len(pool) else None


@torch.no_grad()
def evaluate(
    model: PatchWorkModel, trees: TreeSet, train: TrainParams, loss_fn: LevelLoss | None = None
) -> tuple[float, float]:
    """Finest-level loss (``loss_fn``, default the settings') and pseudo-Dice (hard, summed over all
    trees) on fixed validation trees."""
    model.eval()
    logits, labels = [], []
    for first in range(0, len(trees), train.batch_size):
        batch = trees.select(torch.arange(first, min(first + train.batch_size, len(trees))))
        logits.append(model.prediction(model.depth - 1, _tree_outputs(model, batch)[-1]).float())
        labels.append(batch.labels[-1].to(logits[-1].device))
    model.train()
    out, target = torch.cat(logits), torch.cat(labels)
    loss_fn = loss_fn or ConfiguredLoss(model.activation, train.losses(model.depth))
    loss = loss_fn(out, target, model.depth - 1)
    dice = patch_f1(out.movedim(0, 1)[None], target.movedim(0, 1)[None], model.activation)[0]
    return float(loss), float(dice)


@dataclass
class Progress:
    """What a checkpoint restores besides weights and optimiser: iterations done, pool, log rows, time."""

    iteration: int = 0
    pool: TreeSet | None = None
    rows: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def _identity(params: DNPParams, seed: int, cases: Sequence[Case]) -> dict[str, Any]:
    """What a checkpoint or finished model must match: params, seed, data counts and a hash of the data."""
    labelled = sum(int(torch.nan_to_num(c.targets).gt(0).any(dim=0).sum()) for c in cases)
    data = [len(cases), int(cases[0].image.shape[0]), sum(c.image[0].numel() for c in cases), labelled]
    digest = content_digest(a for c in cases for a in (c.image, c.targets, c.affine))
    return {
        "params": _result_params(params, len(cases)),
        "seed": int(seed),
        "data": data,
        "data_sha256": digest,
    }


def _result_params(params: DNPParams, n_cases: int) -> dict[str, Any]:
    """The params that decide the trained weights: without ``volume_cache_mb`` (memory only: the trees do
    not depend on it) and without a ``cases_per_iteration`` that changes nothing (unset, or at least the
    ``n_cases`` training images), so models trained before these settings existed still match."""
    d = params.to_dict()
    train = {k: v for k, v in d["train"].items() if k != "volume_cache_mb"}
    chosen = train.get("cases_per_iteration")
    if chosen is None or chosen >= n_cases:
        train.pop("cases_per_iteration", None)
    return {**d, "train": train}


def _save_checkpoint(
    path: Path,
    identity: dict[str, Any],
    model: PatchWorkModel,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
    progress: Progress,
) -> None:
    """Write a resumable checkpoint (plain dict, ``weights_only``-safe) atomically."""
    obj = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        **identity,
        "iteration": progress.iteration,
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "pool": None if progress.pool is None else progress.pool.state(),
        "rows": progress.rows,
        "seconds": progress.seconds,
    }
    write_model_file(path, obj)


def _restore_checkpoint(
    path: Path,
    identity: dict[str, Any],
    model: PatchWorkModel,
    optimizer: torch.optim.Optimizer,
    scheduler: LRScheduler,
) -> Progress:
    """Load ``path`` into model, optimiser and scheduler if it exists; refuse one of another training."""
    obj = read_checkpoint(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "DNP checkpoint", identity)
    if obj is None:
        return Progress()
    model.load_state_dict(obj["state_dict"])
    optimizer.load_state_dict(obj["optimizer"])
    scheduler.load_state_dict(obj["scheduler"])
    log.info("resuming %s at outer iteration %d", path, obj["iteration"])
    pool = None if obj["pool"] is None else TreeSet.from_state(obj["pool"])
    return Progress(obj["iteration"], pool, obj["rows"], obj["seconds"])


def log_columns(depth: int) -> list[str]:
    """Columns of ``train_log.tsv``."""
    levels = [f"loss_level{n}" for n in range(depth)]
    return ["iteration", *levels, "total", "lr", "seconds", "patches", "hard_mined", "val_loss", "val_dice"]


class ConfiguredSchedule(LRScheduler):
    """The settings' schedule, stepped once per outer iteration ``it``: every parameter group's initial rate
    ``lr_0`` becomes ``learning_rate(lr_0, it, num_its, lr_schedule, warmup_its) * lr_decay**it``
    (:mod:`patchwork.training.schedule`)."""

    def __init__(self, optimizer: torch.optim.Optimizer, train: TrainParams) -> None:
        self.train = train
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        t, it = self.train, self.last_epoch
        return [
            learning_rate(lr, it, t.num_its, t.lr_schedule, t.warmup_its) * t.lr_decay**it
            for lr in self.base_lrs
        ]

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's progress (``weights_only``-safe: the settings are given anew on resume)."""
        return {k: v for k, v in super().state_dict().items() if k != "train"}


def optimisation(
    model: PatchWorkModel,
    train: TrainParams,
    optimizer: OptimizerFactory | None,
    scheduler: SchedulerFactory | None,
) -> tuple[torch.optim.Optimizer, LRScheduler]:
    """The optimiser of ``model``'s parameters and its scheduler: the researcher's factories, else AdamW
    (``lr``, ``weight_decay``) and :class:`ConfiguredSchedule`."""
    if optimizer is None:
        opt = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    else:
        opt = optimizer(model.parameters())
    return opt, ConfiguredSchedule(opt, train) if scheduler is None else scheduler(opt)


def train_dnp(
    params: DNPParams,
    images: list[np.ndarray],
    labels: list[np.ndarray],
    affines: list[np.ndarray],
    out_dir: Path,
    seed: int,
    device: str | None = None,
    val_images: list[np.ndarray] | None = None,
    val_labels: list[np.ndarray] | None = None,
    val_affines: list[np.ndarray] | None = None,
    *,
    optimizer: OptimizerFactory | None = None,
    scheduler: SchedulerFactory | None = None,
    loss: LevelLoss | None = None,
) -> Path:
    """Train a patchwork on ``images`` [C, *S] / ``labels`` / ``affines``; return ``model.pt``.

    ``labels``: integer maps [*S] or label channels [L, *S] (see the module docstring). Writes
    ``checkpoint.pt`` (every ``checkpoint_every`` outer iterations, removed at the end),
    ``model.pt`` (``{"format", "version", "params": params.to_dict(), "seed", "in_channels", "state_dict"}``),
    ``train_log.tsv`` and ``curve.png`` into ``out_dir``. Resumes from a checkpoint of the same params, seed
    and data; returns at once when ``model.pt`` of this training exists. ``device``: default CUDA if present.

    A researcher's own optimisation (Python only; not part of the model file or the training's identity,
    so a resumed run must be given the same):

    * ``optimizer(params) -> torch.optim.Optimizer`` (default: AdamW with ``lr``, ``weight_decay``);
    * ``scheduler(optimizer) -> LRScheduler``, stepped once after every outer iteration (default:
      :class:`ConfiguredSchedule`, which scales the optimiser's own rates); its ``state_dict`` is
      checkpointed with the optimiser's;
    * ``loss(pred, target, level) -> Tensor`` (:data:`~.loss.LevelLoss`; default: the
      settings' ``loss`` per level), used for training, hard mining and the validation loss.

    Example::

        train_dnp(params, images, labels, affines, out_dir, seed=0,
                  optimizer=lambda p: torch.optim.SGD(p, lr=0.01, momentum=0.9),
                  scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, step_size=10, gamma=0.5))
    """
    check_model(params)
    out_dir = Path(out_dir)
    model_path, ckpt_path = out_dir / "model.pt", out_dir / "checkpoint.pt"
    cases = check_cases(images, labels, affines, params, "training")
    identity = _identity(params, seed, cases)
    if finished_model(model_path, identity["params"], identity["seed"], MODEL_FORMAT, VERSION, "DNP model"):
        return model_path
    train, depth = params.train, params.crop.depth
    val = validation_trees(params, val_images, val_labels, val_affines, seed)
    dev = resolve_device(device)
    model = build_model(params, int(cases[0].image.shape[0]))
    init_weights(model, torch_generator(seed, 0, STREAM_INIT))
    # channels-last weights: PyTorch's CPU 3D convolution backward is many times faster in this layout
    model.to(dev, memory_format=CHANNELS_LAST[params.crop.ndim]).train()
    opt, schedule = optimisation(model, train, optimizer, scheduler)
    progress = _restore_checkpoint(ckpt_path, identity, model, opt, schedule)
    drawer = Drawer(params.crop, cases, train, seed)
    bar = tqdm(total=train.num_its, initial=progress.iteration, desc=f"dnp {out_dir.name}", disable=None)
    started = time.perf_counter() - progress.seconds
    try:
        while progress.iteration < train.num_its:
            it = progress.iteration
            fresh = drawer.get(it)
            if it + 1 < train.num_its:
                drawer.prefetch(it + 1)
            pool = progress.pool
            trees = fresh if pool is None else TreeSet.cat([fresh, pool])
            lr = float(opt.param_groups[0]["lr"])
            shuffle = torch_generator(seed, it, STREAM_SHUFFLE)
            result = train_on_set(model, opt, trees, train, shuffle, loss)
            schedule.step()
            val_loss, val_dice = (
                evaluate(model, val, train, loss) if val is not None else (float("nan"), float("nan"))
            )
            progress.pool = next_pool(trees, result, train)
            progress.iteration, progress.seconds = it + 1, time.perf_counter() - started
            row = {"iteration": it + 1, "total": result.total, "lr": lr, "seconds": progress.seconds}
            row.update({f"loss_level{n}": v for n, v in enumerate(result.level_losses)})
            row.update(
                patches=len(trees),
                hard_mined=0 if pool is None else len(pool),
                val_loss=val_loss,
                val_dice=val_dice,
            )
            progress.rows.append(row)
            write_train_log(out_dir / "train_log.tsv", progress.rows, log_columns(depth))
            bar.update(1)
            bar.set_postfix(loss=f"{result.total:.3f}")
            if progress.iteration % train.checkpoint_every == 0 and progress.iteration < train.num_its:
                _save_checkpoint(ckpt_path, identity, model, opt, schedule, progress)
    finally:
        drawer.close()
        bar.close()
    kinds = "/".join(sorted(set(train.losses(depth))))
    plot_curve(
        out_dir / "curve.png",
        progress.rows,
        f"DNP {out_dir.name}",
        ("total", *log_columns(depth)[1 : depth + 1]),
        f"loss ({kinds})",
    )
    _save_model(model_path, identity, model)
    ckpt_path.unlink(missing_ok=True)
    return model_path


def _save_model(path: Path, identity: dict[str, Any], model: PatchWorkModel) -> None:
    """Write ``model.pt`` atomically: the training's settings and seed once, the image channels, the weights
    on CPU (loadable with ``weights_only=True``)."""
    obj = {
        "format": MODEL_FORMAT,
        "version": VERSION,
        "params": identity["params"],
        "seed": identity["seed"],
        "in_channels": model.in_channels,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    write_model_file(path, obj)


def load_dnp(model_path: Path, device: str | torch.device | None = None) -> tuple[PatchWorkModel, DNPParams]:
    """The trained model (eval mode, on ``device``: default CUDA if present) and its training settings.

    A researcher's ``blockCreator``/``finalBlock`` is imported by the name stored in the settings, so its
    module must be importable here as it was in training."""
    obj = read_model(Path(model_path), MODEL_FORMAT, VERSION, "DNP model")
    try:
        params = DNPParams.from_dict(obj["params"])
        model = build_model(params, obj["in_channels"])
    except PatchworkError as err:
        raise PatchworkError(problems=[f"{model_path}: {p}" for p in err.problems]) from None
    model.load_state_dict(obj["state_dict"])
    memory_format = CHANNELS_LAST[params.crop.ndim]  # as in training: faster CPU convolutions
    return model.to(resolve_device(device), memory_format=memory_format).eval(), params

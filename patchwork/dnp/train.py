"""Training of a Deep Neural Patchwork: the paper's two nested loops, hard mining, exact resume.

Outer iteration ``it`` (``num_its`` of them) draws ``num_patches`` trees (one patch per level, nested) from
every training image with ``CropGenerator.sample(generate_type='random', augment, balance)`` into a
:class:`TreeSet`, adds the hard-mining pool kept from the previous set (:mod:`.hardmining`), and runs the
inner loop: ``epochs`` shuffled passes in batches of ``batch_size``, one AdamW step per batch at

    lr_it = learning_rate(lr, it, num_its, lr_schedule, warmup_its) * lr_decay ** it

(:mod:`patchwork.training.schedule`: a linear warm-up over ``warmup_its``, then constant, poly or cosine
decay over the outer iterations; ``lr_decay`` < 1 adds the authors' exponential decay).

The batch loss of level ``n`` is :func:`patchwork.dnp.loss.level_loss` of its prediction channels against
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

Labels are integer maps (0 background); with one label the foreground is ``label > 0``, with
``categorial_label`` channel ``i`` is ``label == categorial_label[i]``, with ``num_labels = L > 1`` and no
``categorial_label`` the values ``1..L``. NaN or negative values are don't-care voxels (``dontcare``).
2D images are ``[C, X, Y]`` with a 3×3 affine (a 4×4 NIfTI affine is reduced to its x/y rows and columns).
"""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from patchwork.dnp.crop import CropGenerator
from patchwork.dnp.grid import reduce_affine
from patchwork.dnp.hardmining import hardness, select_hard
from patchwork.dnp.loss import level_loss, patch_f1, patch_losses
from patchwork.dnp.model import PatchWorkModel, build_model, check_model
from patchwork.dnp.patchset import PatchSet
from patchwork.dnp.settings import CropConfig, DNPParams, TrainParams
from patchwork.dnp.volume import Volume
from patchwork.errors import PatchworkError
from patchwork.networks import init_weights
from patchwork.training.modelfile import (
    content_digest,
    finished_model,
    read_checkpoint,
    read_model,
    resolve_device,
    write_model_file,
)
from patchwork.training.schedule import learning_rate
from patchwork.training.seeding import STREAM_INIT, STREAM_PATCHES, STREAM_VALIDATION, torch_generator
from patchwork.training.trainlog import plot_curve, write_train_log

log = logging.getLogger(__name__)

Tensor = torch.Tensor
# version 2: the training settings are stored once (``params``, without ``apply``), with ``in_channels``
MODEL_FORMAT, CHECKPOINT_FORMAT, VERSION = "patchwork-dnp", "patchwork-dnp-checkpoint", 2
STREAM_SHUFFLE = 5
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


def label_targets(label: np.ndarray, crop: CropConfig, dontcare: bool) -> Tensor:
    """Label channels ``[L, *S]`` of an integer label map (see the module docstring), NaN = don't care."""
    values = torch.as_tensor(np.asarray(label, dtype=np.float64))
    care = torch.isfinite(values) & (values >= 0)
    if not dontcare and not bool(care.all()):
        raise PatchworkError("labels contain NaN or negative values but dontcare is off")
    if bool((values[care] != values[care].round()).any()):
        raise PatchworkError("labels must be integers (NaN or -1 for don't care)")
    count = crop.label_count
    picks = crop.categorial_label or (tuple(range(1, count + 1)) if count > 1 else None)
    channels = (values > 0)[None] if picks is None else torch.stack([values == v for v in picks])
    channels = channels.float()
    channels[:, ~care] = float("nan")
    return channels


def check_cases(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    affines: Sequence[np.ndarray],
    params: DNPParams,
    what: str,
) -> list[Case]:
    """Validate images ``[C, *S]`` (``ndim`` spatial axes), label maps ``[*S]`` and affines; build cases."""
    ndim = params.crop.ndim
    if not images or not (len(images) == len(labels) == len(affines)):
        raise PatchworkError(f"{what} set: need as many images, label maps and affines (at least one)")
    cases = []
    for i, (image, label, affine) in enumerate(zip(images, labels, affines, strict=True)):
        name = f"{what} case {i}"
        if image.ndim != ndim + 1 or image.shape[0] != images[0].shape[0]:
            raise PatchworkError(
                f"{name}: image shape {list(image.shape)}, expected [C, {ndim} spatial axes]"
            )
        if tuple(label.shape) != tuple(image.shape[1:]):
            raise PatchworkError(
                f"{name}: label shape {list(label.shape)} differs from image {list(image.shape[1:])}"
            )
        if not np.isfinite(image).all():
            raise PatchworkError(f"{name}: image contains NaN or infinite values")
        try:
            targets = label_targets(label, params.crop, params.train.dontcare)
            matrix = reduce_affine(torch.as_tensor(np.asarray(affine)), ndim)
        except PatchworkError as err:
            raise PatchworkError(f"{name}: {err}") from None
        cases.append(Case(torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)), targets, matrix))
    return cases


def training_cropper(crop: CropConfig) -> CropGenerator:
    """The cropper that draws training trees: the configured geometry, labels given as channels."""
    return CropGenerator(dataclasses.replace(crop, categorial_label=None, categorical=False, num_labels=None))


def draw_trees(
    cropper: CropGenerator, volumes: Sequence[Volume], train: TrainParams, generator: torch.Generator
) -> TreeSet:
    """``num_patches`` random trees from every volume, one after the other, drawn from ``generator``."""
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


_WORKER: dict[str, Any] = {}


def _exit_with(parent: multiprocessing.process.BaseProcess) -> None:
    """Wait until ``parent`` has ended, then end this process at once."""
    parent.join()
    os._exit(1)


def _worker_init(crop: CropConfig, cases: list[Case], train: TrainParams, seed: int) -> None:
    """Prepare the volumes once in the cropping process (one thread: training owns the others). The worker
    ends with the training process even when that is killed by SIGKILL (which runs no clean-up)."""
    threading.Thread(target=_exit_with, args=(multiprocessing.parent_process(),), daemon=True).start()
    torch.set_num_threads(1)
    cropper = CropGenerator(crop)
    _WORKER.update(
        cropper=cropper,
        volumes=[cropper.prepare(c.image, c.targets, c.affine) for c in cases],
        train=train,
        seed=seed,
    )


def _worker_draw(iteration: int) -> TreeSet:
    """The fresh trees of outer iteration ``iteration``, drawn in the worker."""
    w = _WORKER
    return draw_trees(
        w["cropper"], w["volumes"], w["train"], torch_generator(w["seed"], iteration, STREAM_PATCHES)
    )


class Drawer:
    """Gives the fresh trees of each outer iteration, cropped here or (``parallel``) ahead in a worker."""

    def __init__(self, crop: CropConfig, cases: list[Case], train: TrainParams, seed: int) -> None:
        self.cropper, self.train, self.seed = training_cropper(crop), train, seed
        self.pending: dict[int, Future[TreeSet]] = {}
        self.executor: ProcessPoolExecutor | None = None
        if train.parallel:
            self.volumes: list[Volume] = []
            self.executor = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_init,
                initargs=(self.cropper.config, cases, train, seed),
            )
        else:
            self.volumes = [self.cropper.prepare(c.image, c.targets, c.affine) for c in cases]

    def prefetch(self, iteration: int) -> None:
        """Start cropping ``iteration``'s trees in the worker (no-op when serial)."""
        if self.executor is not None and iteration not in self.pending:
            self.pending[iteration] = self.executor.submit(_worker_draw, iteration)

    def get(self, iteration: int) -> TreeSet:
        """The fresh trees of ``iteration`` (same trees serial or parallel)."""
        if self.executor is None:
            return draw_trees(
                self.cropper, self.volumes, self.train, torch_generator(self.seed, iteration, STREAM_PATCHES)
            )
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
) -> SetResult:
    """The inner loop: ``epochs`` shuffled passes over ``trees`` in batches, one optimiser step per batch."""
    device = next(model.parameters()).device
    kinds, depth, act = train.losses(model.depth), model.depth, model.activation
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
            losses = [
                level_loss(model.prediction(n, outputs[n]), labels[n], act, kinds[n]) for n in range(depth)
            ]
            loss = torch.stack([losses[n] for n in supervised]).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            sums += torch.tensor([float(v.detach()) for v in losses], dtype=torch.float64)
            total, steps = total + float(loss.detach()), steps + 1
            if epoch == train.epochs - 1:
                with torch.no_grad():
                    per_tree = [
                        patch_losses(model.prediction(n, outputs[n]), labels[n], act, kinds[n])
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
def evaluate(model: PatchWorkModel, trees: TreeSet, train: TrainParams) -> tuple[float, float]:
    """Finest-level loss and pseudo-Dice (hard, summed over all trees) on fixed validation trees."""
    model.eval()
    logits, labels = [], []
    for first in range(0, len(trees), train.batch_size):
        batch = trees.select(torch.arange(first, min(first + train.batch_size, len(trees))))
        logits.append(model.prediction(model.depth - 1, _tree_outputs(model, batch)[-1]).float())
        labels.append(batch.labels[-1].to(logits[-1].device))
    model.train()
    out, target = torch.cat(logits), torch.cat(labels)
    loss = level_loss(out, target, model.activation, train.losses(model.depth)[-1])
    dice = patch_f1(out.movedim(0, 1)[None], target.movedim(0, 1)[None], model.activation)[0]
    return float(loss), float(dice)


@dataclass
class Progress:
    """What a checkpoint restores besides weights and optimiser: iterations done, pool, log rows, time."""

    iteration: int = 0
    pool: TreeSet | None = None
    rows: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def _identity(params: DNPParams, seed: int, cases: list[Case]) -> dict[str, Any]:
    """What a checkpoint or finished model must match: params, seed, data counts and a hash of the data."""
    labelled = sum(int(torch.nan_to_num(c.targets).gt(0).any(dim=0).sum()) for c in cases)
    data = [len(cases), int(cases[0].image.shape[0]), sum(c.image[0].numel() for c in cases), labelled]
    digest = content_digest([a for c in cases for a in (c.image, c.targets, c.affine)])
    return {"params": params.to_dict(), "seed": int(seed), "data": data, "data_sha256": digest}


def _save_checkpoint(
    path: Path,
    identity: dict[str, Any],
    model: PatchWorkModel,
    optimizer: torch.optim.Optimizer,
    progress: Progress,
) -> None:
    """Write a resumable checkpoint (plain dict, ``weights_only``-safe) atomically."""
    obj = {
        "format": CHECKPOINT_FORMAT,
        "version": VERSION,
        **identity,
        "iteration": progress.iteration,
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "pool": None if progress.pool is None else progress.pool.state(),
        "rows": progress.rows,
        "seconds": progress.seconds,
    }
    write_model_file(path, obj)


def _restore_checkpoint(
    path: Path, identity: dict[str, Any], model: PatchWorkModel, optimizer: torch.optim.Optimizer
) -> Progress:
    """Load ``path`` into model and optimiser if it exists; refuse one written by another training."""
    obj = read_checkpoint(path, CHECKPOINT_FORMAT, VERSION, "DNP checkpoint", identity)
    if obj is None:
        return Progress()
    model.load_state_dict(obj["state_dict"])
    optimizer.load_state_dict(obj["optimizer"])
    log.info("resuming %s at outer iteration %d", path, obj["iteration"])
    pool = None if obj["pool"] is None else TreeSet.from_state(obj["pool"])
    return Progress(obj["iteration"], pool, obj["rows"], obj["seconds"])


def log_columns(depth: int) -> list[str]:
    """Columns of ``train_log.tsv``."""
    levels = [f"loss_level{n}" for n in range(depth)]
    return ["iteration", *levels, "total", "lr", "seconds", "patches", "hard_mined", "val_loss", "val_dice"]


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
) -> Path:
    """Train a patchwork on ``images`` [C, *S] / integer ``labels`` [*S] / ``affines``; return ``model.pt``.

    Writes ``checkpoint.pt`` (every ``checkpoint_every`` outer iterations, removed at the end),
    ``model.pt`` (``{"format", "version", "params": params.to_dict(), "seed", "in_channels", "state_dict"}``),
    ``train_log.tsv`` and ``curve.png`` into ``out_dir``. Resumes from a checkpoint of the same params, seed
    and data; returns at once when ``model.pt`` of this training exists. ``device``: default CUDA if present.
    """
    check_model(params)
    out_dir = Path(out_dir)
    model_path, ckpt_path = out_dir / "model.pt", out_dir / "checkpoint.pt"
    cases = check_cases(images, labels, affines, params, "training")
    identity = _identity(params, seed, cases)
    if finished_model(model_path, identity["params"], identity["seed"], MODEL_FORMAT, VERSION, "DNP model"):
        return model_path
    train, depth = params.train, params.crop.depth
    val = None
    if val_images:
        val_cases = check_cases(val_images, val_labels or [], val_affines or [], params, "validation")
        cropper = training_cropper(params.crop)
        volumes = [cropper.prepare(c.image, c.targets, c.affine) for c in val_cases]
        val = draw_trees(cropper, volumes, train, torch_generator(seed, 0, STREAM_VALIDATION))
    dev = resolve_device(device)
    model = build_model(params, int(cases[0].image.shape[0]))
    init_weights(model, torch_generator(seed, 0, STREAM_INIT))
    # channels-last weights: PyTorch's CPU 3D convolution backward is many times faster in this layout
    model.to(dev, memory_format=CHANNELS_LAST[params.crop.ndim]).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    progress = _restore_checkpoint(ckpt_path, identity, model, optimizer)
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
            lr = (
                learning_rate(train.lr, it, train.num_its, train.lr_schedule, train.warmup_its)
                * train.lr_decay**it
            )
            for group in optimizer.param_groups:
                group["lr"] = lr
            result = train_on_set(model, optimizer, trees, train, torch_generator(seed, it, STREAM_SHUFFLE))
            val_loss, val_dice = (
                evaluate(model, val, train) if val is not None else (float("nan"), float("nan"))
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
                _save_checkpoint(ckpt_path, identity, model, optimizer, progress)
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
    """The trained model (eval mode, on ``device``: default CUDA if present) and its training settings."""
    obj = read_model(Path(model_path), MODEL_FORMAT, VERSION, "DNP model")
    try:
        params = DNPParams.from_dict(obj["params"])
    except PatchworkError as err:
        raise PatchworkError(problems=[f"{model_path}: {p}" for p in err.problems]) from None
    model = build_model(params, obj["in_channels"])
    model.load_state_dict(obj["state_dict"])
    memory_format = CHANNELS_LAST[params.crop.ndim]  # as in training: faster CPU convolutions
    return model.to(resolve_device(device), memory_format=memory_format).eval(), params

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

The cases are checked and built by :mod:`.cases`, the tree sets drawn by :mod:`.trees`, the model file
written and read by :mod:`.modelfile`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.lr_scheduler import LRScheduler
from tqdm import tqdm

from patchwork.models.dnp.cases import Case, check_cases
from patchwork.models.dnp.hardmining import hardness, select_hard
from patchwork.models.dnp.loss import ConfiguredLoss, LevelLoss, patch_f1, patch_scores
from patchwork.models.dnp.model import PatchWorkModel, build_model, check_model
from patchwork.models.dnp.modelfile import CHANNELS_LAST, MODEL_FORMAT, VERSION, save_model
from patchwork.models.dnp.settings import DNPParams, TrainParams
from patchwork.models.dnp.trees import Drawer, TreeSet, validation_trees
from patchwork.networks import init_weights
from patchwork.training.modelfile import (
    content_digest,
    finished_model,
    read_checkpoint,
    resolve_device,
    write_model_file,
)
from patchwork.training.schedule import learning_rate
from patchwork.training.seeding import (
    STREAM_INIT,
    torch_generator,
)
from patchwork.training.trainlog import plot_curve, write_train_log

log = logging.getLogger(__name__)

Tensor = torch.Tensor
OptimizerFactory = Callable[[Iterator[torch.nn.Parameter]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], LRScheduler]
CHECKPOINT_FORMAT = "patchwork-dnp-checkpoint"
CHECKPOINT_VERSION = 3  # 3: with the learning-rate scheduler's state
STREAM_SHUFFLE = 5


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
    loss_fn = loss_fn or ConfiguredLoss(act, train.losses(depth), train.lesion_dice_weight)
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
    loss_fn = loss_fn or ConfiguredLoss(model.activation, train.losses(model.depth), train.lesion_dice_weight)
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
    save_model(model_path, identity, model)
    ckpt_path.unlink(missing_ok=True)
    return model_path

"""Training loop of the U-Net baseline: patches, augmentation, Dice + CE, poly LR, checkpoints.

Iteration ``i`` (0-based) draws a batch with foreground oversampling (:mod:`.sampler`), augments it
on the device (:mod:`.augment`), and takes one optimiser step at the learning rate of
:func:`patchwork.training.schedule.learning_rate` (``warmup_iterations`` of linear warm-up, then
``lr_schedule``: nnU-Net's poly ``lr (1 - t) ** 0.9`` by default), with the gradient norm clipped to
``grad_clip``. Mixed precision (float16 autocast + GradScaler) is
used on CUDA only. Every ``val_every`` iterations a row is added to ``train_log.tsv``; the
validation loss and pseudo-Dice are computed on a fixed set of ``val_patches`` patches of the
validation images, drawn once with the same foreground oversampling (as nnU-Net reports during
training; whole-image scores come from the prediction stage).

Every ``checkpoint_every`` iterations ``checkpoint.pt`` is written atomically. Because every random
draw is a function of ``(seed, iteration)`` (:mod:`.seeding`), a run restarted with the same
arguments continues from its last checkpoint and ends with the same weights as an uninterrupted run
(bitwise on CPU). ``model.pt`` is written at the end and the checkpoint removed.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from patchwork.errors import PatchworkError
from patchwork.models.unet.augment import Augmenter
from patchwork.models.unet.loss import deep_supervision_loss, dice_ce_loss, lesion_dice_loss
from patchwork.models.unet.modelfile import MODEL_FORMAT, MODEL_VERSION, build_network, save_model
from patchwork.models.unet.predict import foreground_probability
from patchwork.models.unet.sampler import PatchSampler
from patchwork.models.unet.settings import UNetParams
from patchwork.networks import UNet3D, init_weights
from patchwork.ondemand import Mapped
from patchwork.training.modelfile import (
    content_digest,
    finished_model,
    read_checkpoint,
    resolve_device,
    write_model_file,
)
from patchwork.training.schedule import learning_rate
from patchwork.training.seeding import STREAM_AUGMENT, STREAM_INIT, STREAM_VALIDATION, torch_generator
from patchwork.training.trainlog import plot_curve, write_train_log

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "patchwork-unet-checkpoint"
CHECKPOINT_VERSION = 1


def make_optimizer(params: UNetParams, model: torch.nn.Module) -> torch.optim.Optimizer:
    """AdamW, or SGD with Nesterov momentum (nnU-Net), at ``params.lr``."""
    if params.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(),
            lr=params.lr,
            momentum=params.momentum,
            nesterov=True,
            weight_decay=params.weight_decay,
        )
    return torch.optim.AdamW(model.parameters(), lr=params.lr, weight_decay=params.weight_decay)


def _as_float32(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image, dtype=np.float32)


def _as_uint8(label: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(label, dtype=np.uint8)


def check_data(
    images: Sequence[np.ndarray], labels: Sequence[np.ndarray], params: UNetParams, what: str
) -> tuple[Sequence[np.ndarray], Sequence[np.ndarray]]:
    """Validate ``[C, X, Y, Z]`` images and ``[X, Y, Z]`` label maps, one case at a time; return sequences
    that give them as float32 and uint8 when indexed (no copy where they already are: lazily read cases,
    :class:`patchwork.training.cases.LazyCases`, stay on disk until used)."""
    if not images:
        raise PatchworkError(f"{what} set: no images")
    if len(images) != len(labels):
        raise PatchworkError(f"{what} set: {len(images)} images but {len(labels)} label maps")
    channels = images[0].shape[0] if images[0].ndim == 4 else None
    for i, (img, lab) in enumerate(zip(images, labels, strict=True)):
        name = f"{what} case {i}"
        if img.ndim != 4 or img.shape[0] != channels:
            raise PatchworkError(f"{name}: image shape {list(img.shape)}, expected [C={channels}, X, Y, Z]")
        if lab.shape != img.shape[1:]:
            raise PatchworkError(
                f"{name}: label shape {list(lab.shape)} differs from image {list(img.shape[1:])}"
            )
        if not np.isfinite(img).all():
            raise PatchworkError(f"{name}: image contains NaN or infinite values")
        values = np.unique(lab)
        if np.any(values < 0) or np.any(values != np.round(values)):
            raise PatchworkError(
                f"{name}: labels must be non-negative integers, found {values[:10].tolist()}"
            )
        top = params.num_classes - 1 if params.head == "softmax" else 255
        if values.max() > top:
            raise PatchworkError(f"{name}: label {int(values.max())} exceeds num_classes-1 = {top}")
    return Mapped(images, _as_float32), Mapped(labels, _as_uint8)


def data_fingerprint(images: Sequence[np.ndarray], labels: Sequence[np.ndarray]) -> list[int]:
    """``[cases, channels, voxels, foreground voxels]``: a cheap check that a resume sees the same data."""
    return [
        len(images),
        int(images[0].shape[0]),
        int(sum(lab.size for lab in labels)),
        int(sum(np.count_nonzero(lab) for lab in labels)),
    ]


@dataclass
class Progress:
    """What a checkpoint restores besides the weights: iterations done, log rows, the running loss mean."""

    iteration: int = 0
    rows: list[dict[str, float]] = field(default_factory=list)
    loss_sum: float = 0.0
    loss_count: int = 0
    seconds: float = 0.0

    def add_row(self, val_loss: float, val_dice: float, lr: float) -> None:
        """Close a logging window: append its row and reset the running training-loss mean."""
        self.rows.append({
            "iteration": self.iteration, "train_loss": self.loss_sum / self.loss_count,
            "val_loss": val_loss, "val_dice": val_dice, "lr": lr, "seconds": self.seconds,
        })  # fmt: skip
        self.loss_sum, self.loss_count = 0.0, 0


def _save_checkpoint(
    path: Path,
    identity: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    progress: Progress,
) -> None:
    """Write a resumable checkpoint (plain dict, loadable with ``weights_only=True``) atomically."""
    obj = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        **identity,
        "iteration": progress.iteration,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "rows": progress.rows,
        "loss_sum": progress.loss_sum,
        "loss_count": progress.loss_count,
        "seconds": progress.seconds,
    }
    write_model_file(path, obj)


def _restore_checkpoint(
    path: Path,
    identity: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
) -> Progress:
    """Load ``path`` into model, optimiser and scaler if it exists; refuse one from another run."""
    obj = read_checkpoint(path, CHECKPOINT_FORMAT, CHECKPOINT_VERSION, "U-Net checkpoint", identity)
    if obj is None:
        return Progress()
    model.load_state_dict(obj["model"])
    optimizer.load_state_dict(obj["optimizer"])
    if obj["scaler"]:  # empty when the checkpoint was written without CUDA
        scaler.load_state_dict(obj["scaler"])
    log.info("resuming %s at iteration %d", path, obj["iteration"])
    return Progress(obj["iteration"], obj["rows"], obj["loss_sum"], obj["loss_count"], obj["seconds"])


@torch.inference_mode()
def evaluate(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, params: UNetParams, device: torch.device
) -> tuple[float, float]:
    """Mean loss and pseudo-Dice ``2TP / (2TP + FP + FN)`` (foreground probability ≥ 0.5) over patches.

    TP, FP and FN are summed over all patches; with no foreground anywhere the Dice is 1 if nothing
    is predicted and 0 otherwise.
    """
    model.eval()
    losses, tp, fp, fn = [], 0, 0, 0
    for first in range(0, len(x), params.batch_size):
        xb = x[first : first + params.batch_size].to(device)
        yb = y[first : first + params.batch_size].to(device)
        with _autocast(device):
            logits = model(xb)
        losses.append(float(dice_ce_loss(logits, yb, params.head)) * len(xb))
        pred = foreground_probability(logits.float(), params.head, dim=1) >= 0.5
        truth = yb > 0
        tp += int((pred & truth).sum())
        fp += int((pred & ~truth).sum())
        fn += int((~pred & truth).sum())
    model.train()
    dice = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return sum(losses) / len(x), dice


def _autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """float16 autocast on CUDA, nothing elsewhere."""
    return (
        torch.autocast(device_type="cuda", dtype=torch.float16)
        if device.type == "cuda"
        else contextlib.nullcontext()
    )


def validation_patches(
    params: UNetParams,
    seed: int,
    images: Sequence[np.ndarray] | None,
    labels: Sequence[np.ndarray] | None,
    in_channels: int,
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The fixed validation patches (drawn once, with foreground oversampling), or None without images."""
    if not images:
        return None
    if labels is None:
        raise PatchworkError("validation set: images given without label maps")
    images, labels = check_data(images, labels, params, "validation")
    if images[0].shape[0] != in_channels:
        raise PatchworkError("validation set: channel count differs from the training images")
    sampler = PatchSampler(
        images, labels, params.patch_size, params.val_patches, params.oversample_foreground, seed,
        stream=STREAM_VALIDATION, by_lesion=params.sample_by_lesion,
    )  # fmt: skip
    x, y = sampler.batch(0)
    return torch.from_numpy(x), torch.from_numpy(y)


@dataclass
class TrainingRun:
    """Everything one optimiser step needs; :meth:`step` is a function of the iteration number only."""

    params: UNetParams
    seed: int
    device: torch.device
    model: UNet3D
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    sampler: PatchSampler
    augmenter: Augmenter | None

    @classmethod
    def create(
        cls,
        params: UNetParams,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        seed: int,
        device: torch.device,
    ) -> TrainingRun:
        """Seeded network, optimiser, AMP scaler (active on CUDA only), sampler and augmenter."""
        model = build_network(params, images[0].shape[0])
        init_weights(model, torch_generator(seed, 0, STREAM_INIT))
        # Channels-last weights make CPU Conv3d (oneDNN) several times faster; results are unchanged.
        model.to(device, memory_format=torch.channels_last_3d).train()
        augmenter = Augmenter(params.rotation_deg, params.scale_range, params.mirror, params.gamma)
        crop_size = augmenter.crop_size(params.patch_size) if params.augment else params.patch_size
        sampler = PatchSampler(
            images, labels, params.patch_size, params.batch_size, params.oversample_foreground, seed,
            crop_size=crop_size, by_lesion=params.sample_by_lesion,
        )  # fmt: skip
        return cls(
            params=params,
            seed=seed,
            device=device,
            model=model,
            optimizer=make_optimizer(params, model),
            scaler=torch.amp.GradScaler("cuda", enabled=device.type == "cuda"),
            sampler=sampler,
            augmenter=augmenter if params.augment else None,
        )

    def step(self, iteration: int, lr: float) -> float:
        """One optimiser step at ``lr`` on batch ``iteration``; returns its loss."""
        x_np, y_np = self.sampler.batch(iteration)
        x, y = torch.from_numpy(x_np).to(self.device), torch.from_numpy(y_np).to(self.device)
        if self.augmenter is not None:
            generator = torch_generator(self.seed, iteration, STREAM_AUGMENT)
            x, y = self.augmenter(x, y, self.params.patch_size, generator)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        with _autocast(self.device):
            outputs = self.model.forward_deep(x)
        loss = deep_supervision_loss(outputs, y, self.params.head)
        if self.params.lesion_dice_weight > 0:
            loss = loss + self.params.lesion_dice_weight * lesion_dice_loss(outputs[0], y, self.params.head)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.params.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return float(loss.detach())


def train_unet(
    params: UNetParams,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    affines: Sequence[np.ndarray] | None,
    out_dir: Path,
    seed: int,
    device: str | None = None,
    val_images: Sequence[np.ndarray] | None = None,
    val_labels: Sequence[np.ndarray] | None = None,
    val_affines: Sequence[np.ndarray] | None = None,
) -> Path:
    """Train a U-Net on ``images [C, X, Y, Z]`` / ``labels [X, Y, Z]`` into ``out_dir``; return ``model.pt``.

    Writes ``checkpoint.pt`` (every ``checkpoint_every`` iterations, removed at the end),
    ``model.pt``, ``train_log.tsv`` and ``curve.png``. Resumes from ``checkpoint.pt`` when one of the
    same params, seed and data is there; returns at once when ``model.pt`` of this training exists.
    The signature is the model registry's (:mod:`patchwork.models`); the U-Net works on the voxel grid,
    so ``affines`` and ``val_affines`` are not needed. The data may be lists or lazily read sequences
    (:class:`patchwork.training.cases.LazyCases`): they give the same weights, and the lazy ones keep a
    few cases in memory at a time.
    """
    out_dir = Path(out_dir)
    model_path, ckpt_path = out_dir / "model.pt", out_dir / "checkpoint.pt"
    images, labels = check_data(images, labels, params, "training")
    identity = {"params": params.to_dict(), "seed": int(seed), "data": data_fingerprint(images, labels),
                "data_sha256": content_digest(itertools.chain(images, labels))}  # fmt: skip
    if finished_model(
        model_path, identity["params"], identity["seed"], MODEL_FORMAT, MODEL_VERSION, "U-Net model"
    ):
        return model_path
    val = validation_patches(params, seed, val_images, val_labels, images[0].shape[0])
    run = TrainingRun.create(params, images, labels, seed, resolve_device(device))
    progress = _restore_checkpoint(ckpt_path, identity, run.model, run.optimizer, run.scaler)
    bar = tqdm(total=params.iterations, initial=progress.iteration, desc=f"unet {out_dir.name}", disable=None)
    started = time.perf_counter() - progress.seconds
    while progress.iteration < params.iterations:
        lr = learning_rate(
            params.lr, progress.iteration, params.iterations, params.lr_schedule, params.warmup_iterations
        )
        loss = run.step(progress.iteration, lr)
        progress.iteration += 1
        progress.loss_sum += loss
        progress.loss_count += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.3f}")
        if progress.iteration % params.val_every == 0 or progress.iteration == params.iterations:
            val_loss, val_dice = (
                evaluate(run.model, *val, params, run.device) if val else (math.nan, math.nan)
            )
            progress.seconds = time.perf_counter() - started
            progress.add_row(val_loss, val_dice, lr)
            write_train_log(out_dir / "train_log.tsv", progress.rows)
        if progress.iteration % params.checkpoint_every == 0 and progress.iteration < params.iterations:
            progress.seconds = time.perf_counter() - started
            _save_checkpoint(ckpt_path, identity, run.model, run.optimizer, run.scaler, progress)
    bar.close()
    plot_curve(out_dir / "curve.png", progress.rows, title=f"U-Net ({params.head}) {out_dir.name}")
    save_model(model_path, params, images[0].shape[0], int(seed), run.model)
    ckpt_path.unlink(missing_ok=True)
    return model_path

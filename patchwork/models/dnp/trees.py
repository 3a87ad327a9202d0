"""The trees a DNP trains on: sets of trees (one patch per level, nested), drawn from seeded streams.

Set ``it`` holds ``num_patches`` trees from every image it draws from (all, or ``cases_per_iteration``
picked by ``(seed, it)``), cropped by ``CropGenerator.sample(generate_type='random', augment, balance)``.
Every random draw is a function of ``(seed, iteration, stream)`` (:mod:`patchwork.training.seeding`), so a
set does not depend on training: with ``parallel``, :class:`Drawer` crops set ``it + 1`` in a spawned
worker process while set ``it`` trains, and it holds the very trees the serial loop would draw. Prepared
images (:meth:`~.crop.CropGenerator.prepare`) are kept in a bounded cache (:class:`PreparedVolumes`);
preparing is deterministic, so the trees never depend on the cache's bounds.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import threading
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from patchwork.models.dnp.cases import Case, check_cases
from patchwork.models.dnp.crop import CropGenerator
from patchwork.models.dnp.patchset import PatchSet
from patchwork.models.dnp.settings import CropConfig, DNPParams, TrainParams
from patchwork.models.dnp.volume import Volume
from patchwork.ondemand import Mapped, position
from patchwork.training.cases import BoundedCache
from patchwork.training.seeding import (
    STREAM_PATCHES,
    STREAM_VALIDATION,
    numpy_rng,
    torch_generator,
)

Tensor = torch.Tensor
STREAM_CASES, STREAM_VALIDATION_CASES = 6, 7  # which images a set draws from (``cases_per_iteration``)


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

"""Memory (``mem_mb``) and wall time (``runtime``, minutes) of every rule, from the cohort and the settings.

A scheduler kills a job that outgrows its request and keeps one that asks for far too much waiting, so
each request follows what the job holds and does:

* the cohort's size, from ``fingerprint.json`` (written by ingest): the voxels of every subject's original
  grid (``shapes``) and, after resampling to the target spacing, ``V' = V * prod(spacing / target)``;
* how many subjects a job handles (a fold's training subjects, a prediction batch, the whole cohort);
* a training's cost, which each model type estimates from its planned settings (the registry's ``cost``,
  :class:`patchwork.training.cost.TrainingCost`): optimiser steps, the voxels one step sees, the bytes it
  holds, on a CPU or a GPU.

Every estimate is multiplied by the retry ``attempt`` (Snakemake's ``--retries``): a job killed for memory
or time comes back with twice, then three times, the request. The constants below are generous round
numbers (bytes per voxel of what a job keeps, seconds per voxel), not fitted, upper guesses; a run's
``results/benchmarks/{rule}/*.tsv`` (``max_rss``, ``s``) are what to calibrate them against. Before ingest
has run there is no fingerprint; the jobs that exist then (demo, ingest) do not depend on the cohort.

Example (in a rule)::

    resources:
        mem_mb=lambda wc, attempt: attempt * resources.per_subject_mem_mb(cohort(), "predict"),
        runtime=lambda wc, attempt: attempt * resources.per_subject_minutes(cohort(), "predict", 200),
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from patchwork.models import model_type as registry
from patchwork.training.cost import TrainingCost

# Bytes a job keeps per voxel of one subject (a few float32 copies of the image channels and maps).
BYTES_PER_VOXEL = {
    "preprocess": 40,  # channels + label read, resampled (SimpleITK float64 copies), cropped, written
    "predict": 48,  # the preprocessed case, the probability (and spread) in both grids, the mask
    "ensemble": 24,  # every model's probability (float32) of one subject, the mean, the mask
    "evaluate": 24,  # reference, every model's mask and spread, the image for the report's figures
    "tune": 24,  # one subject's probabilities (float32) and the fused map, labels, masks of the search
}
BASE_MB = {"default": 1000, "train": 2000, "predict": 2000}  # interpreter, torch and the libraries
# Seconds per subject of the batched per-subject work, per million voxels of the original grid, and a
# fixed part (reading, writing, process start-up in loops of the command line).
SECONDS_PER_MVOXEL = {"preprocess": 4.0, "predict": 20.0, "ensemble": 1.0, "evaluate": 3.0, "tune": 0.5}
SECONDS_FIXED = {"preprocess": 10.0, "predict": 5.0, "ensemble": 3.0, "evaluate": 3.0, "tune": 0.5}
GPU_SPEEDUP = 10.0  # prediction on a GPU
MIN_RUNTIME = 5  # minutes
GZIP_RATIO = 20  # decompressed / compressed size of an image file, an upper guess (masks compress more)


@dataclass(frozen=True)
class Cohort:
    """Sizes the requests depend on: subjects, channels and voxels (original and resampled grids)."""

    channels: int
    max_voxels: int  # largest original grid of any subject
    max_resampled: int  # largest grid after resampling to the target spacing
    n_train: int  # training subjects

    @classmethod
    def from_fingerprint(cls, fingerprint: Mapping[str, Any], target: Sequence[float] | None) -> Cohort:
        """Sizes from a fingerprint; ``target`` spacing None means the median spacing (preprocessing's, but
        for the coarse axis of an anisotropic cohort, which preprocessing samples finer)."""
        shapes, spacings = fingerprint["shapes"], fingerprint["spacings"]
        target = list(target) if target else fingerprint["median_spacing"]

        def resampled(subject: str) -> int:
            zoom = math.prod(s / t for s, t in zip(spacings[subject], target))
            return math.ceil(math.prod(shapes[subject]) * zoom)

        train = list(fingerprint.get("foreground_voxels") or shapes)
        return cls(
            channels=len(fingerprint["channels"]),
            max_voxels=max((math.prod(s) for s in shapes.values()), default=1),
            max_resampled=max((resampled(s) for s in shapes), default=1),
            n_train=len(train),
        )


@lru_cache(maxsize=8)
def _cohort(path: str, mtime_ns: int, size: int, target: tuple[float, ...] | None) -> Cohort:
    with open(path, encoding="utf-8") as fh:
        return Cohort.from_fingerprint(json.load(fh), target)


def cohort_of(fingerprint_json: str, target: Sequence[float] | None) -> Cohort | None:
    """The cohort sizes of ``fingerprint.json`` (once per version of the file); None before ingest."""
    if not os.path.exists(fingerprint_json):
        return None
    stat = os.stat(fingerprint_json)
    return _cohort(fingerprint_json, stat.st_mtime_ns, stat.st_size, tuple(target) if target else None)


def megabytes(n_bytes: float, base_mb: int) -> int:
    """``n_bytes`` in MB (rounded up to 100 MB) on top of ``base_mb``."""
    return base_mb + 100 * math.ceil(n_bytes / 1e8)


def minutes(seconds: float) -> int:
    """Whole minutes, at least :data:`MIN_RUNTIME`."""
    return max(MIN_RUNTIME, math.ceil(seconds / 60))


def training_cost(
    cohort: Cohort | None, model_type: str, params: Any, n_subjects_fraction: float
) -> TrainingCost:
    """The :class:`~patchwork.training.cost.TrainingCost` of a model of ``model_type`` trained with
    ``params`` on ``n_subjects_fraction`` of the training subjects (before ingest: one case of no voxels, so
    only the steps count)."""
    n_cases = max(1, round(cohort.n_train * n_subjects_fraction)) if cohort else 1
    voxels, channels = (cohort.max_resampled, cohort.channels) if cohort else (0, 1)
    return registry(model_type).cost_function(params, n_cases, voxels, channels)


def train_mem_mb(cohort: Cohort | None, model_type: str, params: Any, n_subjects_fraction: float) -> int:
    """Training: what the model type's cost says it holds (the cases in use, its caches) and one step's
    tensors; flat in the cohort's size but for what a type holds per image."""
    if cohort is None:
        return BASE_MB["train"]
    cost = training_cost(cohort, model_type, params, n_subjects_fraction)
    return megabytes(cost.memory_bytes(), BASE_MB["train"])


def train_minutes(
    cohort: Cohort | None, model_type: str, params: Any, n_subjects_fraction: float, on_gpu: bool
) -> int:
    """Training: the model type's steps x voxels per step at the device's throughput (its cost)."""
    return minutes(training_cost(cohort, model_type, params, n_subjects_fraction).seconds(on_gpu))


def per_subject_mem_mb(cohort: Cohort | None, job: str, held_subjects: int = 1) -> int:
    """A job that keeps ``held_subjects`` subjects' worth of its per-voxel bytes at once."""
    if cohort is None:
        return BASE_MB["default"]
    voxels = max(cohort.max_voxels, cohort.max_resampled)  # the original grid, or the resampled one
    voxels *= max(cohort.channels, 1) if job == "preprocess" else 1
    base = BASE_MB.get(job, BASE_MB["default"])
    return megabytes(BYTES_PER_VOXEL[job] * voxels * held_subjects, base)


def per_subject_minutes(cohort: Cohort | None, job: str, n_subjects: int, speedup: float = 1.0) -> int:
    """A job that handles ``n_subjects`` one after the other."""
    mvoxels = (cohort.max_voxels if cohort else 256**3) / 1e6
    per_subject = SECONDS_FIXED[job] + SECONDS_PER_MVOXEL[job] * mvoxels / speedup
    return minutes(n_subjects * per_subject)


def ingest_mem_mb(files: Sequence[str], max_image_bytes: int) -> int:
    """Ingest: a few copies of the largest image, guessed as :data:`GZIP_RATIO` x its largest file (a
    gzipped NIfTI), and at most ``max_image_bytes`` (what ingest lets one file decompress to)."""
    largest = max((os.path.getsize(f) for f in files if os.path.isfile(f)), default=0)
    return megabytes(3 * min(GZIP_RATIO * largest, max_image_bytes), BASE_MB["default"])


def table_mem_mb(n_subjects: int, n_models: int) -> int:
    """The cohort's metrics table (summary, report): ~20 kB a subject and model, with its plots."""
    return megabytes(2e4 * n_subjects * (n_models + 2), BASE_MB["default"])

"""Patch sampling with foreground oversampling, as nnU-Net's data loader does it.

A batch of ``B`` patches draws its images uniformly with replacement. ``n_fg`` of the patches are
centred on a foreground voxel (a class present in the image is chosen uniformly, then one of its
voxels uniformly); the others are placed uniformly so that the patch lies inside the image where
the image is large enough. With ``by_lesion`` a foreground patch chooses, after the class, one of the
class's connected components (26-connected lesions) uniformly and then one of its voxels: a 0.1 ml lesion
beside a 50 ml one gets half the foreground patches instead of one in 500, so small lesions are not
starved. ``n_fg = floor(B p) + Bernoulli(B p - floor(B p))`` for the oversampling fraction ``p``, so
``E[n_fg] = B p`` for every batch size (nnU-Net rounds ``B p``, which gives 1/2 instead of 1/3 at ``B = 2``).

The sampler can cut a ``crop_size`` region larger than the patch around the patch centre, so that
rotation and scaling in :mod:`~.augment` find real image content in the corners.
Voxels outside the image are filled with the channel's minimum (the background of MR and CT) for
the image and 0 (background) for the label.

Each batch is a pure function of ``(seed, index)``, so a resumed training draws the same batches
as an uninterrupted one without storing any RNG state.

The images and labels may be lazily read sequences (:class:`patchwork.training.cases.LazyCases`): the
sampler keeps per case only its shape, its fill values and the state of the random generator that picks its
foreground voxels, and the voxel lists themselves for at most ``FOREGROUND_CASES`` recently used cases
(:class:`ForegroundVoxels`), so its memory does not grow with the cohort beyond a few hundred bytes a case.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from patchwork.errors import PatchworkError
from patchwork.training.cases import BoundedCache
from patchwork.training.seeding import STREAM_FOREGROUND_SUBSET, STREAM_PATCHES, numpy_rng

MAX_VOXELS_PER_CLASS = 10_000  # nnU-Net also keeps a random subset of each class's voxels
FOREGROUND_CASES = 128  # cases whose foreground voxels (at most 120 kB a class each) are kept


def crop(
    array: np.ndarray, lower: Sequence[int], size: Sequence[int], fill: np.ndarray | float
) -> np.ndarray:
    """Cut ``array[..., lower:lower+size]`` over the last 3 axes, filling what lies outside with ``fill``.

    ``fill`` is a scalar or one value per leading index (e.g. per channel).
    """
    lead = array.shape[:-3]
    out = np.empty((*lead, *size), dtype=array.dtype)
    out[...] = np.reshape(fill, (*np.shape(fill), 1, 1, 1)) if np.ndim(fill) else fill
    src, dst = [], []
    for lo, n, dim in zip(lower, size, array.shape[-3:], strict=True):
        a, b = max(lo, 0), min(lo + n, dim)
        if a >= b:
            return out
        src.append(slice(a, b))
        dst.append(slice(a - lo, b - lo))
    out[(..., *dst)] = array[(..., *src)]
    return out


def _subset(idx: np.ndarray, limit: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """At most ``limit`` rows of ``idx`` (a sorted random subset drawn from ``rng``), as int32 where the image
    of ``size`` voxels allows."""
    if len(idx) > limit:
        idx = idx[np.sort(rng.choice(len(idx), limit, replace=False))]
    return idx.astype(np.int32) if size < 2**31 else idx


def foreground_voxels(
    label: np.ndarray, rng: np.random.Generator, by_lesion: bool = False
) -> list[list[np.ndarray]]:
    """For each class > 0 present, the coordinates ``[N, 3]`` of its voxels in groups: one group (at most
    ``MAX_VOXELS_PER_CLASS`` voxels, the subset of a larger class drawn from ``rng``), or with ``by_lesion``
    one group per connected component (26-connected), each of at most ``MAX_VOXELS_PER_CLASS / n`` voxels
    for ``n`` components (at least 64, so each keeps its shape)."""
    from patchwork.postprocessing.components import label_components

    voxels = []
    for cls in np.unique(label):
        if cls == 0:
            continue
        mask = label == cls
        if not by_lesion:
            voxels.append([_subset(np.argwhere(mask), MAX_VOXELS_PER_CLASS, rng, label.size)])
            continue
        components, n = label_components(mask)
        limit = max(64, MAX_VOXELS_PER_CLASS // n)
        idx = np.argwhere(mask)
        which = components[tuple(idx.T)]
        order = np.argsort(which, kind="stable")
        groups = np.split(idx[order], np.cumsum(np.bincount(which, minlength=n + 1)[1:])[:-1])
        voxels.append([_subset(group, limit, rng, label.size) for group in groups])
    return voxels


class ForegroundVoxels:
    """:func:`foreground_voxels` of every label map, drawn from one generator ``rng`` case after case, but
    kept for the ``cache_cases`` most recently used cases only. Each case's generator state is saved
    (where it drew anything), so a case computed again after it left the cache gets the very same voxels:
    the results do not depend on ``cache_cases``."""

    def __init__(
        self,
        labels: Sequence[np.ndarray],
        rng: np.random.Generator,
        cache_cases: int = FOREGROUND_CASES,
        by_lesion: bool = False,
    ) -> None:
        self.labels = labels
        self.by_lesion = by_lesion
        self.states: list[dict | None] = []
        self.cache: BoundedCache[int, list[list[np.ndarray]]] = BoundedCache(
            self._compute, max_items=cache_cases
        )
        for k in range(len(labels)):
            state = rng.bit_generator.state
            voxels = foreground_voxels(labels[k], rng, by_lesion)
            self.states.append(state if rng.bit_generator.state != state else None)
            self.cache.put(k, voxels)

    def __getitem__(self, case: int) -> list[list[np.ndarray]]:
        return self.cache[case]

    def _compute(self, case: int) -> list[list[np.ndarray]]:
        """The voxels of ``case`` again, from its saved generator state."""
        rng = np.random.Generator(np.random.PCG64())
        if self.states[case] is not None:
            rng.bit_generator.state = self.states[case]
        return foreground_voxels(self.labels[case], rng, self.by_lesion)


class PatchSampler:
    """Draws batches of (image, label) patches with foreground oversampling.

    ``images``: ``[C, X, Y, Z]`` float32 arrays; ``labels``: ``[X, Y, Z]`` integer arrays (0 =
    background). ``patch_size`` is the final patch, ``crop_size`` (default ``patch_size``) the cut
    region around its centre; ``crop_size - patch_size`` must be even so both share a centre voxel.
    Batch ``index`` is drawn from random ``stream`` ``(seed, index, stream)``. ``by_lesion``: foreground
    patches pick a lesion (connected component) uniformly before a voxel (see the module docstring).
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        patch_size: Sequence[int],
        batch_size: int,
        oversample_foreground: float,
        seed: int,
        crop_size: Sequence[int] | None = None,
        stream: int = STREAM_PATCHES,
        by_lesion: bool = False,
    ) -> None:
        self.patch_size = tuple(int(s) for s in patch_size)
        self.crop_size = tuple(int(s) for s in crop_size) if crop_size is not None else self.patch_size
        if any((c - p) % 2 or c < p for c, p in zip(self.crop_size, self.patch_size, strict=True)):
            raise PatchworkError(
                f"crop size {self.crop_size} must exceed patch size {self.patch_size} by an even number"
            )
        self.images = images
        self.labels = labels
        self.batch_size = batch_size
        self.oversample_foreground = oversample_foreground
        self.seed = seed
        self.stream = stream
        self.shapes, self.fill = [], []
        for img in images:  # one image at a time
            self.shapes.append(np.array(img.shape[1:]))
            self.fill.append(np.asarray(img).reshape(img.shape[0], -1).min(axis=1))
        rng = numpy_rng(seed, stream, STREAM_FOREGROUND_SUBSET)
        self.foreground = ForegroundVoxels(labels, rng, by_lesion=by_lesion)

    def centres(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image indices ``[B]``, patch centres ``[B, 3]`` and foreground flags ``[B]`` of batch ``index``.

        The centre of a patch of size ``n`` starting at ``lo`` is ``lo + n // 2``.
        """
        rng = numpy_rng(self.seed, index, self.stream)
        b, p = self.batch_size, self.oversample_foreground
        n_fg = int(np.floor(b * p)) + int(rng.random() < b * p - np.floor(b * p))
        which = rng.integers(0, len(self.images), size=b)
        centres = np.empty((b, 3), dtype=np.int64)
        forced = np.zeros(b, dtype=bool)
        half = np.array(self.patch_size) // 2
        for i, k in enumerate(which):
            shape = self.shapes[k]
            fg = self.foreground[k]
            if i < n_fg and fg:
                groups = fg[rng.integers(len(fg))]
                voxels = groups[rng.integers(len(groups))] if len(groups) > 1 else groups[0]
                centres[i] = voxels[rng.integers(len(voxels))]
                forced[i] = True
            else:
                slack = shape - np.array(self.patch_size)
                lower = rng.integers(np.minimum(slack, 0), np.maximum(slack, 0) + 1)
                centres[i] = lower + half
        return which, centres, forced

    def batch(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Batch ``index``: images ``[B, C, *crop_size]`` float32 and labels ``[B, *crop_size]`` uint8."""
        which, centres, _ = self.centres(index)
        half = np.array(self.crop_size) // 2
        xs, ys = [], []
        for k, centre in zip(which, centres, strict=True):
            lower = centre - half
            xs.append(crop(self.images[k], lower, self.crop_size, self.fill[k]))
            ys.append(crop(self.labels[k], lower, self.crop_size, 0))
        return np.stack(xs).astype(np.float32, copy=False), np.stack(ys).astype(np.uint8, copy=False)

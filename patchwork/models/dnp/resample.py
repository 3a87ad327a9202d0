"""Batched re-sampling between patches and arrays: crop (gather) and scatter.

The paper's re-sampling ``D'[v] = D[A_{p'}^-1 A_p v]`` in its two directions:

* **crop**: every voxel ``v`` of ``N`` patches reads the source array at ``x = A v`` (``A``: patch voxel ->
  source voxel index), by nearest neighbour (``'NN'``, index arithmetic: ``round(x)`` flattened into one
  gather) or multilinear interpolation (``'lin'``, :func:`torch.nn.functional.grid_sample` with
  ``align_corners=True``, so voxel centres sit at integer indices as in the matrices). Points outside the
  source read 0: sources carry a one-voxel zero border (:func:`pad_source`).
* **scatter**: every patch voxel adds ``w(v) D[v]`` to the target voxel ``round(A v)`` (``'NN'``), or splats
  it over the ``2^d`` neighbours of ``A v`` with multilinear weights (``'lin'``), and the weights are summed
  alongside: ``Y = sum / weight`` is the paper's mean over overlapping patches, and callers may suppress
  sparsely covered voxels or compute a spread from the same sums. ``w`` is the patch window
  (:func:`window_weights`).

No Python loop runs over voxels; ``'NN'`` crops loop over cache-sized chunks of patches on the CPU
(:class:`NearestIndex`), ``'lin'`` scatter over the ``2^d`` corners.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from patchwork.models.dnp.geometry import (
    coordinate_bounds,
    patch_coordinates,
    separable_coordinates,
    shape_tensor,
)
from patchwork.models.dnp.settings import Interp, Window

Tensor = torch.Tensor


def _strides(shape: Sequence[int], device: torch.device) -> Tensor:
    """Row-major strides of ``shape`` as a long tensor."""
    strides = [math.prod(shape[k + 1 :]) for k in range(len(shape))]
    return torch.tensor(strides, dtype=torch.long, device=device)


def _inside(index: Tensor, shape: Sequence[int]) -> Tensor:
    """Whether integer points ``[..., d]`` lie in an array of ``shape``."""
    upper = torch.tensor(tuple(shape), dtype=index.dtype, device=index.device)
    return ((index >= 0) & (index < upper)).all(dim=-1)


#: Voxels per chunk of rows whose nearest-neighbour indices are computed (and read) together on the CPU
#: by one thread: the three working buffers (512 KiB each) stay in the cache across the per-axis passes.
CHUNK_VOXELS = 2**17
#: torch runs an elementwise operation of at most this many elements on the calling thread, without a
#: parallel region (ATen's ``GRAIN_SIZE``).
SERIAL_VOXELS = 2**15


def chunk_voxels() -> int:
    """Voxels per CPU chunk: :data:`CHUNK_VOXELS` with one torch thread, else :data:`SERIAL_VOXELS`.

    With several threads, chunks go to a pool of Python threads (:meth:`PointSampler.read`) and every
    operation on a chunk stays below torch's parallel grain: many small OpenMP regions would each wait
    for all threads, which on a loaded machine (a core taken by another process) costs a scheduler time
    slice per region, seconds per patch set.
    """
    return CHUNK_VOXELS if torch.get_num_threads() == 1 else SERIAL_VOXELS


class NearestIndex:
    """Flat indices into a padded array (spatial shape ``padded``, ``batch`` of them one after the other) of
    ``round(A v)``, clamped into the array, per voxel ``v`` of ``N`` patches of ``shape``.

    ``matrices`` [N, d+1, d+1] (float64) map patch voxels to padded voxel indices; ``offsets`` [N] (or
    ``None``) is added per patch (``source * prod(padded)`` when patches read different sources).

    Why it is fast: each coordinate is one broadcast addition of float64-exact separable parts
    (:func:`~.geometry.separable_coordinates`, no per-voxel matrix product), rounded and, only
    for patches whose corners leave the array (:func:`~.geometry.coordinate_bounds`),
    clamped, then accumulated with the axis stride. The work is split into *rows* (a patch and an index
    along its first axis; the whole patch in 1D) and on the CPU done in chunks of :func:`chunk_voxels`
    voxels (:meth:`compute`), so these passes stay in the cache and a reader gathers each chunk while its
    index is hot: the full index never has to be written to memory. Rounding is torch's (half to even),
    as before; the float32 coordinate is within one rounding of the exact one.
    """

    def __init__(
        self,
        matrices: Tensor,
        shape: Sequence[int],
        padded: Sequence[int],
        device: torch.device,
        batch: int = 1,
        offsets: Tensor | None = None,
    ) -> None:
        size, count = math.prod(padded), matrices.shape[0]
        matrices = matrices.detach().cpu().double()
        self.shape, self.device = tuple(int(k) for k in shape), device
        lead = self.shape[0] if len(self.shape) > 1 else 1  # rows per patch
        self.rows, self.row_shape = count * lead, self.shape[1:] if lead > 1 else self.shape
        upper = shape_tensor(padded) - 1.0
        lowest, highest = coordinate_bounds(matrices, shape)
        outside = ((lowest < 0.0) | (highest > upper)).repeat_interleave(lead, dim=0)
        self.clamp_axes: list[list[bool]] = outside.T.tolist()  # [d][rows]
        self.upper: list[float] = upper.tolist()
        self.strides = [math.prod(padded[k + 1 :]) for k in range(len(padded))]
        self.terms = [
            (
                outer.reshape(self.rows, *self.row_shape[:-1]).to(device=device, dtype=torch.float32),
                inner.repeat_interleave(lead, dim=0).to(device=device, dtype=torch.float32),
            )
            for outer, inner in separable_coordinates(matrices, shape)
        ]
        self.dtype = torch.int32 if size * batch < 2**31 else torch.int64
        self.exact = torch.float32 if size < 2**24 else torch.float64  # integers stay exact below 2^24
        self.offsets = None
        if offsets is not None:
            self.offsets = offsets.repeat_interleave(lead).to(device=device, dtype=self.dtype)
        per_chunk = chunk_voxels() // math.prod(self.row_shape) if device.type == "cpu" else self.rows
        self.step = max(1, per_chunk)

    def spans(self) -> list[slice]:
        """The chunks of rows, in order."""
        return [slice(start, min(self.rows, start + self.step)) for start in range(0, self.rows, self.step)]

    def buffers(self) -> tuple[Tensor, Tensor, Tensor]:
        """Working buffers for :meth:`compute` (one set per thread)."""
        rows = min(self.step, self.rows)
        work = torch.empty((rows, *self.row_shape), dtype=torch.float32, device=self.device)
        return work, torch.empty_like(work, dtype=self.exact), torch.empty_like(work, dtype=self.dtype)

    def compute(self, chunk: slice, buffers: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        """The index ``[m, *row_shape]`` of the ``m`` rows of ``chunk``, held in ``buffers`` until reused."""
        work, total, index = buffers
        m = chunk.stop - chunk.start
        clamp = [any(flags[chunk]) for flags in self.clamp_axes]
        _accumulate_index(self.terms, chunk, clamp, self.upper, self.strides, work[:m], total[:m])
        index[:m].copy_(total[:m])
        if self.offsets is not None:
            index[:m] += self.offsets[chunk].view(m, *[1] * len(self.row_shape))
        return index[:m]

    def full(self) -> Tensor:
        """The whole index ``[N, *shape]``."""
        out = torch.empty((self.rows, *self.row_shape), dtype=self.dtype, device=self.device)
        buffers = self.buffers()
        for chunk in self.spans():
            out[chunk] = self.compute(chunk, buffers)
        return out.view(-1, *self.shape)


def _accumulate_index(
    terms: list[tuple[Tensor, Tensor]],
    chunk: slice,
    clamp: list[bool],
    upper: list[float],
    strides: list[int],
    x: Tensor,
    total: Tensor,
) -> None:
    """``total = sum_k stride_k clamp(round(x_k))`` for the rows of ``chunk``, in place.

    ``x_k = outer_k + inner_k`` is written into ``x``; the clamp into ``[0, upper_k]`` runs only where
    ``clamp[k]`` says that a row of the chunk leaves the array along axis ``k``.
    """
    m = chunk.stop - chunk.start
    for k, (outer, inner) in enumerate(terms):
        torch.add(outer[chunk].unsqueeze(-1), inner[chunk].reshape(m, *[1] * (x.ndim - 2), -1), out=x)
        x.round_()
        if clamp[k]:
            x.clamp_(0.0, upper[k])
        if k == 0:
            total.copy_(x)
            total.mul_(strides[0])
        else:
            total.add_(x, alpha=strides[k])


def pad_source(source: Tensor) -> Tensor:
    """``source`` [B, C, *S] with one zero voxel added on every side of every spatial axis.

    This is the form :class:`PointSampler` reads: nearest-neighbour indices are clamped into the padded
    array, so every point outside the source lands on the zero border without a mask.
    """
    return F.pad(source, (1, 1) * (source.ndim - 2))


def _in_threads(work: Callable[[Sequence[slice]], None], spans: list[slice], workers: int) -> None:
    """Run ``work`` over ``spans`` cut into ``workers`` contiguous parts, one Python thread each.

    The pool lives for this call only (a process forked later, e.g. a data loader worker, inherits no
    dead pool), and its threads take the caller's inference and grad modes, which are thread-local.
    """
    if workers <= 1:
        work(spans)
        return
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def in_caller_mode(part: Sequence[slice]) -> None:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            work(part)

    size = math.ceil(len(spans) / workers)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(in_caller_mode, [spans[k : k + size] for k in range(0, len(spans), size)]))


class PointSampler:
    """Reads padded sources (:func:`pad_source`) at the voxels of ``N`` patches of ``shape``.

    ``matrices`` [N, d+1, d+1] map patch voxels to voxel indices of the unpadded source of spatial shape
    ``spatial``. The geometry is prepared once on construction; :meth:`read` reads several sources of the same
    spatial shape (data and labels) in one sweep, so nearest-neighbour indices are computed once, chunk by
    chunk, and each chunk is gathered from every source while it is in the cache. Patch ``n`` reads source
    ``source_index[n]``; by default the single source (``batch == 1``) or source ``n`` (``batch == N``).
    Points outside the source read 0.
    """

    def __init__(
        self,
        matrices: Tensor,
        shape: Sequence[int],
        spatial: Sequence[int],
        interp_type: Interp,
        device: torch.device,
        batch: int = 1,
        source_index: Tensor | None = None,
    ) -> None:
        n, d = matrices.shape[0], len(shape)
        if source_index is None:
            if batch not in (1, n):
                raise ValueError(f"{batch} sources for {n} patches: pass source_index")
            source_index = torch.zeros(n, dtype=torch.long) if batch == 1 else torch.arange(n)
        self.interp_type = interp_type
        self.shape = tuple(shape)
        self.batch = batch
        self.source_index = source_index.to(device)
        shifted = matrices.clone()
        shifted[:, :d, d] += 1.0
        padded = tuple(int(k) + 2 for k in spatial)
        if interp_type == "NN":
            offsets = source_index * math.prod(padded) if batch > 1 else None
            self.nearest = NearestIndex(shifted, self.shape, padded, device, batch, offsets)
        else:
            coords = patch_coordinates(shifted, shape, device)
            upper = torch.tensor(padded, dtype=coords.dtype, device=device) - 1.0
            self.grid = (2.0 * coords / upper - 1.0).flip(-1)

    def __call__(self, source: Tensor) -> Tensor:
        """The samples of a padded ``source`` [B, C, *(S+2)] as ``[N, C, *shape]``."""
        return self.read([source])[0]

    def read(self, sources: Sequence[Tensor]) -> list[Tensor]:
        """The samples ``[N, C_i, *shape]`` of padded ``sources`` [B, C_i, *(S+2)] (same ``B`` and ``S``).

        Nearest neighbour on the CPU with several torch threads: the chunks are shared out to as many
        Python threads (torch releases the GIL), each with its own buffers and writing its own rows of the
        outputs, so the result does not depend on the number of threads. Sources that require grad (a
        parent's output in the model) are read in one differentiable gather of the whole index instead.
        """
        if self.interp_type != "NN":
            return [self._interpolate(source) for source in sources]
        flats = [
            source.reshape(source.shape[1], -1)
            if self.batch == 1
            else source.transpose(0, 1).reshape(source.shape[1], -1)
            for source in sources
        ]
        n = self.source_index.shape[0]
        if torch.is_grad_enabled() and any(source.requires_grad for source in sources):
            index = self.nearest.full().reshape(-1)  # differentiable: no out= buffers, no threads
            return [f.index_select(1, index).view(f.shape[0], n, *self.shape).transpose(0, 1) for f in flats]
        rows = self.nearest.rows
        outs = [
            torch.empty((f.shape[0], rows, math.prod(self.nearest.row_shape)), dtype=f.dtype, device=f.device)
            for f in flats
        ]
        spans = self.nearest.spans()
        workers = min(len(spans), torch.get_num_threads()) if self.nearest.device.type == "cpu" else 1

        def gather(part: Sequence[slice]) -> None:
            """Compute and read the chunks of ``part`` with this thread's buffers."""
            buffers = self.nearest.buffers()
            for chunk in part:
                index = self.nearest.compute(chunk, buffers).reshape(-1)
                for flat, out in zip(flats, outs, strict=True):
                    for channel in range(flat.shape[0]):
                        torch.index_select(flat[channel], 0, index, out=out[channel, chunk].reshape(-1))

        _in_threads(gather, spans, workers)
        return [out.view(out.shape[0], n, *self.shape).transpose(0, 1) for out in outs]

    def _interpolate(self, source: Tensor) -> Tensor:
        """Multilinear samples of one padded ``source`` (``'lin'``)."""
        channels = source.shape[1]
        n = self.source_index.shape[0]
        if self.batch == 1:
            folded = self.grid.reshape(1, n * self.shape[0], *self.shape[1:], self.grid.shape[-1])
            out = F.grid_sample(source, folded, mode="bilinear", padding_mode="zeros", align_corners=True)
            return out.view(channels, n, *self.shape).transpose(0, 1)
        return F.grid_sample(
            source[self.source_index], self.grid, mode="bilinear", padding_mode="zeros", align_corners=True
        )


def crop(
    source: Tensor,
    matrices: Tensor,
    shape: Sequence[int],
    interp_type: Interp = "NN",
    source_index: Tensor | None = None,
) -> Tensor:
    """Crop ``N`` patches of ``shape`` from ``source`` [B, C, *S]; ``matrices``: patch voxel -> source voxel.

    This is the low-level re-sampling used for the image (``C_n``'s input ``I_n``) and for a parent's output
    (``C_n = R((p_{n-1}, X_{n-1}), p_n)``: pass the parents' outputs ``X[parent]`` or ``X`` with
    ``source_index=parent`` and the child-relative matrices). Returns ``[N, C, *shape]``.
    """
    batch, spatial = source.shape[0], source.shape[2:]
    read = PointSampler(matrices, shape, spatial, interp_type, source.device, batch, source_index)
    return read(pad_source(source))


@functools.lru_cache(maxsize=32)
def window_weights(shape: tuple[int, ...], window: Window, device: torch.device) -> Tensor:
    """Stitching weight of each patch voxel, float32 ``shape``.

    With ``r_j = (v_j - (s_j - 1)/2) / (s_j / 2)`` in ``(-1, 1)``: ``'cos'`` is ``prod_j cos(pi r_j / 2)``,
    ``'cos2'`` its square (both positive on every voxel), ``None`` is 1.
    """
    weights = torch.ones(shape, dtype=torch.float32, device=device)
    if window is None:
        return weights
    for axis, n in enumerate(shape):
        r = (torch.arange(n, dtype=torch.float32, device=device) - (n - 1) / 2.0) / (n / 2.0)
        profile = torch.cos(math.pi * r / 2.0)
        if window == "cos2":
            profile = profile**2
        weights = weights * profile.view(*[1] * axis, n, *[1] * (len(shape) - axis - 1))
    return weights


def scatter(
    values: Tensor,
    matrices: Tensor,
    shape: Sequence[int],
    scatter_type: Interp = "NN",
    window: Window = None,
) -> tuple[Tensor, Tensor]:
    """Accumulate patches ``values`` [N, C, *s] into an array of ``shape``; ``matrices``: patch -> voxel.

    Returns ``(sum [C, *shape], weight [*shape])`` with ``sum = sum_v w(v) k(v) D[v]`` and
    ``weight = sum_v w(v) k(v)``, ``w`` the window and ``k`` the NN (0/1) or multilinear splat kernel.
    Without a window and with ``'NN'`` the weight is the number of patch voxels each voxel received.
    """
    n, channels, *patch_shape = values.shape
    d = len(patch_shape)
    device = values.device
    coords = patch_coordinates(matrices, patch_shape, device).reshape(-1, d)
    weights = window_weights(tuple(patch_shape), window, device).reshape(1, -1).expand(n, -1).reshape(-1)
    flat_values = values.float().transpose(0, 1).reshape(channels, -1)
    total = torch.zeros(channels, math.prod(shape), dtype=torch.float32, device=device)
    weight = torch.zeros(math.prod(shape), dtype=torch.float32, device=device)
    strides = _strides(shape, device)
    if scatter_type == "NN":
        corners = [(coords.round().long(), weights)]
    else:
        base = coords.floor()
        frac = coords - base
        corners = []
        for offset in itertools.product((0, 1), repeat=d):
            step = torch.tensor(offset, dtype=torch.float32, device=device)
            kernel = torch.where(step.bool(), frac, 1.0 - frac).prod(-1)
            corners.append(((base + step).long(), weights * kernel))
    for index, w in corners:
        w = torch.where(_inside(index, shape), w, torch.zeros((), device=device))
        flat = (index.clamp(min=0) * strides).sum(-1).clamp(max=math.prod(shape) - 1)
        total.index_add_(1, flat, flat_values * w)
        weight.index_add_(0, flat, w)
    return total.view(channels, *shape), weight.view(*shape)

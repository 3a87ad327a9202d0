"""The patching scheme: matrix size, field of view and voxel size of every level.

Level ``n`` of ``depth`` levels has a fixed matrix size ``s_n`` (``patch_size``) and a field of view
``f_n`` (side lengths of its box). The coarsest field of view ``f_0`` is ``fov_mm`` (absolute) or
``fov_rel`` times the image's extent; the finest level's voxel size is ``destvox_mm`` or ``destvox_rel``
times the image's voxel size, so ``f_{D-1} = destvox * s_{D-1}``. The levels between are interpolated
exponentially, ``f_n = f_0^(1 - n/(D-1)) f_{D-1}^(n/(D-1))``, and each level's voxel size is
``h_n = f_n / s_n``. With ``depth == 1`` the single level's voxel size is ``f_0 / s_0`` and ``destvox``
must be left out.

Example::

    Scheme(patch_size=(32, 32, 32), fov_rel=(0.9, 0.9, 0.9), destvox_mm=(1.0, 1.0, 1.0))
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import torch

from patchwork.dnp.grid import ImageGrid
from patchwork.errors import PatchworkError, check_keys

Tensor = torch.Tensor
Size = tuple[int, ...]


def _floats(name: str, value: float | Sequence[float] | None) -> tuple[float, ...] | None:
    """A positive float or a sequence of them as a tuple (a scalar is kept as a 1-tuple and broadcast)."""
    if value is None:
        return None
    values = (value,) if isinstance(value, (int, float)) else tuple(value)
    if not values or not all(isinstance(v, (int, float)) and v > 0 for v in values):
        raise PatchworkError(f"scheme.{name} must be a positive number or a tuple of them, got {value!r}")
    return tuple(float(v) for v in values)


def _sizes(name: str, value: Sequence[int] | Sequence[Sequence[int]] | None) -> tuple[Size, ...] | None:
    """One size tuple, or one per level, as a tuple of tuples of positive ints."""
    if value is None:
        return None
    items = list(value)
    per_level = bool(items) and all(isinstance(v, Sequence) for v in items)
    sizes = [tuple(v) for v in items] if per_level else [tuple(items)]
    if not sizes or not all(s and all(isinstance(n, int) and n > 0 for n in s) for s in sizes):
        raise PatchworkError(
            f"scheme.{name} must be a tuple of positive ints or a list of them, got {value!r}"
        )
    return tuple(sizes)


@dataclass(frozen=True)
class Scheme:
    """``patch_size`` (one tuple or one per level), ``out_patch_size``, ``fov_mm`` | ``fov_rel``,
    ``destvox_mm`` | ``destvox_rel``; validated here, checked against ``depth``/``ndim`` by :meth:`check`."""

    patch_size: tuple[Size, ...]
    out_patch_size: tuple[Size, ...] | None = None
    fov_mm: tuple[float, ...] | None = None
    fov_rel: tuple[float, ...] | None = None
    destvox_mm: tuple[float, ...] | None = None
    destvox_rel: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_size", _sizes("patch_size", self.patch_size))
        object.__setattr__(self, "out_patch_size", _sizes("out_patch_size", self.out_patch_size))
        for name in ("fov_mm", "fov_rel", "destvox_mm", "destvox_rel"):
            object.__setattr__(self, name, _floats(name, getattr(self, name)))
        if self.patch_size is None:
            raise PatchworkError("scheme.patch_size is required")
        if (self.fov_mm is None) == (self.fov_rel is None):
            raise PatchworkError("scheme needs exactly one of fov_mm and fov_rel")
        if self.destvox_mm is not None and self.destvox_rel is not None:
            raise PatchworkError("scheme takes at most one of destvox_mm and destvox_rel")

    @classmethod
    def from_value(cls, value: Scheme | Mapping[str, object]) -> Scheme:
        """Accept a :class:`Scheme` or the paper's dictionary form; unknown keys are an error."""
        if isinstance(value, Scheme):
            return value
        check_keys(value, (f.name for f in fields(cls)), "scheme")
        return cls(**value)  # type: ignore[arg-type]

    def check(self, depth: int, ndim: int) -> None:
        """Check the scheme fits ``depth`` levels of ``ndim`` dimensions."""
        for name in ("patch_size", "out_patch_size"):
            sizes = getattr(self, name)
            if sizes is None:
                continue
            if len(sizes) not in (1, depth):
                raise PatchworkError(f"scheme.{name} has {len(sizes)} entries for depth {depth}")
            if any(len(s) != ndim for s in sizes):
                raise PatchworkError(f"scheme.{name} must have {ndim} entries per level")
        for name in ("fov_mm", "fov_rel", "destvox_mm", "destvox_rel"):
            values = getattr(self, name)
            if values is not None and len(values) not in (1, ndim):
                raise PatchworkError(f"scheme.{name} must have 1 or {ndim} entries")
        has_destvox = self.destvox_mm is not None or self.destvox_rel is not None
        if depth > 1 and not has_destvox:
            raise PatchworkError("scheme needs destvox_mm or destvox_rel when depth > 1")
        if depth == 1 and has_destvox:
            raise PatchworkError("scheme: with depth 1 the voxel size is fov / patch_size; omit destvox")

    def sizes(self, depth: int) -> list[Size]:
        """Input matrix size of each level."""
        return [self.patch_size[min(n, len(self.patch_size) - 1)] for n in range(depth)]

    def out_sizes(self, depth: int) -> list[Size]:
        """Output (label) matrix size of each level: ``out_patch_size`` or the input size."""
        sizes = self.out_patch_size or self.patch_size
        return [sizes[min(n, len(sizes) - 1)] for n in range(depth)]

    def voxel_sizes(self, depth: int, grid: ImageGrid) -> list[Tensor]:
        """Voxel size ``h_n`` of each level in system units (float64 ``[d]``) for an image ``grid``."""
        d = grid.ndim
        sizes = [torch.as_tensor(s, dtype=torch.float64) for s in self.sizes(depth)]
        if self.fov_mm is not None:
            first = torch.as_tensor(self.fov_mm, dtype=torch.float64).expand(d) / grid.mm_per_unit
        else:
            first = torch.as_tensor(self.fov_rel, dtype=torch.float64).expand(d) * grid.extent
        if depth == 1:
            return [first / sizes[0]]
        if self.destvox_mm is not None:
            destvox = torch.as_tensor(self.destvox_mm, dtype=torch.float64).expand(d) / grid.mm_per_unit
        else:
            destvox = torch.as_tensor(self.destvox_rel, dtype=torch.float64).expand(d) * grid.voxel_size
        last = destvox * sizes[-1]
        steps = [n / (depth - 1) for n in range(depth)]
        return [first ** (1.0 - t) * last**t / s for t, s in zip(steps, sizes, strict=True)]

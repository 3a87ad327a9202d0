"""Label-driven patch placement (``balance``): more patches where the labels are.

Each tree of patches is a *foreground tree* with probability ``ratio``. A foreground tree picks one
labelled voxel ``x*`` with probability ``P(i) ∝ sum_l w_l y_l(i)`` (``y_l(i)`` the value of label ``l`` at
voxel ``i``), and every level of the tree then places its patch so that ``x*`` lies inside it (see
:func:`~.placement.around_targets`); so about ``ratio`` of the finest patches contain
foreground, whatever the size of the labelled region. The other trees are placed uniformly.

Label weights: ``w_l = label_weight_l`` (default 1); with ``autoweight`` they are divided by the label's
volume ``V_l = sum_i y_l(i)``, so every present label gets the same share of foreground trees — rare labels
(a small lesion next to a large organ) are weighted up.

The settings are a :class:`~.settings.Balance`.

Example::

    sites = ForegroundSites.from_labels(label_channels)
    foreground, targets = sites.draw(Balance(ratio=0.5, autoweight=True), 16, generator)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from patchwork.errors import PatchworkError
from patchwork.models.dnp.settings import Balance

Tensor = torch.Tensor


def label_weights(balance: Balance, volumes: Tensor) -> Tensor:
    """Per-label weights ``w_l`` for label volumes ``V_l`` (float64 ``[L]``)."""
    count = volumes.shape[0]
    if balance.label_weight is not None and len(balance.label_weight) != count:
        raise PatchworkError(
            f"balance.label_weight has {len(balance.label_weight)} entries for {count} labels"
        )
    weights = torch.tensor(balance.label_weight or (1.0,) * count, dtype=torch.float64)
    if balance.autoweight:
        weights = torch.where(volumes > 0, weights / volumes.clamp(min=1e-12), torch.zeros_like(weights))
    return weights


def _index_dtype(voxels: int) -> torch.dtype:
    """The smallest integer type that numbers ``voxels`` voxels."""
    return torch.int32 if voxels < 2**31 else torch.int64


def _compact_values(values: Tensor) -> Tensor:
    """``values`` (float64) in the smallest of bool, float32, float64 that holds every one of them exactly."""
    for dtype in (torch.bool, torch.float32):
        compact = values.to(dtype)
        if torch.equal(compact.to(torch.float64), values):
            return compact
    return values


@dataclass(frozen=True)
class ForegroundSites:
    """Labelled voxels of an image, stored compactly (CPU): one flat voxel index each, ``linear`` [M] (int32
    below 2**31 voxels) into ``shape``, and what their labels are: ``positions`` [M] (uint8/int16, ``l + 1``
    for a voxel whose only positive label ``l`` has value 1: one-hot labels, the usual case) or else
    ``values`` [M, L] (bool, float32 or float64, the smallest that holds them exactly); ``volumes`` [L]
    (float64) the label volumes ``V_l``.

    A voxel costs 5-6 bytes with one-hot labels instead of ``8 (d + L)`` (a 50-label atlas at 512³: about
    0.7 GB instead of 27 GB), and :meth:`draw` gives exactly what it gave from the float64 values: the
    weighted mass of a one-hot voxel is its label's weight, the sum ``values @ w`` would give bit for bit.
    """

    linear: Tensor
    shape: tuple[int, ...]
    volumes: Tensor
    positions: Tensor | None = None
    values: Tensor | None = None

    @classmethod
    def from_labels(cls, labels: Tensor) -> ForegroundSites:
        """Collect the voxels where any channel of ``labels`` [L, *S] is positive (negative = don't care).

        Only the labelled voxels' values are copied; float64 values (and the volumes from their sum) are
        built only when the labels are not one-hot, as before.
        """
        flat = labels.detach().reshape(labels.shape[0], -1)
        where = (flat > 0).any(dim=0).nonzero().squeeze(1)
        found = flat[:, where].clamp(min=0).cpu()  # [L, M]
        shape, count = tuple(labels.shape[1:]), found.shape[0]
        linear = where.cpu().to(_index_dtype(flat.shape[1]))
        one_hot = bool(((found == 0) | (found == 1)).all()) and bool((found.sum(dim=0) == 1).all())
        if one_hot and count < 2**15:
            label = found.argmax(dim=0)
            volumes = torch.bincount(label, minlength=count).to(torch.float64)  # exact, as the float sum
            return cls(linear, shape, volumes, positions=cls._position_codes(label, count))
        values = found.T.to(torch.float64)
        return cls(linear, shape, values.sum(dim=0), values=_compact_values(values))

    @classmethod
    def from_positions(cls, positions: Tensor, count: int) -> ForegroundSites:
        """The labelled voxels of a position map ``[*S]`` (``l + 1`` for label ``l``, 0 background, -1 don't
        care) of ``count`` labels."""
        flat = positions.reshape(-1)
        where = (flat > 0).nonzero().squeeze(1)
        label = flat[where].long() - 1
        volumes = torch.bincount(label, minlength=count).to(torch.float64)
        linear = where.cpu().to(_index_dtype(flat.shape[0]))
        return cls(linear, tuple(positions.shape), volumes, positions=cls._position_codes(label.cpu(), count))

    @staticmethod
    def _position_codes(label: Tensor, count: int) -> Tensor:
        """Labels ``l`` [M] as ``l + 1`` in uint8 (up to 255 labels) or int16."""
        return (label + 1).to(torch.uint8 if count < 2**8 else torch.int16)

    def __len__(self) -> int:
        return self.linear.shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes held by the sites' tensors."""
        held = [t for t in (self.linear, self.volumes, self.positions, self.values) if t is not None]
        return sum(t.element_size() * t.numel() for t in held)

    def mass(self, weights: Tensor) -> Tensor:
        """Weighted label mass ``sum_l w_l y_l(i)`` of every site, float64 ``[M]``."""
        if self.positions is not None:
            padded = torch.cat([torch.zeros(1, dtype=torch.float64), weights])
            return padded[self.positions.long()]
        return self.values.to(torch.float64) @ weights  # type: ignore[union-attr]

    def draw(self, balance: Balance, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Decide ``count`` trees: ``(foreground [count] bool, target voxel [count, d] float64)``.

        Targets of non-foreground trees are meaningless. Without labelled voxels no tree is foreground.
        """
        chosen = torch.rand(count, generator=generator, dtype=torch.float64) < balance.ratio
        pick = torch.rand(count, generator=generator, dtype=torch.float64)
        d = len(self.shape)
        if len(self) == 0:
            return torch.zeros(count, dtype=torch.bool), torch.zeros(count, d, dtype=torch.float64)
        cdf = self.mass(label_weights(balance, self.volumes)).cumsum(0)
        if cdf[-1] <= 0:
            return torch.zeros(count, dtype=torch.bool), torch.zeros(count, d, dtype=torch.float64)
        slot = torch.searchsorted(cdf, pick * cdf[-1], right=True).clamp(max=len(cdf) - 1)
        voxel = torch.stack(torch.unravel_index(self.linear[slot].long(), self.shape), dim=-1)
        return chosen, voxel.to(torch.float64)

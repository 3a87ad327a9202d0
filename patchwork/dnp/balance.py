"""Label-driven patch placement (``balance``): more patches where the labels are.

Each tree of patches is a *foreground tree* with probability ``ratio``. A foreground tree picks one
labelled voxel ``x*`` with probability ``P(i) ∝ sum_l w_l y_l(i)`` (``y_l(i)`` the value of label ``l`` at
voxel ``i``), and every level of the tree then places its patch so that ``x*`` lies inside it (see
:func:`patchwork.dnp.placement.around_targets`); so about ``ratio`` of the finest patches contain
foreground, whatever the size of the labelled region. The other trees are placed uniformly.

Label weights: ``w_l = label_weight_l`` (default 1); with ``autoweight`` they are divided by the label's
volume ``V_l = sum_i y_l(i)``, so every present label gets the same share of foreground trees — rare labels
(a small lesion next to a large organ) are weighted up.

The settings are a :class:`~patchwork.dnp.settings.Balance`.

Example::

    sites = ForegroundSites.from_labels(label_channels)
    foreground, targets = sites.draw(Balance(ratio=0.5, autoweight=True), 16, generator)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from patchwork.dnp.settings import Balance
from patchwork.errors import PatchworkError

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


@dataclass(frozen=True)
class ForegroundSites:
    """Labelled voxels of an image: indices ``[M, d]`` (long), label values ``[M, L]`` (float64), CPU."""

    index: Tensor
    values: Tensor

    @classmethod
    def from_labels(cls, labels: Tensor) -> ForegroundSites:
        """Collect the voxels where any channel of ``labels`` [L, *S] is positive (negative = don't care)."""
        flat = labels.detach().reshape(labels.shape[0], -1).clamp(min=0)
        where = (flat > 0).any(dim=0).nonzero().squeeze(1)
        index = torch.stack(torch.unravel_index(where, tuple(labels.shape[1:])), dim=-1)
        return cls(index.cpu(), flat[:, where].T.to(device="cpu", dtype=torch.float64))

    def draw(self, balance: Balance, count: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Decide ``count`` trees: ``(foreground [count] bool, target voxel [count, d] float64)``.

        Targets of non-foreground trees are meaningless. Without labelled voxels no tree is foreground.
        """
        chosen = torch.rand(count, generator=generator, dtype=torch.float64) < balance.ratio
        pick = torch.rand(count, generator=generator, dtype=torch.float64)
        d = self.index.shape[1]
        if self.index.shape[0] == 0:
            return torch.zeros(count, dtype=torch.bool), torch.zeros(count, d, dtype=torch.float64)
        mass = self.values @ label_weights(balance, self.values.sum(dim=0))
        cdf = mass.cumsum(0)
        if cdf[-1] <= 0:
            return torch.zeros(count, dtype=torch.bool), torch.zeros(count, d, dtype=torch.float64)
        slot = torch.searchsorted(cdf, pick * cdf[-1], right=True).clamp(max=len(cdf) - 1)
        return chosen, self.index[slot].to(torch.float64)

"""Hard mining: which trees of a training set are kept for the next outer iteration.

After the inner loop, every tree ``i`` of the set gets a hardness ``h_i`` by ``hard_mining_order``:

* ``'loss'``: its loss (higher = harder);
* ``'f1'``: ``-F1_i``, the negated hard F1 of its finest prediction (lowest F1 = hardest);
* ``'balance'``: rarity of what it shows, ``h_i = sum_l a_il / sum_j a_jl`` with ``a_il`` the number of
  voxels of label ``l`` in tree ``i``'s finest label patch: the share of each label's voxels in the set
  that this tree holds, summed over labels, so trees with rare labels rank first and background-only
  trees score 0.

``keep = round(hard_mining * N)`` trees with the highest hardness are kept (ties by position), among those
kept fewer than ``hard_mining_maxage`` times before (``age < maxage``); the kept trees' age grows by one.
"""

from __future__ import annotations

import torch

from patchwork.errors import PatchworkError

Tensor = torch.Tensor


def hardness(order: str, loss: Tensor, f1: Tensor, label_voxels: Tensor) -> Tensor:
    """``[N]`` hardness by ``order`` from per-tree ``loss`` [N], ``f1`` [N] and ``label_voxels`` [N, L]."""
    if order == "loss":
        return loss
    if order == "f1":
        return -f1
    if order == "balance":
        totals = label_voxels.sum(dim=0, keepdim=True)
        return torch.where(
            totals > 0, label_voxels / totals.clamp(min=1e-12), torch.zeros_like(label_voxels)
        ).sum(1)
    raise PatchworkError(f"hard_mining_order must be 'loss', 'f1' or 'balance', got {order!r}")


def select_hard(hard: Tensor, age: Tensor, ratio: float, maxage: int) -> Tensor:
    """Indices (ascending) of the ``round(ratio * N)`` hardest trees with ``age < maxage``."""
    count = round(ratio * hard.shape[0])
    eligible = (age < maxage).nonzero().squeeze(1)
    if count == 0 or eligible.numel() == 0:
        return torch.zeros(0, dtype=torch.long)
    order = torch.sort(hard[eligible], descending=True, stable=True).indices
    return eligible[order[:count]].sort().values

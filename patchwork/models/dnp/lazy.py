"""lazyEval: expand only the most promising patches of a level (the paper's lazy evaluation).

A tree need not cover the whole image: where a coarse level already sees no target, its children can be
skipped. At level ``n`` every evaluated patch ``i`` gets an evidence score

    e_i = reduceFun( attentionFun( X_n,i ) )

(``X_n,i``: the prediction logits of the patch; ``attentionFun`` defaults to the foreground
probabilities, ``reduceFun`` reduces over channels and voxels, ``'max'`` or ``'mean'``), and only the
``ceil(fraction * N_n)`` patches with the highest scores receive children. With ``branch_factor = 1 /
fraction`` the number of patches per level stays the same; ``fraction = 1`` expands everything (no lazy
evaluation).

The settings are a :class:`~.settings.LazyEval`.

Example::

    kept = keep(LazyEval(fraction=0.5, reduceFun="max"), evidence)
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from patchwork.models.dnp.apply_settings import LazyEval

Tensor = torch.Tensor
AttentionFun = Callable[[Tensor], Tensor]


def identity(logits: Tensor) -> Tensor:
    """The attention ``'identity'``: the logits themselves."""
    return logits


# attentionFun by name (settings.ATTENTION_NAMES); 'sigmoid' is the default, the foreground probabilities
# (sigmoid outputs, or a softmax model's foreground classes)
NAMED_ATTENTION: dict[str, AttentionFun | None] = {"sigmoid": None, "identity": identity}


def attention_function(lazy: LazyEval) -> AttentionFun | None:
    """The ``attentionFun`` of ``lazy`` as a callable (``None``: the model's foreground probabilities)."""
    name = lazy.attentionFun
    return NAMED_ATTENTION[name] if isinstance(name, str) else name


def scores(lazy: LazyEval, attention: Tensor) -> Tensor:
    """Evidence ``e_i`` [N] of attention maps [N, ...]: ``reduceFun`` over all but the first axis."""
    flat = attention.reshape(attention.shape[0], -1)
    return flat.amax(dim=1) if lazy.reduceFun == "max" else flat.mean(dim=1)


def keep(lazy: LazyEval, evidence: Tensor) -> Tensor:
    """Indices (ascending) of the ``ceil(fraction * N)`` highest ``evidence``; ties keep the lower index."""
    count = max(1, math.ceil(lazy.fraction * evidence.shape[0] - 1e-9))
    order = torch.sort(evidence, descending=True, stable=True).indices
    return order[:count].sort().values

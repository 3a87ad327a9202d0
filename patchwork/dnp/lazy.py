"""lazyEval: expand only the most promising patches of a level (the paper's lazy evaluation).

A tree need not cover the whole image: where a coarse level already sees no target, its children can be
skipped. At level ``n`` every evaluated patch ``i`` gets an evidence score

    e_i = reduceFun( attentionFun( X_n,i ) )

(``X_n,i``: the prediction logits of the patch; ``attentionFun`` defaults to the foreground
probabilities, ``reduceFun`` reduces over channels and voxels, ``'max'`` or ``'mean'``), and only the
``ceil(fraction * N_n)`` patches with the highest scores receive children. With ``branch_factor = 1 /
fraction`` the number of patches per level stays the same; ``fraction = 1`` expands everything (no lazy
evaluation).

Example::

    LazyEval(fraction=0.5, reduceFun="max")
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Literal

import torch

from patchwork.errors import PatchworkError, check_keys

Tensor = torch.Tensor
ReduceFun = Literal["max", "mean"]
REDUCE_FUNS = ("max", "mean")
AttentionFun = Callable[[Tensor], Tensor]


def identity(logits: Tensor) -> Tensor:
    """The attention ``'identity'``: the logits themselves."""
    return logits


# attentionFun by name (as stored in a checkpoint's settings); 'sigmoid' is the default, the foreground
# probabilities (sigmoid outputs, or a softmax model's foreground classes)
NAMED_ATTENTION: dict[str, AttentionFun | None] = {"sigmoid": None, "identity": identity}


@dataclass(frozen=True)
class LazyEval:
    """``fraction`` in (0, 1] kept per level, ``reduceFun`` and ``attentionFun`` (logits -> attention map,
    ``None``: the model's foreground probabilities)."""

    fraction: float = 0.5
    reduceFun: ReduceFun = "max"  # noqa: N815 - the paper's name
    attentionFun: AttentionFun | None = None  # noqa: N815 - the paper's name

    def __post_init__(self) -> None:
        if isinstance(self.fraction, bool) or not isinstance(self.fraction, (int, float)):
            raise PatchworkError(f"lazyEval.fraction must be a number in (0, 1], got {self.fraction!r}")
        if not 0.0 < self.fraction <= 1.0:
            raise PatchworkError(f"lazyEval.fraction must be in (0, 1], got {self.fraction!r}")
        if self.reduceFun not in REDUCE_FUNS:
            raise PatchworkError(f"lazyEval.reduceFun must be one of {REDUCE_FUNS}, got {self.reduceFun!r}")
        if self.attentionFun is not None and not callable(self.attentionFun):
            raise PatchworkError(f"lazyEval.attentionFun must be callable, got {self.attentionFun!r}")

    @classmethod
    def from_value(cls, value: object) -> LazyEval | None:
        """Accept a :class:`LazyEval`, its dictionary (``attentionFun`` may be a name in
        :data:`NAMED_ATTENTION`), a dataclass with its fields, a bare ``fraction``, or ``None`` (off)."""
        if value is None or isinstance(value, LazyEval):
            return value
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            value = {f.name: getattr(value, f.name) for f in fields(value)}
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return cls(fraction=float(value))
        if not isinstance(value, Mapping):
            raise PatchworkError(f"lazyEval must be a dictionary or a fraction, got {value!r}")
        check_keys(value, (f.name for f in fields(cls)), "lazyEval")
        value = dict(value)
        name = value.get("attentionFun")
        if isinstance(name, str):
            if name not in NAMED_ATTENTION:
                raise PatchworkError(
                    f"lazyEval.attentionFun must be one of {sorted(NAMED_ATTENTION)}, got {name!r}"
                )
            value["attentionFun"] = NAMED_ATTENTION[name]
        return cls(**value)  # type: ignore[arg-type]

    def scores(self, attention: Tensor) -> Tensor:
        """Evidence ``e_i`` [N] of attention maps [N, ...], reduced over all but the first axis."""
        flat = attention.reshape(attention.shape[0], -1)
        return flat.amax(dim=1) if self.reduceFun == "max" else flat.mean(dim=1)

    def keep(self, scores: Tensor) -> Tensor:
        """Indices (ascending) of the ``ceil(fraction * N)`` highest ``scores``; ties keep the lower index."""
        count = max(1, math.ceil(self.fraction * scores.shape[0] - 1e-9))
        order = torch.sort(scores, descending=True, stable=True).indices
        return order[:count].sort().values

"""``out_typ``: how stitched probabilities are written (the paper's output types).

Probabilities ``p_l`` [L, *S] of the ``L`` foreground labels are encoded as

* ``'float32'``: ``p`` itself;
* ``'int16'``: ``round(32767 p)``; ``'uint8'``: ``round(255 p)`` (scaled probabilities, one channel each);
* ``'mask'`` or ``'mask:t1,t2,...'``: one binary channel per label, ``p_l > t_l``;
* ``'atls'`` or ``'atls:t1,t2,...'``: a label atlas (one map): the label value ``v_w`` of the winning
  label ``w = argmax_l p_l`` where ``p_w > t_w``, background 0 elsewhere.

One threshold applies to every label; without thresholds a sigmoid model uses 0.5 and a softmax model
``ce_threshold`` (a class wins only above this probability). Label values are the model's
``categorial_label`` (else ``1 .. L``).

Example::

    OutType.parse("atls:0.4").encode(probabilities, thresholds=(0.5,), label_values=(1, 2))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from patchwork.errors import PatchworkError

Tensor = torch.Tensor
Kind = Literal["float32", "int16", "uint8", "mask", "atls"]
SCALED = {"int16": (32767.0, torch.int16), "uint8": (255.0, torch.uint8)}
KINDS = ("float32", "int16", "uint8", "mask", "atls")


@dataclass(frozen=True)
class OutType:
    """A parsed ``out_typ``: the ``kind`` and the optional per-label ``thresholds``."""

    kind: Kind = "float32"
    thresholds: tuple[float, ...] | None = None

    @classmethod
    def parse(cls, value: OutType | str) -> OutType:
        """Parse ``'float32'``, ``'int16'``, ``'uint8'``, ``'mask[:t1,t2..]'`` or ``'atls[:t1,t2..]'``."""
        if isinstance(value, OutType):
            return value
        if not isinstance(value, str):
            raise PatchworkError(f"out_typ must be a string, got {value!r}")
        kind, _, rest = value.partition(":")
        if kind not in KINDS:
            raise PatchworkError(f"out_typ must start with one of {KINDS}, got {value!r}")
        if not rest:
            return cls(kind)  # type: ignore[arg-type]
        if kind not in ("mask", "atls"):
            raise PatchworkError(f"out_typ {kind!r} takes no thresholds, got {value!r}")
        try:
            thresholds = tuple(float(t) for t in rest.split(","))
        except ValueError:
            raise PatchworkError(f"out_typ thresholds must be numbers, got {value!r}") from None
        if not all(0.0 <= t <= 1.0 for t in thresholds):
            raise PatchworkError(f"out_typ thresholds must lie in [0, 1], got {value!r}")
        return cls(kind, thresholds)  # type: ignore[arg-type]

    def label_thresholds(self, count: int, default: float) -> Tensor:
        """One threshold per label (float32 ``[count]``): the given ones, one broadcast, or ``default``."""
        values = self.thresholds or (default,)
        if len(values) not in (1, count):
            raise PatchworkError(f"out_typ has {len(values)} thresholds for {count} labels")
        return torch.tensor(values, dtype=torch.float32).expand(count).clone()

    def encode(self, probabilities: Tensor, default_threshold: float, label_values: Sequence[int]) -> Tensor:
        """Encode ``probabilities`` [L, *S] (see the module docstring); ``atls`` returns one map ``[*S]``."""
        count = probabilities.shape[0]
        if self.kind == "float32":
            return probabilities.float()
        if self.kind in SCALED:
            scale, dtype = SCALED[self.kind]
            return torch.round(probabilities.clamp(0.0, 1.0) * scale).to(dtype)
        view = (count,) + (1,) * (probabilities.ndim - 1)
        thresholds = self.label_thresholds(count, default_threshold).to(probabilities.device).view(view)
        if self.kind == "mask":
            return (probabilities > thresholds).to(torch.uint8)
        if len(label_values) != count:
            raise PatchworkError(f"{len(label_values)} label values for {count} labels")
        best, winner = probabilities.max(dim=0)
        values = torch.as_tensor(tuple(label_values), dtype=torch.int64, device=probabilities.device)
        accepted = best > thresholds.view(-1)[winner]
        return torch.where(accepted, values[winner], torch.zeros_like(winner)).to(
            self.atlas_dtype(label_values)
        )

    @staticmethod
    def atlas_dtype(label_values: Sequence[int]) -> torch.dtype:
        """``uint8`` when every label value fits, else ``int16``."""
        return torch.uint8 if all(0 <= v <= 255 for v in label_values) else torch.int16


def numpy_dtype(dtype: torch.dtype) -> np.dtype:
    """The numpy type of a torch type (for writing the encoded output)."""
    return torch.empty(0, dtype=dtype).numpy().dtype

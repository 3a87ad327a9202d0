"""``out_typ``: how stitched probabilities are written (the paper's output types), parsed into an
:class:`~.settings.OutType`.

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

    encode(OutType.parse("atls:0.4"), probabilities, default_threshold=0.5, label_values=(1, 2))
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from patchwork.errors import PatchworkError
from patchwork.models.dnp.apply_settings import OutType

Tensor = torch.Tensor
SCALED = {"int16": (32767.0, torch.int16), "uint8": (255.0, torch.uint8)}


def label_thresholds(out_typ: OutType, count: int, default: float) -> Tensor:
    """One threshold per label (float32 ``[count]``): the given ones, one broadcast, or ``default``."""
    values = out_typ.thresholds or (default,)
    if len(values) not in (1, count):
        raise PatchworkError(f"out_typ has {len(values)} thresholds for {count} labels")
    return torch.tensor(values, dtype=torch.float32).expand(count).clone()


def encode(
    out_typ: OutType, probabilities: Tensor, default_threshold: float, label_values: Sequence[int]
) -> Tensor:
    """Encode ``probabilities`` [L, *S] (see the module docstring); ``atls`` returns one map ``[*S]``."""
    count = probabilities.shape[0]
    if out_typ.kind == "float32":
        return probabilities.float()
    if out_typ.kind in SCALED:
        scale, dtype = SCALED[out_typ.kind]
        return torch.round(probabilities.clamp(0.0, 1.0) * scale).to(dtype)
    view = (count,) + (1,) * (probabilities.ndim - 1)
    thresholds = label_thresholds(out_typ, count, default_threshold).to(probabilities.device).view(view)
    if out_typ.kind == "mask":
        return (probabilities > thresholds).to(torch.uint8)
    if len(label_values) != count:
        raise PatchworkError(f"{len(label_values)} label values for {count} labels")
    best, winner = probabilities.max(dim=0)
    values = torch.as_tensor(tuple(label_values), dtype=torch.int64, device=probabilities.device)
    accepted = best > thresholds.view(-1)[winner]
    return torch.where(accepted, values[winner], torch.zeros_like(winner)).to(atlas_dtype(label_values))


def atlas_dtype(label_values: Sequence[int]) -> torch.dtype:
    """``uint8`` when every label value fits, else ``int16``."""
    return torch.uint8 if all(0 <= v <= 255 for v in label_values) else torch.int16


def numpy_dtype(dtype: torch.dtype) -> np.dtype:
    """The numpy type of a torch type (for writing the encoded output)."""
    return torch.empty(0, dtype=dtype).numpy().dtype

"""The plans of every registered model type (``results/plans.json``), and a spec's params laid over them.

:func:`plan` reads the cohort from its fingerprint, takes nnU-Net's target spacing
(:mod:`~patchwork.planning.spacing`) and the memory a training step may use
(:mod:`~patchwork.planning.memory`), and asks each type of the registry (:data:`patchwork.models.MODEL_TYPES`)
for its sizes: a type plans itself (its row's ``plan``, e.g. :mod:`patchwork.models.unet.plan`,
:mod:`patchwork.models.dnp.plan`). :func:`merge_plans` lays a model spec's ``params`` over its type's
plan, so values written in the config win and everything left out comes from the plan. All of it is
plain arithmetic: no torch.

Example::

    plans = plan(read_json("results/fingerprint.json"), {"device": "cuda", "memory_gb": 40})
    params = merge_plans(spec["params"], plans["models"][spec["type"]], DNPParams)
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

from patchwork.errors import PatchworkError
from patchwork.models import MODEL_TYPES, model_type
from patchwork.planning.memory import usable_bytes
from patchwork.planning.spacing import Cohort, resampled_median_shape, target_spacing
from patchwork.settings import alternatives, field_class

PLANS_VERSION = 1
DEVICES = ("cuda", "cpu")


def plan(
    fingerprint: Mapping[str, Any], budget: Mapping[str, Any], spacing: Sequence[float] | None = None
) -> dict[str, Any]:
    """Plans for every model type (a JSON-able dict: what ``results/plans.json`` holds).

    ``budget``: ``{"device": "cuda" | "cpu", "memory_gb": GiB}``, the memory one training step may take
    (a GPU's memory, or a CPU budget from the config; see :mod:`~patchwork.planning.memory` for what is
    reserved). ``spacing``: a target spacing written in the config (``preprocess.target_spacing``), which
    then replaces nnU-Net's rule. Returns ``target_spacing`` and the resampled ``median_shape`` (every
    image axis), ``ndim`` and ``axes`` (the image axes the model plans cover: all, or the two of a 2-D
    cohort), and ``models``: per type ``{"params": ..., "derived": ...}``, ``params`` in the keys of the
    type's settings (its registry row's ``params``),
    ``derived`` what the plan computed on the way (pooling, voxel sizes per level, and ``memory_gb``: the
    estimated memory of a training step's tensors, which the budget less its reserve bounds).
    """
    device, memory_gb = _budget(budget)
    cohort = Cohort.from_fingerprint(fingerprint)
    if spacing is None:
        spacing = target_spacing(cohort)
    elif len(spacing) != cohort.spacings.shape[1] or min(spacing) <= 0:
        raise PatchworkError(
            f"plan: target spacing {list(spacing)} does not fit {cohort.spacings.shape[1]}-D images"
        )
    spacing = [float(s) for s in spacing]
    shape = resampled_median_shape(cohort, spacing)
    axes = list(cohort.axes)
    args = ([shape[a] for a in axes], [spacing[a] for a in axes], cohort.n_train, cohort.channels)
    usable = usable_bytes(device, memory_gb)
    return {
        "version": PLANS_VERSION,
        "budget": {"device": device, "memory_gb": memory_gb},
        "n_train": cohort.n_train,
        "target_spacing": spacing,
        "median_shape": shape,
        "ndim": cohort.ndim,
        "axes": axes,
        "models": {
            name: row.plan_function(*args, cohort.labels, device, usable) for name, row in MODEL_TYPES.items()
        },
    }


def merge_plans(
    spec_params: Mapping[str, Any], plans_for_type: Mapping[str, Any], params_class: type
) -> dict[str, Any]:
    """A model spec's ``params`` laid over its type's plan (``plans["models"][type]``), key by key.

    Nested dicts are merged; any other value written in ``spec_params`` replaces the planned one. Where
    the config names one key of a settings class's alternatives (:func:`patchwork.settings.alternatives` of
    ``params_class`` and its nested classes, e.g. the DNP scheme's ``fov_mm``/``fov_rel``), the planned
    others are dropped. Neither argument is modified.
    """
    if "params" not in plans_for_type:
        raise PatchworkError("merge_plans: expected a model type's plan with a 'params' entry")
    return _merge(plans_for_type["params"], spec_params, params_class)


def planned_spec(spec: Mapping[str, Any], plans: Mapping[str, Any]) -> dict[str, Any]:
    """A model spec as written in the config (a mapping) with its ``params`` laid over its type's plan
    (:func:`merge_plans`); a type the plans do not cover keeps its spec as it is."""
    for_type = plans.get("models", {}).get(spec.get("type"))
    if for_type is None:
        return dict(spec)
    params_class = model_type(spec["type"]).params_class
    return {**spec, "params": merge_plans(spec.get("params") or {}, for_type, params_class)}


def _merge(planned: Mapping[str, Any], given: Mapping[str, Any], cls: type | None) -> dict[str, Any]:
    """``given`` over ``planned``, recursively for dicts, for the settings class ``cls`` of this level
    (see :func:`merge_plans`)."""
    merged = copy.deepcopy(dict(planned))
    for group in alternatives(cls):
        if any(k in given for k in group):
            for key in group:
                merged.pop(key, None)
    for key, value in given.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _merge(merged[key], value, field_class(cls, key))
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _budget(budget: Mapping[str, Any]) -> tuple[str, float]:
    """The device and GiB of a budget mapping (else an error naming the key)."""
    if not isinstance(budget, Mapping) or set(budget) != {"device", "memory_gb"}:
        raise PatchworkError(f"plan: budget must be {{'device': ..., 'memory_gb': ...}}, got {budget!r}")
    device, memory = budget["device"], budget["memory_gb"]
    if device not in DEVICES:
        raise PatchworkError(f"plan: budget device={device!r}: expected one of {', '.join(DEVICES)}")
    if isinstance(memory, bool) or not isinstance(memory, (int, float)) or not memory > 0:
        raise PatchworkError(f"plan: budget memory_gb={memory!r}: must be a positive number")
    return device, float(memory)

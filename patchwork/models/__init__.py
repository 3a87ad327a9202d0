"""Model registry: one row per model ``type``, naming where the type's settings, plan, cost, training and
prediction live. A type is one folder under ``patchwork/models/`` and one row of :data:`MODEL_TYPES`;
nothing outside them names a type.

A model spec (an entry of the config's ``models:`` list) is parsed once, by :func:`parse_spec`, into a
:class:`ModelSpec`::

    {name, type: unet | dnp, threshold: 0.5, seed: null, params: {...}, apply: {...}}

``params`` are what training uses (changing them retrains); ``apply`` says how a trained model is applied
(changing it re-predicts, never retrains). Every other module asks :data:`MODEL_TYPES` instead of testing
``type == ...``. The table names its classes and functions by import path and loads them on first use, so
importing this module (and parsing a spec, planning and costing a training) never imports torch: the
workflow checks its whole config and sizes its jobs on a machine with only Snakemake installed.

Each model type's functions share one signature::

    plan(median_shape, spacing, n_train, in_channels, n_labels, device, usable_bytes)
        -> {"params": {...}, "derived": {...}}                          # torch-free
    cost(params, n_cases, case_voxels, channels) -> TrainingCost       # torch-free
    train(params, images, labels, affines, out_dir, seed, device=None,
          val_images=None, val_labels=None, val_affines=None) -> Path      # writes out_dir/model.pt
    predict(model_path, image, affine, apply, device=None, seed=0) -> (prob, std or None)

Example::

    spec = parse_spec({"name": "unet_a", "type": "unet", "params": {"iterations": 100}}, "my.yaml")
    spec.model_type.outputs  # ("prob", "seg")
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from patchwork.config import DEFAULT_THRESHOLD
from patchwork.errors import PatchworkError
from patchwork.settings import Settings, setting

if TYPE_CHECKING:
    from patchwork.training.cost import TrainingCost

RESERVED_NAMES = ("ensemble", "ensemble_tuned")
POSTPROCESSED_SUFFIX = "_pp"
NAME_PATTERN = rf"^(?![A-Za-z0-9_-]*{POSTPROCESSED_SUFFIX}$)[A-Za-z0-9_-]+$"


def _load(ref: str) -> Any:
    """The object an import path ``"package.module:name"`` names (the module imported on first use)."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class ModelType:
    """One row of the registry: where a model type's code lives and which files its prediction writes.

    ``params`` and ``apply`` name torch-free settings classes (:class:`~patchwork.settings.Settings`);
    ``plan``, ``cost``, ``train`` and ``predict`` the functions with the shared signatures of the module
    docstring (``plan`` and ``cost`` torch-free); ``outputs`` are the per-subject files of a prediction
    (``"std"``: the per-voxel spread of a stochastic model). ``check`` optionally names a torch-free
    ``(params, apply) -> None`` that checks the two sections together (the application against the model it
    applies), raising :class:`~patchwork.errors.PatchworkError`.
    """

    params: str
    apply: str
    plan: str
    cost: str
    train: str
    predict: str
    outputs: tuple[str, ...]
    check: str | None = None

    @property
    def params_class(self) -> type[Settings]:
        return _load(self.params)

    @property
    def apply_class(self) -> type[Settings]:
        return _load(self.apply)

    @property
    def plan_function(self) -> Callable[..., dict[str, Any]]:
        return _load(self.plan)

    @property
    def cost_function(self) -> Callable[..., TrainingCost]:
        return _load(self.cost)

    @property
    def train_function(self) -> Callable[..., Any]:
        return _load(self.train)

    @property
    def predict_function(self) -> Callable[..., Any]:
        return _load(self.predict)


MODEL_TYPES: dict[str, ModelType] = {
    "unet": ModelType(
        params="patchwork.models.unet.settings:UNetParams",
        apply="patchwork.models.unet.settings:UNetApply",
        plan="patchwork.models.unet.plan:plan_unet",
        cost="patchwork.models.unet.cost:training_cost",
        train="patchwork.models.unet.train:train_unet",
        predict="patchwork.models.unet.predict:predict_unet",
        outputs=("prob", "seg"),
    ),
    "dnp": ModelType(
        params="patchwork.models.dnp.settings:DNPParams",
        apply="patchwork.models.dnp.apply_settings:DNPApply",
        plan="patchwork.models.dnp.plan:plan_dnp",
        cost="patchwork.models.dnp.cost:training_cost",
        train="patchwork.models.dnp.train:train_dnp",
        predict="patchwork.models.dnp.predict:predict_dnp",
        outputs=("prob", "seg", "std"),
        check="patchwork.models.dnp.apply_settings:check_spec",
    ),
}


def model_type(name: str) -> ModelType:
    """The registry row of type ``name``, or an error naming the known types."""
    if name not in MODEL_TYPES:
        raise PatchworkError(f"unknown model type {name!r} (known: {', '.join(MODEL_TYPES)})")
    return MODEL_TYPES[name]


@dataclass(frozen=True)
class ModelSpec(Settings):
    """A model: name, type, threshold, seed, training params and application settings.

    ``params``/``apply`` are parsed by the settings classes of the type's registry row. The name (letters,
    digits, ``_``, ``-``) names the model's files; ``ensemble`` and ``ensemble_tuned`` are the ensemble's
    own, and a name ending in ``_pp`` is a model's post-processed masks. ``threshold`` binarises the
    probability (and is the model's own cut in the ``vote`` ensemble); ``seed`` (default: the run's
    seed) seeds training and stochastic application.
    """

    what: ClassVar[str] = "model"
    name: str = setting(
        pattern=NAME_PATTERN,
        description=f"letters, digits, _ and -, not ending in {POSTPROCESSED_SUFFIX}",
        doc="letters, digits, `_`, `-`; names the model's folders under `results/`",
        **{"not": {"enum": list(RESERVED_NAMES)}},
    )
    type: str = setting(doc="the model type, a row of the registry (`patchwork.models.MODEL_TYPES`)")
    params: Any = setting(
        None,
        type="object",
        optional=True,
        doc="training settings of the type (below; what the config leaves out comes from the plans); "
        "changing them retrains",
    )
    apply: Any = setting(
        None,
        type="object",
        optional=True,
        doc="how the trained model is applied (below); changing them re-predicts, never retrains",
    )
    threshold: float = setting(
        DEFAULT_THRESHOLD,
        minimum=0,
        maximum=1,
        doc="binarises the model's probability (and is its own threshold in the `vote` ensemble); changing "
        "it re-predicts, never retrains",
    )
    seed: int | None = setting(
        None, doc="seed of this model's training and stochastic application (null: the run's `seed`)"
    )

    def normalise(self) -> None:
        """``params`` and ``apply`` built by the settings classes of the model's type (a registered one)."""
        if self.type not in MODEL_TYPES:
            raise PatchworkError(f"type={self.type!r}: expected one of {', '.join(MODEL_TYPES)}")
        row = MODEL_TYPES[self.type]
        for name, cls in (("params", row.params_class), ("apply", row.apply_class)):
            object.__setattr__(self, name, cls.coerce(getattr(self, name) or {}, f"{self.what}: {cls.what}"))

    def problems(self) -> list[str]:
        """The application settings checked against the training settings (the type's ``check``)."""
        row = MODEL_TYPES.get(self.type)
        if row is None or row.check is None:
            return []
        try:
            _load(row.check)(self.params, self.apply)
        except PatchworkError as err:
            return err.problems
        return []

    @classmethod
    def coerce(cls, value: Any, what: str) -> ModelSpec:
        """A model spec of a config's ``models`` list (see :func:`parse_spec`)."""
        return value if isinstance(value, ModelSpec) else parse_spec(value, what)

    @property
    def model_type(self) -> ModelType:
        return MODEL_TYPES[self.type]

    def training_dict(self) -> dict[str, Any]:
        """What training depends on (``patchwork train --spec``, ``spec.json``): name, type and params."""
        return {"name": self.name, "type": self.type, "params": self.params.to_dict()}


def parse_spec(spec: Any, source: str) -> ModelSpec:
    """Validate a model spec once; every error line starts with ``source`` and the model's name.

    Checks everything that can be checked without torch: the keys, the name, the type, the threshold (in
    [0, 1]), the seed, ``params``/``apply`` through the type's settings classes, and the two together
    through the type's ``check``.
    """
    if not isinstance(spec, Mapping) or "name" not in spec or "type" not in spec:
        raise PatchworkError(f"{source}: a model needs 'name' and 'type' (got {spec!r})")
    return ModelSpec.from_dict(spec, f"{source}: model {spec['name']}")

"""The workflow's configuration: one frozen settings dataclass per section, each owning its defaults.

``config/config.yaml`` holds exactly these defaults (a test checks it), the config schema
(``workflow/schemas/config.schema.yaml``) is generated from these classes (``patchwork schema``), and every
``patchwork`` command takes its section as ``--settings JSON``: defaults and limits are written once, here.
This module imports no torch, so the Snakefile can parse and check the whole config with
:meth:`WorkflowConfig.from_dict`.

Example::

    cfg = WorkflowConfig.from_dict(yaml.safe_load(open("config/config.yaml")), "config/config.yaml")
    cfg.ensemble.threshold  # 0.5
    EnsembleSettings.from_dict({"mode": "vote"})
"""

from __future__ import annotations

import dataclasses
import typing
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from patchwork.errors import PatchworkError, check_keys
from patchwork.models import DEFAULT_THRESHOLD, ModelSpec, parse_spec
from patchwork.schema import check_fields, in_config, json_schema, setting
from patchwork.settings import coerce_field, dataclass_from_dict

S = TypeVar("S", bound="Section")

ENSEMBLE_MODES = ("mean", "vote")
NORMALIZATIONS = ("zscore_nonzero", "zscore", "none")
DEMO_APPEARANCES = ("t1", "flair")  # the demo's lesion appearances (patchwork.data.demo.APPEARANCES)
DEFAULT_MAX_IMAGE_BYTES = 4 * 2**30  # what one image file may decompress to (gzip bombs are refused)


class Section:
    """Base of the config sections: built from a mapping with every key, type and limit checked."""

    what: ClassVar[str] = "settings"

    def __post_init__(self) -> None:
        problems = check_fields(self)
        if problems:
            raise PatchworkError(problems=[f"{self.what}: {p}" for p in problems])

    @classmethod
    def from_dict(cls: type[S], d: Any) -> S:
        """The section from a plain mapping; error lines start with the section's name."""
        return dataclass_from_dict(cls, d, cls.what)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON builtins (tuples as lists); ``type(s).from_dict(s.to_dict()) == s``."""
        return {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(self).items()  # type: ignore[call-overload]
        }


@dataclass(frozen=True)
class DemoSettings(Section):
    """The generated demo cohort (used when ``dataset`` is ``demo``)."""

    what: ClassVar[str] = "demo"
    n_train: int = setting(20, minimum=2)
    n_test: int = setting(5, minimum=0)
    spacing: float = setting(2.0, minimum=1, maximum=8)
    appearance: str = setting("t1", enum=list(DEMO_APPEARANCES))


@dataclass(frozen=True)
class BidsSettings(Section):
    """A BIDS cohort: the files of each image channel and of the label, chosen by their BIDS entities.

    Each filter maps entity keys (``suffix``, ``datatype`` and the BIDS entities: ``acq``, ``space``,
    ``label``, ``desc`` ...) to the value a file must have; entities a filter leaves out may take any value.
    The defaults read ATLAS R2.0. ``unlabelled``: ``error`` reports a session without a label, ``test``
    makes it a test subject.
    """

    what: ClassVar[str] = "ingest.bids"
    channels: dict[str, dict[str, str]] = setting({"T1w": {"suffix": "T1w"}})
    label: dict[str, str] = setting({"suffix": "mask", "label": "L", "desc": "T1lesion"})
    unlabelled: str = setting("error", enum=["error", "test"])


@dataclass(frozen=True)
class IngestSettings(Section):
    """Reading the cohort: label values, the allowed affine mismatch, the largest image one file may hold.

    ``labels`` null: a folder's ``dataset.json`` declares them, a CSV manifest gets background 0 and
    lesion 1; given, they must match a folder's ``dataset.json``. ``max_image_bytes`` bounds what one file
    may decompress to, so a corrupt or hostile file (a gzip bomb) is refused in one line. ``bids``: which
    files of a BIDS folder are read (a BIDS folder's labels default as a CSV manifest's).
    """

    what: ClassVar[str] = "ingest"
    labels: dict[str, int] | None = setting(None, additionalProperties={"minimum": 0, "maximum": 255})
    affine_tolerance: float = setting(1e-3, minimum=0)
    max_image_bytes: int = setting(DEFAULT_MAX_IMAGE_BYTES, minimum=1)
    bids: BidsSettings = dataclasses.field(default_factory=BidsSettings)


@dataclass(frozen=True)
class ThreadSettings(Section):
    """CPU threads of each training and prediction job."""

    what: ClassVar[str] = "threads"
    train: int = setting(2, minimum=1)
    predict: int = setting(1, minimum=1)


@dataclass(frozen=True)
class PreprocessSettings(Section):
    """Resampling, intensity normalisation and cropping (nnU-Net's preprocessing)."""

    what: ClassVar[str] = "preprocess"
    target_spacing: tuple[float, float, float] | None = setting(None, items={"exclusiveMinimum": 0})
    normalization: str = setting("zscore_nonzero", enum=list(NORMALIZATIONS))
    crop_nonzero: bool = True
    symmetry: bool = False

    def resolved(self, fingerprint: Mapping[str, Any]) -> PreprocessSettings:
        """These settings with the target spacing preprocessing uses: null means nnU-Net's rule on the
        cohort's ``fingerprint`` (the median spacing; the coarse axis of an anisotropic cohort finer,
        :func:`patchwork.planning.spacing.target_spacing`), which the plans use too."""
        if self.target_spacing is not None:
            return self
        from patchwork.planning.spacing import Cohort, target_spacing

        spacing = tuple(target_spacing(Cohort.from_fingerprint(fingerprint)))
        return dataclasses.replace(self, target_spacing=spacing)  # type: ignore[arg-type]


@dataclass(frozen=True)
class PlanningSettings(Section):
    """The memory one training step may take, from which every model's sizes are planned.

    ``memory_gb`` (null: the GPU's memory when training runs on CUDA, else ``cpu_memory_gb``) bounds the
    estimated tensors of one training step (:mod:`patchwork.planning`); the plans go to
    ``results/plans.json`` and fill every model setting the config leaves out.
    """

    what: ClassVar[str] = "planning"
    memory_gb: float | None = setting(None, exclusiveMinimum=0)
    cpu_memory_gb: float = setting(2.0, exclusiveMinimum=0)


@dataclass(frozen=True)
class SplitSettings(Section):
    """Cross-validation folds, or a splits file of the user's own."""

    what: ClassVar[str] = "splits"
    n_folds: int = setting(5, minimum=2)
    file: str | None = None


@dataclass(frozen=True)
class EnsembleSettings(Section):
    """How the models' probabilities are combined (see :mod:`patchwork.ensembling.combine`).

    ``weights`` and ``model_thresholds`` are keyed by model name; a model missing from ``weights`` weighs
    1, one missing from ``model_thresholds`` (set by the command line from each model's ``threshold``)
    is cut at the models' default threshold.
    """

    what: ClassVar[str] = "ensemble"
    mode: str = setting("mean", enum=list(ENSEMBLE_MODES))
    weights: dict[str, float] = setting({}, additionalProperties={"minimum": 0})
    threshold: float = setting(0.5, minimum=0, maximum=1)
    min_component_voxels: int = setting(0, minimum=0)
    tune: bool = True
    model_thresholds: dict[str, float] = setting(
        {}, config=False, additionalProperties={"minimum": 0, "maximum": 1}
    )

    def weight(self, model: str) -> float:
        """The weight of ``model`` (1 when not given)."""
        return self.weights.get(model, 1.0)

    def model_threshold(self, model: str) -> float:
        """The own threshold of ``model`` in the ``vote`` mode."""
        return self.model_thresholds.get(model, DEFAULT_THRESHOLD)


@dataclass(frozen=True)
class PostprocessingSettings(Section):
    """Each model's post-processing, chosen on its out-of-fold predictions.

    Threshold, smallest kept component volume and peak (:mod:`patchwork.postprocessing.components`); the
    post-processed masks are evaluated as ``{model}_pp``.
    """

    what: ClassVar[str] = "postprocessing"
    tune: bool = True


@dataclass(frozen=True)
class EvaluateSettings(Section):
    """Evaluation against the reference segmentations."""

    what: ClassVar[str] = "evaluate"
    surface_tolerance_mm: float = setting(2.0, exclusiveMinimum=0)


@dataclass(frozen=True)
class SubmissionSettings(Section):
    """The packaged challenge entry: final all-data models and test predictions."""

    what: ClassVar[str] = "submission"
    enabled: bool = True


@dataclass(frozen=True, kw_only=True)
class WorkflowConfig:
    """Configuration of the patchwork workflow (see config/README.md)."""

    dataset: str = "demo"
    demo: DemoSettings = dataclasses.field(default_factory=DemoSettings)
    ingest: IngestSettings = dataclasses.field(default_factory=IngestSettings)
    seed: int = 0
    results: str = "results"
    device: str | None = None
    threads: ThreadSettings = dataclasses.field(default_factory=ThreadSettings)
    preprocess: PreprocessSettings = dataclasses.field(default_factory=PreprocessSettings)
    planning: PlanningSettings = dataclasses.field(default_factory=PlanningSettings)
    splits: SplitSettings = dataclasses.field(default_factory=SplitSettings)
    models: tuple[ModelSpec, ...] = setting(minItems=1)
    ensemble: EnsembleSettings = dataclasses.field(default_factory=EnsembleSettings)
    postprocessing: PostprocessingSettings = dataclasses.field(default_factory=PostprocessingSettings)
    evaluate: EvaluateSettings = dataclasses.field(default_factory=EvaluateSettings)
    submission: SubmissionSettings = dataclasses.field(default_factory=SubmissionSettings)

    @classmethod
    def from_dict(cls, d: Any, source: str) -> WorkflowConfig:
        """Parse and check a whole config mapping; each problem is one error line starting with ``source``."""
        if not isinstance(d, Mapping):
            raise PatchworkError(f"{source}: expected a mapping, got {type(d).__name__}")
        check_keys(d, (f.name for f in dataclasses.fields(cls)), source)
        hints = typing.get_type_hints(cls)
        problems: list[str] = []
        kwargs: dict[str, Any] = {}
        for name, value in d.items():
            try:
                if name == "models":
                    kwargs[name] = _parse_models(value, source)
                elif isinstance(hints[name], type) and issubclass(hints[name], Section):
                    kwargs[name] = _parse_section(hints[name], value, source)
                else:
                    kwargs[name] = coerce_field(value, hints[name])
            except PatchworkError as err:
                problems += err.problems
            except TypeError as err:
                problems.append(f"{source}: {name}={value!r}: {err}")
        if "models" not in d:
            problems.append(f"{source}: models: at least one model is needed")
        if problems:
            raise PatchworkError(problems=problems)
        config = cls(**kwargs)
        unknown = sorted(set(config.ensemble.weights) - {m.name for m in config.models})
        if unknown:
            raise PatchworkError(f"{source}: ensemble.weights: no model named {', '.join(unknown)}")
        return config


def _parse_section(cls: type[S], value: Any, source: str) -> S:
    """A config section (error lines start with ``source``); keys only the command line sets are refused."""
    cli_only = [f.name for f in dataclasses.fields(cls) if not in_config(f)]  # type: ignore[arg-type]
    given = [k for k in cli_only if isinstance(value, Mapping) and k in value]
    if given:
        raise PatchworkError(
            f"{source}: {cls.what}: {', '.join(given)}: not a config key (command line only)"
        )
    try:
        return cls.from_dict(value)
    except PatchworkError as err:
        raise PatchworkError(problems=[f"{source}: {p}" for p in err.problems]) from None


def _parse_models(value: Any, source: str) -> tuple[ModelSpec, ...]:
    """The ``models:`` list, each spec parsed; at least one model, names unique."""
    if not isinstance(value, list) or not value:
        raise PatchworkError(f"{source}: models: expected a non-empty list of model specs")
    problems: list[str] = []
    specs = []
    for spec in value:
        try:
            specs.append(parse_spec(spec, f"{source}: models"))
        except PatchworkError as err:
            problems += err.problems
    twice = sorted(name for name, n in Counter(s.name for s in specs).items() if n > 1)
    if twice:
        problems.append(f"{source}: models: the name(s) {', '.join(twice)} appear more than once")
    if problems:
        raise PatchworkError(problems=problems)
    return tuple(specs)


def config_schema() -> dict[str, Any]:
    """The JSON schema of the whole config (``workflow/schemas/config.schema.yaml``)."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **json_schema(WorkflowConfig)}


def schema_yaml() -> str:
    """:func:`config_schema` as the YAML text of ``workflow/schemas/config.schema.yaml``."""
    import yaml

    header = "# Generated from patchwork/config.py by `patchwork schema`; do not edit (a test compares).\n"
    return header + yaml.safe_dump(config_schema(), sort_keys=False, width=110, allow_unicode=True)

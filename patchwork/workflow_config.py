"""The whole workflow configuration: :class:`WorkflowConfig` (every section and the models), its JSON schema
and the tables of ``config/README.md``, all generated from the settings classes.

The config schema (``workflow/schemas/config.schema.yaml``) is generated here (``patchwork schema``), and so
are ``config/README.md``'s tables (``patchwork schema --readme config/README.md``). This module imports no
torch, so the Snakefile can parse and check the whole config with :meth:`WorkflowConfig.from_dict`.

Example::

    cfg = WorkflowConfig.from_dict(yaml.safe_load(open("config/config.yaml")), "config/config.yaml")
    cfg.ensemble.threshold  # 0.5
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from patchwork.config import (
    DemoSettings,
    EnsembleSettings,
    EntrySettings,
    EvaluateSettings,
    IngestSettings,
    PlanningSettings,
    PostprocessingSettings,
    PreprocessSettings,
    SplitSettings,
    ThreadSettings,
)
from patchwork.models import MODEL_TYPES, ModelSpec
from patchwork.schema import json_schema, replace_tables, shared, tables_of
from patchwork.settings import Settings, setting


@dataclass(frozen=True, kw_only=True)
class WorkflowConfig(Settings):
    """Configuration of the patchwork workflow (see config/README.md)."""

    what: ClassVar[str] = "config"
    dataset: str = setting(
        "demo",
        doc="the cohort: `demo` (generated into `results/demo/`), a folder in nnU-Net v2 / MSD raw layout "
        "(`dataset.json`, `imagesTr/{id}_0000.nii.gz`, `labelsTr/{id}.nii.gz`, optional `imagesTs/`), a "
        "BIDS folder, or a CSV manifest",
    )
    demo: DemoSettings = setting(DemoSettings(), doc="the generated demo cohort")
    ingest: IngestSettings = setting(IngestSettings(), doc="reading and checking the cohort")
    seed: int = setting(
        0, doc="seed of every random choice: demo cohort, splits, patch sampling, weight initialisation"
    )
    results: str = setting("results", doc="output folder")
    device: str | None = setting(None, doc="null: CUDA when present, else CPU; or `cpu`, `cuda`, `cuda:1`")
    threads: ThreadSettings = setting(ThreadSettings(), doc="CPU threads of the jobs")
    preprocess: PreprocessSettings = setting(PreprocessSettings(), doc="nnU-Net's preprocessing")
    planning: PlanningSettings = setting(PlanningSettings(), doc="self-configuration")
    splits: SplitSettings = setting(SplitSettings(), doc="cross-validation")
    models: tuple[ModelSpec, ...] = setting(
        minItems=1,
        doc="list of models, each `{name, type, threshold, seed, params, apply}` (below); names are unique, "
        "and `ensemble` / `ensemble_tuned` are taken by the ensemble",
    )
    ensemble: EnsembleSettings = setting(EnsembleSettings(), doc="combining the models")
    postprocessing: PostprocessingSettings = setting(
        PostprocessingSettings(), doc="each model's post-processing"
    )
    evaluate: EvaluateSettings = setting(EvaluateSettings(), doc="evaluation")
    entry: EntrySettings = setting(EntrySettings(), doc="the challenge entry")

    def problems(self) -> list[str]:
        """Model names are unique, and every weighted model exists."""
        problems = []
        twice = sorted(name for name, n in Counter(m.name for m in self.models).items() if n > 1)
        if twice:
            problems.append(f"models: the name(s) {', '.join(twice)} appear more than once")
        unknown = sorted(set(self.ensemble.weights) - {m.name for m in self.models})
        if unknown:
            problems.append(f"ensemble.weights: no model named {', '.join(unknown)}")
        return problems


def config_schema() -> dict[str, Any]:
    """The JSON schema of the whole config (``workflow/schemas/config.schema.yaml``): every section, and
    each model type's ``params`` and ``apply`` by the model's ``type``. The models' settings carry no
    defaults there (Snakemake's validation would write them into the config, where they would win over the
    plans); their settings classes and the plans fill what a model leaves out."""
    schema = json_schema(WorkflowConfig)
    models = schema["properties"]["models"]
    models["items"] = json_schema(ModelSpec)
    models["items"]["properties"]["type"]["enum"] = list(MODEL_TYPES)
    models["items"] |= {
        "allOf": [
            {
                "if": {"properties": {"type": {"const": name}}},
                "then": {
                    "properties": {
                        "params": json_schema(row.params_class, defaults=False),
                        "apply": json_schema(row.apply_class, defaults=False),
                    }
                },
            }
            for name, row in MODEL_TYPES.items()
        ]
    }
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


SHIPPED_CONFIGS = ("config.yaml", "cpu.yaml")  # config/ files that weigh their own DNP in the ensemble


def ensemble_weights_of_present_models(config: Mapping[str, Any], config_dir: str) -> dict[str, float]:
    """The config's ``ensemble.weights`` without the weights of shipped models (named in a
    :data:`SHIPPED_CONFIGS` file) that its ``models:`` list does not hold: a config that brings models of its
    own is not held to the shipped DNP's weight. Any other unknown name stays, for the check to report."""
    import yaml

    shipped: set[str] = set()
    for name in SHIPPED_CONFIGS:
        with open(f"{config_dir}/{name}", encoding="utf-8") as fh:
            shipped |= {m["name"] for m in yaml.safe_load(fh)["models"]}
    present = {m["name"] for m in config["models"]}
    weights = config["ensemble"].get("weights", {})
    return {name: w for name, w in weights.items() if name not in shipped or name in present}


def schema_yaml() -> str:
    """:func:`config_schema` as the YAML text of ``workflow/schemas/config.schema.yaml``."""
    import yaml

    header = (
        "# Generated from the settings classes (patchwork/config.py, each model type's settings) by\n"
        "# `patchwork schema`; do not edit (a test compares).\n"
    )
    return header + yaml.safe_dump(config_schema(), sort_keys=False, width=110, allow_unicode=True)


def config_tables(preset: Mapping[str, Any]) -> dict[str, str]:
    """The tables of ``config/README.md``: the config's keys, a model's, and each model type's ``params``
    and ``apply`` (``{type}.params``, ``{type}.apply``), with their defaults, the values the CPU ``preset``
    (``config/cpu.yaml``, what the demo runs) sets, and their docs."""
    preset_models = preset.get("models") or []
    sections: dict[str, tuple[type, Mapping[str, Any] | None]] = {
        "config": (WorkflowConfig, {k: v for k, v in preset.items() if k != "models"}),
        "model": (ModelSpec, None),
    }
    for name, row in MODEL_TYPES.items():
        of_type = [m for m in preset_models if m.get("type") == name]
        sections[f"{name}.params"] = (row.params_class, shared([m.get("params") or {} for m in of_type]))
        sections[f"{name}.apply"] = (row.apply_class, shared([m.get("apply") or {} for m in of_type]))
    return tables_of(sections)


def documented_readme(text: str, preset: Mapping[str, Any]) -> str:
    """``config/README.md``'s ``text`` with its generated tables (:func:`config_tables`) made anew from the
    settings classes and the CPU ``preset`` (``patchwork schema --readme config/README.md``)."""
    return replace_tables(text, config_tables(preset))

"""The config: each settings class owns its defaults; config.yaml, the schema and the demo agree with it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from patchwork.config import EnsembleSettings, PreprocessSettings
from patchwork.errors import PatchworkError
from patchwork.settings import Settings, default_of, merged
from patchwork.workflow_config import WorkflowConfig, config_schema, documented_readme, schema_yaml

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "config" / name).read_text())


def test_committed_schema_is_the_generated_one() -> None:
    committed = (ROOT / "workflow" / "schemas" / "config.schema.yaml").read_text()
    assert committed == schema_yaml(), (
        "regenerate with: patchwork schema > workflow/schemas/config.schema.yaml"
    )


def test_config_readme_tables_are_the_generated_ones() -> None:
    """Every key of every settings class (each model type's params and apply included) is in
    config/README.md with its default, the demo's value and its doc, as the classes say."""
    readme = (ROOT / "config" / "README.md").read_text()
    assert readme == documented_readme(readme, _load("cpu.yaml")), (
        "regenerate with: patchwork schema --readme config/README.md"
    )
    assert "| `explore` | `1.0` |" in readme and "| `max_trees` | `null` |" in readme
    assert "| `train.num_its` | `30` | `14` |" in readme  # the demo DNP's outer iterations, from cpu.yaml


def test_every_value_in_config_yaml_is_the_settings_default() -> None:
    raw = _load("config.yaml")
    for f in dataclasses.fields(WorkflowConfig):
        if f.name in ("dataset", "models"):
            continue
        value = default_of(f)
        expected = value.to_dict() if isinstance(value, Settings) else value
        if f.name == "ensemble":  # the weights name the config's models, as the models list does
            expected = {k: v for k, v in expected.items() if k != "model_thresholds"}
            expected["weights"] = raw["ensemble"]["weights"]
        assert raw[f.name] == expected, f.name
    assert set(raw) == {f.name for f in dataclasses.fields(WorkflowConfig)}


def test_the_default_config_trains_the_dnp_beside_the_u_nets_as_atlas_r2() -> None:
    """Real data gets the demo's three-model ensemble: a DNP whose sizes the plans fill in (no crop or model
    section, no batch size written), voted with weight 2 as in ATLAS R2.0."""
    config = WorkflowConfig.from_dict(_load("config.yaml"), "config.yaml")
    assert sorted(m.type for m in config.models) == ["dnp", "unet", "unet"]
    raw_dnp = next(m for m in _load("config.yaml")["models"] if m["type"] == "dnp")
    assert set(raw_dnp["params"]) == {"train"} and "batch_size" not in raw_dnp["params"]["train"]
    assert config.ensemble.mode == "vote" and config.ensemble.weight("dnp") == 2.0


@pytest.mark.parametrize(
    "overlays", [["config.yaml"], ["config.yaml", "cpu.yaml"], ["config.yaml", "cpu.yaml", "demo_dnp.yaml"]]
)
def test_shipped_configs_parse_and_pass_the_schema(overlays: list[str]) -> None:
    raw: dict[str, Any] = {}
    for name in overlays:
        raw = merged(raw, _load(name))
    jsonschema.validate(raw, config_schema())
    config = WorkflowConfig.from_dict(raw, "+".join(overlays))
    assert config.models and config.models[0].name == "unet_sigmoid"


def test_demo_overlay_holds_the_small_budgets() -> None:
    demo = WorkflowConfig.from_dict(merged(_load("config.yaml"), _load("cpu.yaml")), "demo")
    assert demo.splits.n_folds == 3 and demo.preprocess.target_spacing == (3.0, 3.0, 3.0)
    assert demo.ensemble.min_component_voxels == 27
    assert demo.ensemble.mode == "vote" and demo.ensemble.weight("dnp") == 2.0  # ATLAS R2.0's ensemble
    assert [m.name for m in demo.models] == ["unet_sigmoid", "unet_softmax", "dnp"]
    assert {m.params.iterations for m in demo.models if m.type == "unet"} == {150}


def test_atlas2_moves_application_settings_to_the_model_level() -> None:
    raw = merged(_load("config.yaml"), _load("atlas2.yaml"))
    dnp = next(m for m in raw["models"] if m["type"] == "dnp")
    assert "apply" in dnp and "apply" not in dnp["params"]
    jsonschema.validate(raw, config_schema())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"models": [{"name": "a", "type": "unet"}] * 2}, "cfg: models: the name(s) a appear more than once"),
        ({"models": [{"name": "ensemble", "type": "unet"}]}, "cfg: models: model ensemble: name='ensemble'"),
        ({"models": []}, "cfg: models: needs at least 1 entries"),
        ({"ensemble": {"model_thresholds": {"a": 0.5}}}, "cfg: ensemble: model_thresholds: not a config key"),
        ({"ensemble": {"weights": {"b": 1.0}}}, "cfg: ensemble.weights: no model named b"),
        ({"ensemble": {"threshold": 2}}, "cfg: ensemble: threshold=2.0: must be <= 1"),
        ({"splits": {"n_folds": 1}}, "cfg: splits: n_folds=1: must be >= 2"),
        ({"preprocess": {"normalization": "minmax"}}, "cfg: preprocess: normalization='minmax'"),
        ({"threads": {"train": 0}}, "cfg: threads: train=0: must be >= 1"),
        ({"demo": {"target_spacing": 3.0}}, "cfg: demo: unknown key(s) target_spacing"),
        ({"labels": {"lesion": 1}}, "cfg: unknown key(s) labels"),
        ({"seed": "1"}, "cfg: seed='1': expected an integer"),
    ],
)
def test_bad_config_is_one_error_line_naming_the_key(change: dict[str, Any], message: str) -> None:
    raw = {"models": [{"name": "a", "type": "unet"}], **change}
    with pytest.raises(PatchworkError) as err:
        WorkflowConfig.from_dict(raw, "cfg")
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith(message)


def test_schema_and_settings_reject_the_same_values() -> None:
    schema = config_schema()
    for section, bad in [("ensemble", {"threshold": 2}), ("preprocess", {"target_spacing": [1, 0, 1]})]:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({"models": [{"name": "a", "type": "unet"}], section: bad}, schema)
    with pytest.raises(PatchworkError, match="ensemble: threshold=2.0"):
        EnsembleSettings.from_dict({"threshold": 2})
    with pytest.raises(PatchworkError, match=r"preprocess: target_spacing\[1\]=0.0: must be > 0"):
        PreprocessSettings.from_dict({"target_spacing": [1, 0, 1]})


def test_sections_round_trip_and_mapping_values_are_checked() -> None:
    settings = EnsembleSettings.from_dict({"weights": {"a": 2}, "model_thresholds": {"a": 0.3}})
    assert EnsembleSettings.from_dict(settings.to_dict()) == settings
    assert settings.weight("a") == 2 and settings.weight("b") == 1.0 and settings.model_threshold("b") == 0.5
    with pytest.raises(PatchworkError, match=r"ensemble: weights.a='x': expected number"):
        EnsembleSettings.from_dict({"weights": {"a": "x"}})

"""The model registry and model specs: torch-free parsing, one error line naming the key, dispatch."""

from __future__ import annotations

import pytest

from patchwork.config import DEFAULT_THRESHOLD
from patchwork.errors import PatchworkError
from patchwork.models import MODEL_TYPES, ModelSpec, parse_spec
from patchwork.models.unet.settings import UNetApply, UNetParams


def test_every_registry_row_resolves_its_settings_and_functions() -> None:
    for name, row in MODEL_TYPES.items():
        assert row.outputs[:2] == ("prob", "seg"), name
        for cls in (row.params_class, row.apply_class):
            assert cls.from_dict(cls.from_dict({}).to_dict()) == cls.from_dict({})
    assert MODEL_TYPES["unet"].params_class is UNetParams and MODEL_TYPES["unet"].apply_class is UNetApply
    assert "std" in MODEL_TYPES["dnp"].outputs and "std" not in MODEL_TYPES["unet"].outputs


def test_unet_train_and_predict_are_the_registry_functions() -> None:
    from patchwork.models.unet import predict_unet, train_unet

    assert MODEL_TYPES["unet"].train_function is train_unet
    assert MODEL_TYPES["unet"].predict_function is predict_unet


def test_spec_parses_once_into_settings_objects_and_round_trips() -> None:
    raw = {"name": "u", "type": "unet", "params": {"iterations": 7}, "apply": {"overlap": 0.25}, "seed": 4}
    spec = parse_spec(raw, "my.yaml")
    assert isinstance(spec, ModelSpec)
    assert spec.params == UNetParams(iterations=7) and spec.apply == UNetApply(overlap=0.25)
    assert spec.threshold == DEFAULT_THRESHOLD and spec.seed == 4
    assert parse_spec(spec.to_dict(), "again") == spec
    assert spec.training_dict() == {"name": "u", "type": "unet", "params": UNetParams(iterations=7).to_dict()}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "unet"}, "my.yaml: a model needs 'name' and 'type'"),
        ({"name": "m", "type": "resnet"}, "my.yaml: model m: type='resnet': expected one of unet, dnp"),
        ({"name": "m", "type": "unet", "thresh": 1}, "my.yaml: model m: unknown key(s) thresh"),
        ({"name": "ensemble", "type": "unet"}, "my.yaml: model ensemble: name='ensemble': not allowed"),
        ({"name": "ensemble_tuned", "type": "unet"}, "name='ensemble_tuned': not allowed"),
        ({"name": "a b", "type": "unet"}, "my.yaml: model a b: name='a b': must be letters"),
        ({"name": "m", "type": "unet", "threshold": 1.5}, "my.yaml: model m: threshold=1.5: must be <= 1"),
        (
            {"name": "m", "type": "unet", "threshold": "x"},
            "my.yaml: model m: threshold='x': expected a finite",
        ),
        ({"name": "m", "type": "unet", "seed": 1.5}, "my.yaml: model m: seed=1.5: expected an integer"),
        (
            {"name": "m", "type": "unet", "params": {"no_such": 1}},
            "my.yaml: model m: unet params: unknown key",
        ),
        (
            {"name": "m", "type": "unet", "params": {"overlap": 0.5}},
            "model m: unet params: unknown key(s) overlap",
        ),
        ({"name": "m", "type": "unet", "apply": {"overlap": 1}}, "my.yaml: model m: unet apply: overlap=1"),
        ({"name": "m", "type": "dnp", "apply": {"no_such": 1}}, "my.yaml: model m: dnp apply"),
        # application checked against the model it applies, and against what the workflow writes
        ({"name": "m", "type": "dnp", "apply": {"level": 5}}, "model m: dnp apply: level 5 does not exist"),
        ({"name": "m", "type": "dnp", "apply": {"out_typ": "uint8"}}, "model m: dnp apply: out_typ='uint8'"),
        (
            {"name": "m", "type": "dnp", "apply": {"scale_to_original": False}},
            "model m: dnp apply: scale_to_original=false",
        ),
    ],
)
def test_bad_spec_is_one_error_line_naming_the_model_and_key(spec: dict, message: str) -> None:
    with pytest.raises(PatchworkError) as err:
        parse_spec(spec, "my.yaml")
    assert len(err.value.problems) == 1
    assert err.value.problems[0].startswith(message) or message in err.value.problems[0]


def test_names_of_post_processed_masks_are_reserved() -> None:
    with pytest.raises(
        PatchworkError, match=r"name='unet_pp': must be letters, digits, _ and -, not ending in _pp"
    ):
        parse_spec({"name": "unet_pp", "type": "unet"}, "my.yaml")
    assert parse_spec({"name": "unet_ppx", "type": "unet"}, "my.yaml").name == "unet_ppx"

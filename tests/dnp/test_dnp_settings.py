"""DNP settings: parsed without torch, every bad key named on its own line, defaults in one place."""

from __future__ import annotations

import pytest

from patchwork.errors import PatchworkError
from patchwork.models.dnp.apply_settings import DNPApply, check_spec
from patchwork.models.dnp.settings import Augment, Balance, CropConfig, DNPParams, TrainParams


def test_every_problem_is_one_line_naming_its_section_and_key() -> None:
    bad = {
        "crop": {"depth": 2, "colour": 1},
        "model": {"forward_type": "sum"},
        "train": {"balance": {"ratio": 0.5, "weight": 1}},
    }
    with pytest.raises(PatchworkError) as info:
        DNPParams.from_dict(bad)
    problems = info.value.problems
    assert len(problems) == 3 and all("\n" not in p for p in problems)
    assert problems[0].startswith("dnp params: crop: unknown key(s) colour")
    assert problems[1].startswith("dnp params: model: forward_type='sum'")
    assert problems[2].startswith("dnp params: train: balance: unknown key(s) weight")
    with pytest.raises(PatchworkError, match="dnp params: train: lr='fast': expected a finite number"):
        DNPParams.from_dict({"train": {"lr": "fast"}})
    with pytest.raises(PatchworkError, match="dnp apply: unknown key\\(s\\) windows"):
        DNPApply.from_dict({"windows": "cos"})
    with pytest.raises(PatchworkError, match="dnp apply: level='coarse': expected integer or one of mix"):
        DNPApply.from_dict({"level": "coarse"})


def test_nested_settings_are_typed_objects_parsed_once() -> None:
    params = DNPParams.from_dict(
        {"train": {"augment": {"dphi": 0.1, "flip": [1, 0, 0]}, "balance": {"ratio": 1}}}
    )
    assert params.train.augment == Augment(dphi=0.1, flip=(1.0, 0.0, 0.0))
    assert params.train.balance == Balance(ratio=1.0)
    flips = DNPParams.from_dict({"train": {"augment": {"flip": [True, False, False]}}}).train.augment
    assert flips is not None and flips.widths("flip", 3) == (1.0, 0.0, 0.0)
    assert TrainParams(augment={}).augment is None and TrainParams().balance == Balance()
    assert DNPParams.from_dict(params.to_dict()) == params
    assert CropConfig.from_dict(params.crop.to_dict()) == params.crop == CropConfig()


def test_application_settings_are_no_training_settings() -> None:
    """Only ``params`` identify a training (``model.pt``); the application is parsed on its own."""
    params = DNPParams.from_dict({"train": {"num_its": 3}})
    assert "apply" not in params.to_dict()
    with pytest.raises(PatchworkError, match=r"dnp params: unknown key\(s\) apply \(known: crop, model"):
        DNPParams.from_dict({"apply": {"num_patches": 2}})
    config = DNPApply.from_dict({"num_patches": 8, "window": "cos2"})
    assert DNPApply.from_dict(config.to_dict()) == config


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"sampling_factor": 0.0}, "sampling_factor=0.0: must be > 0"),
        ({"explore": -0.5}, "explore=-0.5: must be >= 0"),
        ({"max_trees": 0}, "max_trees=0: must be >= 1"),
        ({"out_typ": "mask:0.2,x"}, "out_typ thresholds"),
        ({"ce_threshold": 1.5}, "ce_threshold=1.5: must be <= 1"),
    ],
)
def test_application_options_are_checked(settings: dict, message: str) -> None:
    with pytest.raises(PatchworkError, match=message):
        DNPApply.from_dict(settings)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"scale_to_original": False}, "scale_to_original=false"),
        ({"sampling_factor": 2.0}, "sampling_factor=2.0"),
        ({"out_typ": "mask"}, "out_typ='mask'"),
        ({"ce_threshold": 0.3}, "ce_threshold=0.3"),
    ],
)
def test_a_probability_map_rejects_what_it_cannot_honour(settings: dict, message: str) -> None:
    """``predict_dnp`` (the workflow's prediction) writes a probability in the image's grid."""
    config = DNPApply.from_dict(settings)
    with pytest.raises(PatchworkError, match=message) as info:
        config.check_prediction()
    assert len(info.value.problems) == 1
    DNPApply.from_dict({"num_patches": 2, "lazyEval": {"fraction": 0.5}}).check_prediction()


def test_coarse_predictions_are_refused_for_a_model_without_intermediate_losses() -> None:
    params = DNPParams.from_dict({"model": {"intermediate_loss": False}})
    for settings, name in (({"lazyEval": {"fraction": 0.5}}, "lazyEval"), ({"level": "mix"}, "level='mix'")):
        with pytest.raises(PatchworkError, match=f"dnp apply: {name}.*intermediate_loss"):
            check_spec(params, DNPApply.from_dict(settings))
    check_spec(params, DNPApply.from_dict({"level": -1}))
    check_spec(DNPParams(), DNPApply.from_dict({"level": "mix", "lazyEval": {"fraction": 0.5}}))

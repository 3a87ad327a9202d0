"""UNetParams and UNetApply: defaults, round trip, and one clear error per bad key or value."""

from __future__ import annotations

import pytest

from patchwork.errors import PatchworkError
from patchwork.models.unet.settings import UNetApply, UNetParams


def test_defaults_are_valid_and_round_trip():
    params = UNetParams()
    assert UNetParams.from_dict(params.to_dict()) == params
    assert params.to_dict()["patch_size"] == [48, 48, 48]  # lists, not tuples: JSON and weights_only safe


def test_out_channels_follow_the_head():
    assert UNetParams(head="sigmoid", num_classes=3).out_channels == 1
    assert UNetParams(head="softmax", num_classes=3).out_channels == 3


def test_from_dict_accepts_ints_for_floats_and_lists_for_tuples():
    params = UNetParams.from_dict({"lr": 1, "patch_size": [32, 32, 16], "scale_range": [1, 1]})
    assert params.lr == 1.0 and isinstance(params.lr, float)
    assert params.patch_size == (32, 32, 16)


@pytest.mark.parametrize(
    ("d", "message"),
    [
        ({"heads": "sigmoid"}, "unknown key(s) heads"),
        ({"head": "relu"}, "head='relu'"),
        ({"optimizer": "adam"}, "optimizer='adam'"),
        ({"iterations": 2.5}, "iterations=2.5: expected an integer"),
        ({"iterations": True}, "iterations=True: expected an integer"),
        ({"augment": "yes"}, "augment='yes': expected true or false"),
        ({"patch_size": [48, 48]}, "expected a list of 3 values"),
        ({"patch_size": [48, 44, 48]}, "multiple of 2**(n_stages-1) = 8"),
        ({"n_stages": 0}, "n_stages=0"),
        ({"num_classes": 1}, "num_classes=1"),
        ({"lr": -1.0}, "lr=-1.0: must be > 0"),
        ({"lr": float("nan")}, "expected a finite number"),
        ({"overlap": 0.5}, "unknown key(s) overlap"),  # an application setting: UNetApply
        ({"oversample_foreground": 1.5}, "oversample_foreground=1.5"),
        ({"scale_range": [1.2, 0.8]}, "scale_range=[1.2, 0.8]"),
        ({"max_features": 4}, "max_features=4"),
        ({"lr_schedule": "step"}, "lr_schedule='step'"),
        ({"warmup_iterations": 250}, "warmup_iterations=250: must be in [0, iterations)"),
    ],
)
def test_bad_params_name_key_and_value(d, message):
    with pytest.raises(PatchworkError) as err:
        UNetParams.from_dict(d)
    assert message in str(err.value)
    assert str(err.value).startswith("unet params:")


def test_all_problems_reported_at_once():
    with pytest.raises(PatchworkError) as err:
        UNetParams.from_dict({"batch_size": 0, "lr": 0})
    assert len(err.value.problems) == 2


def test_not_a_mapping():
    with pytest.raises(PatchworkError, match="expected a mapping"):
        UNetParams.from_dict([1, 2])


def test_apply_settings_round_trip_and_name_bad_values():
    apply = UNetApply.from_dict({"overlap": 0, "test_time_mirroring": True})
    assert apply.overlap == 0.0 and UNetApply.from_dict(apply.to_dict()) == apply
    for d, message in [
        ({"overlap": 1.0}, "unet apply: overlap=1.0: must be < 1"),
        ({"overlap": -0.1}, "unet apply: overlap=-0.1: must be >= 0"),
        ({"sw_batch_size": 0}, "unet apply: sw_batch_size=0: must be >= 1"),
        ({"test_time_mirroring": 1}, "unet apply: test_time_mirroring=1: expected true or false"),
        ({"patch_size": [8, 8, 8]}, "unet apply: unknown key(s) patch_size"),
    ]:
        with pytest.raises(PatchworkError) as err:
            UNetApply.from_dict(d)
        assert str(err.value).startswith(message) and len(err.value.problems) == 1

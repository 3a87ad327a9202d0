"""The command line: one-line errors, tracebacks of bugs, settings as JSON, stages end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from patchwork import cli
from patchwork.cli import main
from patchwork.data.cohort import Subject, write_subjects
from patchwork.io import read_image, read_json, save_image, write_json
from patchwork.models.unet.modelfile import build_network, save_model
from patchwork.models.unet.settings import UNetParams
from patchwork.networks import init_weights
from patchwork.workflow_config import schema_yaml


def test_missing_input_gives_one_error_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    log = tmp_path / "logs" / "splits.log"
    missing = tmp_path / "nope.tsv"
    code = main(["--log", str(log), "splits", "--subjects", str(missing), "--out", str(tmp_path / "s.json")])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {missing}: file not found"]
    assert f"error: {missing}: file not found" in log.read_text()
    assert not (tmp_path / "s.json").exists()


def test_bad_json_argument_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["ingest", str(tmp_path), "--out", "a", "--fingerprint", "b", "--settings", "{bad"])
    assert exc.value.code == 2


def test_bad_settings_are_one_line_naming_the_section_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    code = main(["splits", "--subjects", "x.tsv", "--out", "s.json", "--settings", '{"n_folds": 1, "k": 2}'])
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: splits: unknown key(s) k (known: n_folds, file)"
    ]


def test_an_unexpected_exception_gives_its_traceback_in_the_log_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(cli.data, "splits", broken)
    log = tmp_path / "splits.log"
    assert main(["--log", str(log), "splits", "--subjects", "x.tsv", "--out", "s.json"]) == 1
    for text in (capsys.readouterr().err, log.read_text()):
        assert "Traceback (most recent call last)" in text and "RuntimeError: a bug" in text


def test_schema_command_prints_the_generated_schema(capsys: pytest.CaptureFixture) -> None:
    assert main(["schema"]) == 0
    assert capsys.readouterr().out == schema_yaml()


def test_commands_make_waiting_openmp_threads_sleep_unless_told_otherwise(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Spinning threads slow a job beside a busy neighbour about 10x (benchmarks/contention.py)."""
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert main(["schema"]) == 0
    assert cli.os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert main(["schema"]) == 0
    assert cli.os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def _cohort(tmp_path: Path) -> tuple[Path, Path]:
    """A one-subject cohort (an 8 mm cube in a 2 mm 20^3 image) and its fingerprint (median 2 mm)."""
    image = np.zeros((20, 20, 20), dtype=np.float32)
    image[6:14, 6:14, 6:14] = 1.0
    image += np.random.default_rng(0).normal(0, 0.1, image.shape).astype(np.float32) + 2
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    save_image(image, affine, tmp_path / "raw" / "s1_0000.nii.gz")
    save_image((image > 2.5).astype(np.uint8), affine, tmp_path / "raw" / "s1.nii.gz", np.uint8)
    subjects = tmp_path / "subjects.tsv"
    raw = tmp_path / "raw"
    write_subjects([Subject("s1", "train", (raw / "s1_0000.nii.gz",), raw / "s1.nii.gz")], subjects)
    fingerprint = tmp_path / "fingerprint.json"
    write_json(
        fingerprint,
        {
            "channels": ["T1"],
            "labels": {"background": 0, "lesion": 1},
            "spacings": {"s1": [4.0, 4.0, 4.0]},
            "shapes": {"s1": [20, 20, 20]},
            "median_spacing": [4.0, 4.0, 4.0],
        },
    )
    return subjects, fingerprint


def test_preprocess_falls_back_to_the_planned_spacing_and_writes_the_subject_folder(tmp_path: Path) -> None:
    subjects, fingerprint = _cohort(tmp_path)
    out = tmp_path / "preprocessed" / "s1"
    args = ["preprocess", "--subjects", str(subjects), "--subject", "s1", "--fingerprint", str(fingerprint)]
    assert main([*args, "--out-dir", str(out), "--settings", '{"crop_nonzero": false}']) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "image.npy",
        "image_0000.nii.gz",
        "record.json",
        "seg.nii.gz",
        "seg.npy",
    ]
    record = read_json(out / "record.json")
    assert record["target_spacing"] == [4.0, 4.0, 4.0] and record["shape"] == [10, 10, 10]
    assert main([*args, "--out-dir", str(out), "--settings", '{"target_spacing": [2, 2, 2]}']) == 0
    assert read_json(out / "record.json")["target_spacing"] == [2.0, 2.0, 2.0]


def test_predict_applies_the_apply_settings_and_refuses_a_spread_the_model_lacks(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    subjects, fingerprint = _cohort(tmp_path)
    pre = tmp_path / "preprocessed"
    common = ["--subjects", str(subjects), "--subject", "s1", "--fingerprint", str(fingerprint)]
    assert main(["preprocess", *common, "--out-dir", str(pre / "s1")]) == 0
    params = UNetParams(patch_size=(8, 8, 8), n_stages=2, base_features=2, max_features=4)
    net = build_network(params, in_channels=1)
    init_weights(net, torch.Generator().manual_seed(0))
    model = tmp_path / "m" / "model.pt"
    model.parent.mkdir()
    save_model(model, params, 1, 0, net)
    write_json(model.parent / "spec.json", {"name": "u", "type": "unet", "params": params.to_dict()})

    write_json(tmp_path / "splits.json", [{"train": [], "val": ["s1"]}])
    out = tmp_path / "batch"

    def predict(*extra: str) -> int:
        return main(["predict", "--model", str(model), "--preprocessed", str(pre), "--batch", "fold_0",
                     "--subjects", str(subjects), "--splits", str(tmp_path / "splits.json"),
                     "--out-dir", str(out), *extra])  # fmt: skip

    assert predict("--threshold", "0.0") == 0
    prob, affine = read_image(out / "s1_prob.nii.gz")
    assert prob.shape == (20, 20, 20) and np.allclose(affine, np.diag([2.0, 2.0, 2.0, 1.0]))
    assert read_image(out / "s1_seg.nii.gz")[0].all()  # threshold 0: every voxel
    assert predict("--apply", '{"test_time_mirroring": true, "overlap": 0}') == 0
    assert not np.array_equal(read_image(out / "s1_prob.nii.gz")[0], prob)
    capsys.readouterr()
    assert predict("--apply", '{"overlap": 1}') == 1
    assert capsys.readouterr().err.strip() == "error: unet apply: overlap=1.0: must be < 1"
    assert predict("--std") == 1
    assert "gives no uncertainty map" in capsys.readouterr().err


def test_ensemble_takes_named_maps_one_settings_object_and_tuned_settings(tmp_path: Path) -> None:
    a = np.zeros((4, 4, 4), dtype=np.float32)
    a[1:3, 1:3, 1:3] = 0.8
    b = np.full_like(a, 0.3)
    save_image(a, np.eye(4), tmp_path / "a" / "x_prob.nii.gz")
    save_image(b, np.eye(4), tmp_path / "b" / "x_prob.nii.gz")
    out = ["--out-dir", str(tmp_path / "ensemble")]
    probs = ["--probs", f"a={tmp_path / 'a'}", f"b={tmp_path / 'b'}"]
    settings = {"mode": "vote", "weights": {"a": 1, "b": 3}, "model_thresholds": {"a": 0.5, "b": 0.25}}
    assert main(["ensemble", *probs, "--settings", json.dumps(settings), *out]) == 0
    seg = tmp_path / "ensemble" / "x_seg.nii.gz"
    assert read_image(seg)[0].all()  # b (weight 3) votes everywhere at its 0.25
    settings = {"mode": "mean", "weights": {"a": 1, "b": 0}, "threshold": 0.5, "min_component_voxels": 0}
    tuned = {"settings": settings}
    write_json(tmp_path / "ensemble_params.json", tuned)
    assert main(["ensemble", *probs, "--tuned", str(tmp_path / "ensemble_params.json"), *out]) == 0
    assert read_image(seg)[0].sum() == 8  # a alone


def test_batch_commands_name_a_missing_batch_folder(tmp_path: Path, capsys) -> None:
    write_json(tmp_path / "pp.json", {"settings": {"threshold": 0.5}})
    assert main(["ensemble", "--probs", f"a={tmp_path / 'nope'}", "--out-dir", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nope'}: folder not found"
    argv = ["postprocess", "--prob-dir", str(tmp_path / "nope"), "--tuned", str(tmp_path / "pp.json")]
    assert main([*argv, "--out-dir", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 'nope'}: folder not found"

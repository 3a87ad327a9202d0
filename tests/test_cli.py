"""The command line: one-line errors, log files, model specs and the packaged challenge entry."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from patchwork.cli import main
from patchwork.errors import PatchworkError
from patchwork.models import parse_spec
from patchwork.submission import package_submission, sha256


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
        main(["ingest", str(tmp_path), "--out", "a", "--fingerprint", "b", "--labels", "{bad"])
    assert exc.value.code == 2


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "unet"}, "needs 'name' and 'type'"),
        ({"name": "m", "type": "resnet"}, "unknown type 'resnet'"),
        ({"name": "m", "type": "unet", "params": {"no_such_param": 1}}, "no_such_param"),
    ],
)
def test_bad_model_spec(spec: dict, message: str) -> None:
    with pytest.raises(PatchworkError, match=message):
        parse_spec(spec)


def test_package_submission_checksums_every_file(tmp_path: Path) -> None:
    model_dir = tmp_path / "models" / "unet" / "fold_all"
    model_dir.mkdir(parents=True)
    (model_dir / "model.pt").write_bytes(b"weights")
    (model_dir / "spec.json").write_text(json.dumps({"name": "unet", "type": "unet"}))
    out = tmp_path / "submission"
    (out / "predictions").mkdir(parents=True)
    (out / "predictions" / "a_seg.nii.gz").write_bytes(b"seg")

    manifest = json.loads(
        package_submission({"unet": model_dir / "model.pt"}, {"seed": 3}, 3, out).read_text()
    )

    assert manifest["seed"] == 3 and manifest["models"] == ["unet"]
    assert set(manifest["files"]) == {
        "config.json",
        "models/unet/model.pt",
        "models/unet/spec.json",
        "predictions/a_seg.nii.gz",
    }
    for rel, entry in manifest["files"].items():
        assert entry["sha256"] == sha256(out / rel)
    assert json.loads((out / "config.json").read_text()) == {"seed": 3}


def test_package_submission_names_a_missing_model(tmp_path: Path) -> None:
    with pytest.raises(PatchworkError, match="model.pt: file not found"):
        package_submission({"unet": tmp_path / "model.pt"}, {}, 0, tmp_path / "out")

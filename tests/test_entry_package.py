"""The challenge entry: `patchwork package` writes all that `infer` needs, `infer` reproduces the workflow's
test predictions byte for byte, and `verify` passes an untouched entry and names the file of a tampered one.

A module fixture runs the workflow's stages on a tiny demo cohort (2 training, 2 test subjects at 4 mm; a
U-Net and a DNP of a few iterations, as tests/test_workflow.py's TINY settings) with a tuned ensemble.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from test_workflow import TINY_DNP, TINY_UNET

from patchwork.cli import main
from patchwork.config import EnsembleSettings
from patchwork.data.cohort import read_subjects
from patchwork.data.demo import make_demo_dataset
from patchwork.entry import layout
from patchwork.entry.package import sha256, write_manifest
from patchwork.errors import PatchworkError
from patchwork.io import read_image, read_json, save_image, write_json
from patchwork.postprocessing.components import Postprocessing, postprocess_file
from patchwork.stages import data, ensemble, entry, models
from patchwork.workflow_config import WorkflowConfig

REPO = Path(__file__).resolve().parents[1]
DNP_APPLY = {"num_patches": 2}  # a third of the default's time, and application settings reach the entry
TUNED = {"mode": "mean", "weights": {"unet": 1.0, "dnp": 2.0}, "threshold": 0.3, "min_component_voxels": 3}
UNET_POSTPROCESSING = {"threshold": 0.3, "min_volume_mm3": 200.0, "min_peak": 0.4}


@dataclass(frozen=True)
class Run:
    """What the stages wrote: the raw cohort, the entry folder and the test subjects' ids."""

    raw: Path
    entry: Path
    test: list[str]


@pytest.fixture(scope="session")
def demo_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo cohort at 4 mm: 2 training subjects and 1 test subject (shared with tests/test_bids.py)."""
    return make_demo_dataset(tmp_path_factory.mktemp("raw"), n_train=2, n_test=1, spacing=4.0, seed=0)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, demo_cohort: Path) -> Run:
    """The workflow's stages, as its rules call them, from the demo cohort to the packaged entry."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("run")
    raw = demo_cohort
    config = {
        "dataset": str(raw),
        "seed": 3,
        "preprocess": {"target_spacing": None},
        "models": [
            {"name": "unet", "type": "unet", "params": {"head": "sigmoid", **TINY_UNET}},
            {
                "name": "dnp",
                "type": "dnp",
                "threshold": 0.35,
                "seed": 5,
                "params": TINY_DNP,
                "apply": DNP_APPLY,
            },
        ],
        "ensemble": {"weights": {"unet": 2.0}, "min_component_voxels": 2},
    }
    parsed = WorkflowConfig.from_dict(config, "test")
    subjects, fingerprint = root / "subjects.tsv", root / "fingerprint.json"
    data.ingest(str(raw), subjects, fingerprint, parsed.ingest)
    for s in read_subjects(subjects):
        data.preprocess(
            subjects, s.subject, fingerprint, root / "preprocessed" / s.subject, parsed.preprocess
        )
    test = [s.subject for s in read_subjects(subjects, role="test")]
    out = root / "entry"
    trained = {}
    for spec in parsed.models:
        seed = parsed.seed if spec.seed is None else spec.seed
        folder = root / "models" / spec.name / "fold_all"
        trained[spec.name] = models.train(
            spec, subjects, root / "preprocessed", root / "none", "all", folder, seed
        )
        for s in test:
            pred = out / "predictions" / spec.name
            models.predict(
                trained[spec.name],
                root / "preprocessed",
                s,
                spec.apply.to_dict(),
                spec.threshold,
                pred / f"{s}_prob.nii.gz",
                pred / f"{s}_seg.nii.gz",
                out_std=pred / f"{s}_std.nii.gz" if spec.type == "dnp" else None,
                seed=seed,
                device="cpu",
            )
    hand_set = EnsembleSettings.from_dict(
        {**config["ensemble"], "model_thresholds": {s.name: s.threshold for s in parsed.models}}
    )
    tuned = root / "ensemble_params.json"
    write_json(tuned, {"settings": TUNED, "mean_dice": 0.5})
    for s in test:
        probs = {m: out / "predictions" / m / f"{s}_prob.nii.gz" for m in trained}
        pred = out / "predictions" / "ensemble"
        ensemble.ensemble(probs, hand_set, pred / f"{s}_prob.nii.gz", pred / f"{s}_seg.nii.gz", tuned=tuned)
    postprocessing = root / "postprocessing_unet.json"  # the U-Net's tuned post-processing; the DNP has none
    write_json(postprocessing, {"settings": UNET_POSTPROCESSING})
    entry.package(
        trained,
        config,
        hand_set,
        tuned,
        fingerprint,
        subjects,
        REPO / "LICENSE",
        out,
        {"unet": postprocessing},
    )
    return Run(raw=raw, entry=out, test=test)


def test_entry_holds_what_infer_needs(run: Run) -> None:
    settings = read_json(run.entry / layout.ENTRY_JSON)
    assert [m["postprocessing"] for m in settings["models"]] == [UNET_POSTPROCESSING, None]
    shipped = run.entry / layout.MODELS / "unet" / layout.POSTPROCESSING_JSON
    assert read_json(shipped) == {"settings": UNET_POSTPROCESSING}
    assert [m["name"] for m in settings["models"]] == ["unet", "dnp"]  # the ensemble's order
    assert [m["seed"] for m in settings["models"]] == [3, 5]  # the run's seed, or the model's own
    assert settings["threads"] == 1  # the test predictions' threads, which infer and verify use
    assert settings["models"][1]["apply"]["num_patches"] == DNP_APPLY["num_patches"]
    fingerprint = read_json(run.entry / layout.FINGERPRINT_JSON)
    assert settings["preprocess"]["target_spacing"] == fingerprint["median_spacing"]
    assert settings["labels"] == {"background": 0, "lesion": 1} and settings["channels"] == ["T1"]
    assert read_json(run.entry / layout.ENSEMBLE_JSON) == {
        "tuned": True,
        "settings": EnsembleSettings.from_dict(TUNED).to_dict(),
    }
    lock = (run.entry / layout.LOCK).read_text().splitlines()
    assert f"torch=={torch.__version__}" in lock and any(line.startswith("numpy==") for line in lock)
    assert (run.entry / layout.LICENSE).read_bytes() == (REPO / "LICENSE").read_bytes()
    example = run.entry / layout.EXAMPLE / f"{run.test[0]}_0000.nii.gz"
    assert example.read_bytes() == (run.raw / "imagesTs" / example.name).read_bytes()
    manifest = read_json(run.entry / layout.MANIFEST_JSON)
    assert manifest["seed"] == 3 and manifest["models"] == ["dnp", "unet"]
    for rel, expected in manifest["files"].items():
        assert expected["sha256"] == sha256(run.entry / rel), rel


def test_infer_reproduces_the_workflow_test_predictions(run: Run, tmp_path: Path, capsys) -> None:
    out = tmp_path / "out"
    args = ["infer", str(run.raw / "imagesTs"), str(out), "--entry", str(run.entry), "--device", "cpu"]
    assert main([*args, "--save-probabilities", "--save-uncertainty"]) == 0  # the entry's threads
    predictions = run.entry / "predictions"
    for s in run.test:
        assert (out / f"{s}.nii.gz").read_bytes() == (
            predictions / "ensemble" / f"{s}_seg.nii.gz"
        ).read_bytes()
        assert (out / f"{s}_prob.nii.gz").read_bytes() == (
            predictions / "ensemble" / f"{s}_prob.nii.gz"
        ).read_bytes()
        assert (out / f"{s}_dnp_std.nii.gz").read_bytes() == (
            predictions / "dnp" / f"{s}_std.nii.gz"
        ).read_bytes()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{s}{kind}.nii.gz" for s in run.test for kind in ("", "_prob", "_dnp_std")
    )
    table = capsys.readouterr().out.splitlines()
    assert (
        table[0].split()[:3] == ["case", "seconds", "peak"]
        and [row.split()[0] for row in table[1:]] == run.test
    )


def test_infer_writes_each_model_mask_with_its_shipped_postprocessing(run: Run, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["infer", str(run.raw / "imagesTs"), str(out), "--entry", str(run.entry), "--device", "cpu"]
    assert main([*args, "--save-models"]) == 0
    predictions = run.entry / "predictions"
    for s in run.test:
        expected = tmp_path / f"{s}_unet_pp.nii.gz"
        settings = Postprocessing.from_dict(UNET_POSTPROCESSING)
        postprocess_file(predictions / "unet" / f"{s}_prob.nii.gz", settings, expected)
        unet_mask = read_image(out / f"{s}_unet_seg.nii.gz")[0]
        np.testing.assert_array_equal(unet_mask, read_image(expected)[0])
        dnp_mask = out / f"{s}_dnp_seg.nii.gz"  # no post-processing shipped: the DNP's own threshold
        np.testing.assert_array_equal(
            read_image(dnp_mask)[0], read_image(predictions / "dnp" / f"{s}_seg.nii.gz")[0]
        )
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{s}{kind}.nii.gz" for s in run.test for kind in ("", "_unet_seg", "_dnp_seg")
    )


def test_verify_passes_an_untouched_entry(run: Run, capsys) -> None:
    assert main(["verify", str(run.entry)]) == 0  # at its default thread count: the entry's
    assert f"test case {run.test[0]} re-predicted identically" in capsys.readouterr().out


def tampered_copy(run: Run, tmp_path: Path) -> Path:
    copy = tmp_path / "entry"
    shutil.copytree(run.entry, copy)
    return copy


def verify_errors(entry_dir: Path, capsys) -> list[str]:
    assert main(["verify", str(entry_dir)]) == 1
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


def test_verify_names_a_changed_or_added_file(run: Run, tmp_path: Path, capsys) -> None:
    entry_dir = tampered_copy(run, tmp_path)
    weights = entry_dir / "models" / "unet" / "model.pt"
    blob = bytearray(weights.read_bytes())
    blob[-10] ^= 1
    weights.write_bytes(bytes(blob))
    assert verify_errors(entry_dir, capsys) == [
        f"error: {weights}: SHA-256 differs from the manifest (the file was changed)"
    ]

    weights.unlink()
    (entry_dir / "models" / "unet" / "extra.pt").write_bytes(b"x")
    assert verify_errors(entry_dir, capsys) == [
        f"error: {weights}: listed in the manifest but missing",
        f"error: {entry_dir / 'models' / 'unet' / 'extra.pt'}: not in the manifest (added after packaging)",
    ]


def test_verify_names_a_stored_prediction_the_models_do_not_give(run: Run, tmp_path: Path, capsys) -> None:
    """A changed prediction with a manifest written anew passes the checksums, not the re-prediction."""
    entry_dir = tampered_copy(run, tmp_path)
    mask = layout.ensemble_mask(entry_dir, run.test[0])
    seg, affine = read_image(mask, dtype=np.uint8)
    seg[0, 0, 0] = 1 - seg[0, 0, 0]
    save_image(seg, affine, mask, dtype=np.uint8)
    write_manifest(entry_dir, 3, ["dnp", "unet"])
    errors = verify_errors(entry_dir, capsys)
    assert len(errors) == 1 and errors[0].startswith(f"error: {mask}: differs from the mask re-predicted")


def test_package_names_a_missing_model(run: Run, tmp_path: Path) -> None:
    config = json.loads((run.entry / layout.CONFIG_JSON).read_text())
    models_given = {"unet": tmp_path / "model.pt", "dnp": run.entry / "models" / "dnp" / "model.pt"}
    with pytest.raises(PatchworkError, match="model.pt: file not found"):
        entry.package(
            models_given,
            config,
            EnsembleSettings(),
            None,
            run.entry / layout.FINGERPRINT_JSON,
            tmp_path / "subjects.tsv",
            REPO / "LICENSE",
            tmp_path / "out",
        )

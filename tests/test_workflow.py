"""The REAL Snakefile run end to end on a tiny generated cohort, plus dry-run and lint checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from patchwork.data.cohort import read_subjects
from patchwork.report import unresolved_links

TINY_UNET = {"patch_size": [16, 16, 16], "base_features": 4, "n_stages": 3, "batch_size": 2, "iterations": 6}
TINY_DNP = {
    "crop": {
        "depth": 2,
        "ndim": 3,
        "scheme": {"patch_size": [8, 8, 8], "fov_rel": [0.9], "destvox_rel": [1.0]},
    },
    "model": {"block_stages": 2, "block_features": 4, "block_max_features": 8},
    "train": {"num_its": 2, "num_patches": 2, "epochs": 1, "batch_size": 4},
}
MODELS = ["unet_sigmoid", "unet_softmax", "dnp"]


def snakemake(repo: Path, workdir: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run the repository's Snakefile in ``workdir`` (so results stay in the test's folder)."""
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo / "Snakefile"), "-d", str(workdir), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def tiny_config(workdir: Path, **overrides: object) -> Path:
    """A config for 6 demo subjects at 4 mm, 2 folds, two U-Nets of a few iterations."""
    config = {
        "dataset": "demo",
        "demo": {"n_train": 6, "n_test": 2, "spacing": 4.0, "target_spacing": None},
        "splits": {"n_folds": 2},
        "threads": {"train": 1, "predict": 1},
        "models": [
            {"name": "unet_sigmoid", "type": "unet", "params": {"head": "sigmoid", **TINY_UNET}},
            {"name": "unet_softmax", "type": "unet", "params": {"head": "softmax", **TINY_UNET}},
            {"name": "dnp", "type": "dnp", "threshold": 0.35, "params": TINY_DNP},
        ],
        "ensemble": {"weights": {"unet_sigmoid": 2.0}, "min_component_voxels": 2},
        **overrides,
    }
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_dry_run_and_lint_of_default_config(repo: Path, tmp_path: Path) -> None:
    dry = snakemake(repo, tmp_path, "-n", "--cores", "1")
    assert dry.returncode == 0, dry.stderr
    lint = snakemake(repo, tmp_path, "--lint")
    assert lint.returncode == 0, lint.stdout + lint.stderr


@pytest.mark.parametrize("overlay", ["atlas2.yaml", "demo_dnp.yaml"])
def test_shipped_overlay_configs_plan(repo: Path, tmp_path: Path, overlay: str) -> None:
    """Every model of a shipped config parses (the Snakefile parses them all) and the DAG builds."""
    config = repo / "config" / overlay
    dry = snakemake(
        repo, tmp_path, "-n", "--cores", "1", "--configfile", str(config), "--config", "dataset=demo"
    )
    assert dry.returncode == 0, dry.stdout + dry.stderr


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"splits": {"n_folds": 1}}, "n_folds"),
        ({"models": [{"name": "dnp", "type": "dnp", "params": {"apply": {"windows": "cos"}}}]}, "windows"),
        ({"models": [{"name": "u", "type": "unet", "params": {"patch_size": [30, 32, 32]}}]}, "patch_size"),
    ],
)
def test_bad_config_is_rejected_before_any_job(repo: Path, tmp_path: Path, overrides, message) -> None:
    config = tiny_config(tmp_path, **overrides)
    run = snakemake(repo, tmp_path, "-n", "--cores", "1", "--configfile", str(config))
    assert run.returncode != 0
    assert message in run.stdout + run.stderr
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_whole_workflow_on_tiny_cohort(repo: Path, tmp_path: Path) -> None:
    config = tiny_config(tmp_path)
    run = snakemake(repo, tmp_path, "--cores", "2", "--configfile", str(config))
    assert run.returncode == 0, run.stderr[-5000:]
    results = tmp_path / "results"

    subjects = read_subjects(results / "subjects.tsv")
    train = [s for s in subjects if s.role == "train"]
    test = [s for s in subjects if s.role == "test"]
    assert len(train) == 6 and len(test) == 2

    splits = json.loads((results / "splits.json").read_text())
    assert len(splits) == 2
    assert sorted(sum((f["val"] for f in splits), [])) == sorted(s.subject for s in train)

    for model in MODELS:
        for fold in ["0", "1", "all"]:
            fold_dir = results / "models" / model / f"fold_{fold}"
            for name in ("model.pt", "train_log.tsv", "curve.png", "spec.json"):
                assert (fold_dir / name).is_file(), fold_dir / name

    def assert_same_grid(path: Path, reference: Path) -> None:
        pred, ref = nib.load(path), nib.load(reference)
        assert pred.shape == ref.shape, path
        np.testing.assert_allclose(pred.affine, ref.affine, atol=1e-6, err_msg=str(path))

    for s in train:
        for model in [*MODELS, "ensemble", "ensemble_tuned"]:
            for kind in ("prob", "seg"):
                assert_same_grid(results / "predictions" / model / f"{s.subject}_{kind}.nii.gz", s.images[0])
        assert_same_grid(results / "predictions" / "dnp" / f"{s.subject}_std.nii.gz", s.images[0])
        seg = np.asarray(nib.load(results / "predictions" / "ensemble" / f"{s.subject}_seg.nii.gz").dataobj)
        assert set(np.unique(seg)) <= {0, 1}
        assert (results / "metrics" / f"{s.subject}.tsv").is_file()
        page = results / "reports" / f"{s.subject}.html"
        assert s.subject in page.read_text() and "data:image/png;base64," in page.read_text()
        assert unresolved_links(page) == []

    for s in test:
        assert_same_grid(
            results / "submission" / "predictions" / "ensemble" / f"{s.subject}_seg.nii.gz", s.images[0]
        )

    summary = pd.read_csv(results / "summary.tsv", sep="\t")
    assert set(summary["model"]) == {*MODELS, "ensemble", "ensemble_tuned"}
    dice = summary[summary["metric"] == "dice"]
    assert len(dice) == 5 and dice["n"].eq(6).all()
    tuned = json.loads((results / "ensemble_params.json").read_text())
    assert tuned["mean_dice"] >= tuned["hand_set"]["mean_dice"] - 1e-9

    assert unresolved_links(results / "report.html") == []
    cohort = (results / "report.html").read_text()
    assert all(f"reports/{s.subject}.html" in cohort for s in train)
    assert (results / "plots" / "metrics.png").is_file() and (
        results / "plots" / "learning_curves.png"
    ).is_file()

    manifest = json.loads((results / "submission" / "manifest.json").read_text())
    assert manifest["models"] == sorted(MODELS)
    packaged = {f"models/{m}/model.pt" for m in MODELS}
    assert packaged <= set(manifest["files"])
    assert all(len(v["sha256"]) == 64 for v in manifest["files"].values())

    again = snakemake(repo, tmp_path, "-n", "--cores", "2", "--configfile", str(config))
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr

    # A model added to a finished run trains on every fold and joins the ensemble.
    extra = yaml.safe_load(config.read_text())
    extra["models"].append({"name": "unet_extra", "type": "unet", "params": {"head": "sigmoid", **TINY_UNET}})
    config.write_text(yaml.safe_dump(extra))
    grown = snakemake(repo, tmp_path, "--cores", "2", "--configfile", str(config))
    assert grown.returncode == 0, grown.stderr[-5000:]
    for s in train:
        assert_same_grid(results / "predictions" / "unet_extra" / f"{s.subject}_prob.nii.gz", s.images[0])
    assert "unet_extra" in set(pd.read_csv(results / "summary.tsv", sep="\t")["model"])


def test_broken_dataset_stops_at_ingest_with_one_line(repo: Path, tmp_path: Path) -> None:
    from patchwork.data.demo import make_demo_dataset

    source = make_demo_dataset(tmp_path / "raw", n_train=3, n_test=0, spacing=4.0, seed=1)
    label = next((source / "labelsTr").glob("*.nii.gz"))
    label.unlink()
    config = tiny_config(tmp_path, dataset=str(source))
    run = snakemake(repo, tmp_path, "--cores", "1", "--configfile", str(config))
    assert run.returncode != 0
    assert f"error: {label}" in run.stdout + run.stderr or label.name in run.stdout + run.stderr
    assert not (tmp_path / "results" / "subjects.tsv").exists()

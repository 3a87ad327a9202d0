"""A model type is one folder and one registry row: a third, test-only type (``tests/tiny_type``) added by its
row alone runs through the tiny workflow, its schema and its entry, with nothing else naming it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_workflow import N_TRAIN, snakemake, tiny_config

from patchwork.cli import main
from patchwork.models import MODEL_TYPES

TESTS = Path(__file__).resolve().parent
# The one row, added where every Python of the run starts (a sitecustomize module on PYTHONPATH): the
# Snakemake process and each `patchwork` job.
TINY_ROW = """
from patchwork.models import MODEL_TYPES, ModelType

MODEL_TYPES["tiny"] = ModelType(
    params="tiny_type.settings:TinyParams", apply="tiny_type.settings:TinyApply",
    plan="tiny_type.plan:plan_tiny", cost="tiny_type.cost:training_cost",
    train="tiny_type.train:train_tiny", predict="tiny_type.predict:predict_tiny", outputs=("prob", "seg"),
)
"""
WORKFLOW_FILES = ("Snakefile", "workflow", "config", "profiles", "envs", "LICENSE")


@pytest.fixture
def with_tiny_type(tmp_path: Path) -> dict[str, str]:
    """The environment of a run whose registry has the tiny type's row (and its folder importable)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(TINY_ROW)
    return {"PYTHONPATH": os.pathsep.join([str(site), str(TESTS)])}


def run_patchwork(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "patchwork.cli", *args]
    return subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env})


@pytest.mark.slow
def test_a_third_type_is_one_folder_and_one_row(
    repo: Path, tmp_path: Path, with_tiny_type: dict[str, str]
) -> None:
    # The workflow as shipped, with its schema generated again from the registry that has the row.
    workflow = tmp_path / "repo"
    workflow.mkdir()
    for name in WORKFLOW_FILES:
        copy = shutil.copytree if (repo / name).is_dir() else shutil.copy
        copy(repo / name, workflow / name)
    schema = run_patchwork(with_tiny_type, "schema")
    assert schema.returncode == 0, schema.stderr
    (workflow / "workflow" / "schemas" / "config.schema.yaml").write_text(schema.stdout)
    assert "const: tiny" in schema.stdout  # the tiny type's params and apply are validated at parse

    spec = '{"name": "t", "type": "tiny", "params": {"x": 1}}'
    files = ["--subjects", "s", "--preprocessed", "p", "--splits", "s", "--fold", "0", "--out-dir", "o"]
    bad = run_patchwork(with_tiny_type, "train", "--spec", spec, *files)
    assert "tiny params: unknown key(s) x" in bad.stderr  # its settings are checked as every type's

    workdir = tmp_path / "run"
    workdir.mkdir()
    models = [{"name": "tiny", "type": "tiny", "params": {"sharpness": 2.0}, "apply": {"shift": 0.1}}]
    config = tiny_config(workdir, models=models, ensemble={"tune": False}, postprocessing={"tune": False})
    run = snakemake(workflow, workdir, "--cores", "2", "--configfile", str(config), env=with_tiny_type)
    assert run.returncode == 0, run.stderr[-5000:]

    results = workdir / "results"
    plans = json.loads((results / "plans.json").read_text())
    assert set(plans["models"]) == {"unet", "dnp", "tiny"}  # planning asks every registered type
    for fold in ("0", "1", "all"):
        assert (results / "models" / "tiny" / f"fold_{fold}" / "model.pt").is_file()
    predictions = results / "predictions" / "tiny"
    assert len(list(predictions.glob("fold_*/*_prob.nii.gz"))) == N_TRAIN
    assert not list(predictions.rglob("*_std.nii.gz"))  # the row's outputs: no spread
    assert {"tiny", "ensemble"} <= set(pd.read_csv(results / "summary.tsv", sep="\t")["model"])
    manifest = json.loads((results / "entry" / "manifest.json").read_text())
    assert manifest["models"] == ["tiny"]
    # The entry applies the type through the registry too: this process gets the row (tests/ is on its path).
    exec(TINY_ROW, {})
    try:
        assert main(["verify", str(results / "entry")]) == 0
    finally:
        MODEL_TYPES.pop("tiny")


def test_only_the_registry_and_the_types_folders_name_a_type(repo: Path) -> None:
    """No code outside ``patchwork/models/`` holds a type's name (docstrings' examples aside)."""
    import ast

    named = []
    for path in [*(repo / "patchwork").rglob("*.py"), *(repo / "workflow").rglob("*.py")]:
        if (repo / "patchwork" / "models") in path.parents:
            continue
        tree = ast.parse(path.read_text())
        docstrings = {
            id(node.body[0].value)
            for node in ast.walk(tree)
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef)) and ast.get_docstring(node)
        }
        named += [
            f"{path.relative_to(repo)}:{node.lineno}"
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and node.value in MODEL_TYPES and id(node) not in docstrings
        ]
    smk = [repo / "Snakefile", *(repo / "workflow" / "rules").glob("*.smk")]
    named += [str(p) for p in smk for t in MODEL_TYPES if f'"{t}"' in p.read_text()]
    assert named == []

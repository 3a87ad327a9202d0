"""The install contract: the package depends on what it imports, and the conda env asks for the same."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

tomllib = pytest.importorskip("tomllib")

# Import name -> distribution name, where they differ.
DISTRIBUTION = {"sklearn": "scikit-learn", "yaml": "pyyaml", "SimpleITK": "simpleitk"}
# Distribution name (PyPI) -> package name on conda-forge, where they differ.
CONDA_NAME = {"torch": "pytorch", "matplotlib": "matplotlib-base"}


def project(repo: Path) -> dict:
    return tomllib.loads((repo / "pyproject.toml").read_text())["project"]


def requirements(lines: list[str]) -> dict[str, Requirement]:
    reqs = [Requirement(line) for line in lines]
    return {r.name.lower(): r for r in reqs}


def third_party_imports(root: Path) -> set[str]:
    """Top-level modules imported anywhere in the package, minus the standard library and itself."""
    names: set[str] = set()
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "patchwork"}


def test_runtime_dependencies_are_what_the_package_imports(repo: Path) -> None:
    imported = {DISTRIBUTION.get(name, name).lower() for name in third_party_imports(repo / "patchwork")}
    declared = set(requirements(project(repo)["dependencies"]))
    assert "snakemake" not in imported, "the package must never import Snakemake"
    assert imported == declared, (
        f"imported but not declared: {imported - declared}; unused: {declared - imported}"
    )


def test_workflow_extra_excludes_the_broken_combinations(repo: Path) -> None:
    extra = requirements(project(repo)["optional-dependencies"]["workflow"])
    snakemake = extra["snakemake"].specifier
    assert not snakemake.contains("9.15.0"), "snakemake 9.15 oversubscribes --cores (snakemake#3913)"
    assert snakemake.contains("9.27.1")
    # snakemake >= 9.16 pins packaging < 26, which nilearn 0.14 cannot import with.
    assert not extra["nilearn"].specifier.contains("0.14.1")
    assert extra["nilearn"].specifier.contains("0.13.1")


def test_conda_env_asks_for_the_same_versions(repo: Path) -> None:
    env = yaml.safe_load((repo / "envs" / "patchwork.yaml").read_text())
    conda = {}
    pip_lines: list[str] = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_lines = dep["pip"]
            continue
        name, _, spec = dep.partition(" ")
        conda[name] = SpecifierSet(spec.replace(" ", ""))
    runtime = requirements(project(repo)["dependencies"])
    workflow = requirements(project(repo)["optional-dependencies"]["workflow"])
    for name, req in runtime.items():
        spec = (workflow.get(name) or req).specifier
        assert conda.get(CONDA_NAME.get(name, name)) == spec, name
    # The package itself, from an absolute path the Snakefile exports (the file is copied before use).
    assert pip_lines == ["--editable ${PATCHWORK_SOURCE}"]
    assert "PATCHWORK_SOURCE" in (repo / "Snakefile").read_text()

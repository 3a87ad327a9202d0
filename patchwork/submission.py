"""The challenge entry: final models, the config that made them, and a manifest to verify it.

A submission folder holds ``predictions/`` (written by the prediction stage), ``models/{name}/``
(weights + spec), ``config.json`` and ``manifest.json`` with package versions, the seed, and the
SHA-256 of every file, so that anyone can check that an entry is the one a config produced.
"""

from __future__ import annotations

import hashlib
import platform
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from patchwork import __version__
from patchwork.errors import PatchworkError
from patchwork.io import atomic_path, write_json


def sha256(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def software_versions() -> dict[str, str]:
    """Versions of Python and of the libraries that shape the results."""
    import nibabel
    import numpy
    import SimpleITK
    import torch

    return {
        "patchwork": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "nibabel": nibabel.__version__,
        "SimpleITK": SimpleITK.Version_VersionString(),
    }


def package_submission(models: Mapping[str, Path], config: Any, seed: int, out_dir: Path) -> Path:
    """Copy each final model (``model.pt`` + ``spec.json``) into ``out_dir/models/{name}/`` and
    write ``config.json`` and ``manifest.json``; returns the manifest's path."""
    out_dir = Path(out_dir)
    for name, model_path in models.items():
        model_path = Path(model_path)
        for src in (model_path, model_path.parent / "spec.json"):
            if not src.exists():
                raise PatchworkError(f"{src}: file not found (model {name!r})")
            with atomic_path(out_dir / "models" / name / src.name) as tmp:
                shutil.copyfile(src, tmp)
    write_json(out_dir / "config.json", config)
    manifest_path = out_dir / "manifest.json"
    files = sorted(p for p in out_dir.rglob("*") if p.is_file() and p != manifest_path)
    manifest = {
        "versions": software_versions(),
        "seed": seed,
        "models": sorted(models),
        "files": {
            str(p.relative_to(out_dir)): {"sha256": sha256(p), "bytes": p.stat().st_size} for p in files
        },
    }
    write_json(manifest_path, manifest)
    return manifest_path

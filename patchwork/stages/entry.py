"""The challenge-entry stage: package the final models, the run's config and a manifest of checksums."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def package(models: Mapping[str, Path], config: Any, seed: int, out_dir: Path) -> Path:
    """Copy each final model (name -> ``model.pt``) into ``out_dir`` beside the test predictions already
    there, and write ``config.json`` and ``manifest.json``; returns the manifest's path."""
    from patchwork.submission import package_submission

    return package_submission(models=models, config=config, seed=seed, out_dir=Path(out_dir))

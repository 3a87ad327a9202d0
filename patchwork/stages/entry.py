"""The challenge-entry stages: package an entry, segment new scans with it, verify it (patchwork.entry)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from patchwork.config import EnsembleSettings


def package(
    models: Mapping[str, Path],
    config: Mapping[str, Any],
    ensemble: EnsembleSettings,
    tuned: Path | None,
    fingerprint: Path,
    subjects: Path,
    license_file: Path,
    out_dir: Path,
    postprocessing: Mapping[str, Path] | None = None,
) -> Path:
    """Write the entry into ``out_dir`` beside the test predictions already there (with each model's tuned
    ``postprocessing.json``); returns the manifest."""
    from patchwork.entry.package import package_entry

    return package_entry(
        models, config, ensemble, tuned, fingerprint, subjects, license_file, Path(out_dir), postprocessing
    )


def infer(
    entry_dir: Path,
    input_dir: Path,
    output_dir: Path,
    device: str | None,
    threads: int | None,
    save_probabilities: bool,
    save_uncertainty: bool,
    save_models: bool = False,
) -> str:
    """Segment every case of ``input_dir`` into ``output_dir``; returns the table of time and memory."""
    from patchwork.entry.infer import infer as run
    from patchwork.entry.infer import usage_table

    usage = run(
        entry_dir, input_dir, output_dir, device, threads, save_probabilities, save_uncertainty, save_models
    )
    return usage_table(usage)


def verify(entry_dir: Path, threads: int | None) -> str:
    """Check an entry's checksums and re-predict its stored test case; returns the summary line."""
    from patchwork.entry.verify import verify as run

    return run(Path(entry_dir), threads)

"""Writing an entry (see :mod:`patchwork.entry` for its layout): models, settings, example case, manifest.

Everything ``patchwork infer`` needs is taken from what the workflow used, never re-derived from
defaults: the preprocessing with the target spacing the preprocess stage resolved (null: the cohort's
median spacing), each model's application settings, threshold and seed (its own, else the run's), and
the ensemble settings of the workflow's test predictions (tune-ensemble's when tuning was on).
"""

from __future__ import annotations

import hashlib
import platform
import re
import shutil
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from patchwork import __version__
from patchwork.config import EnsembleSettings, PreprocessSettings
from patchwork.data.cohort import read_subjects
from patchwork.entry import layout
from patchwork.errors import PatchworkError
from patchwork.io import atomic_path, is_partial, read_json, write_json, write_text
from patchwork.postprocessing.components import Postprocessing, read_postprocessing
from patchwork.workflow_config import WorkflowConfig

REQUIREMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


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


def resolved_versions(distribution: str = "patchwork") -> dict[str, str]:
    """Installed version of every distribution ``distribution`` needs, its own dependencies' included.

    Requirements that apply only to an extra (``; extra == "test"``) are left out, and so are those that
    are not installed (their environment marker excluded them here).
    """
    versions: dict[str, str] = {}
    todo = [distribution]
    while todo:
        name = todo.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        key = dist.metadata["Name"].lower().replace("_", "-")
        if key in versions:
            continue
        versions[key] = dist.version
        for requirement in dist.requires or []:
            name_part, _, marker = requirement.partition(";")
            if "extra" not in marker:
                todo.append(REQUIREMENT_NAME.match(name_part.strip()).group(0))
    return dict(sorted(versions.items()))


def lock_text() -> str:
    """``requirements.lock``: ``name==version`` per resolved dependency (the package itself excluded)."""
    lines = [f"# resolved for patchwork {__version__} on Python {platform.python_version()}"]
    lines += [f"{name}=={version}" for name, version in resolved_versions().items() if name != "patchwork"]
    return "\n".join(lines) + "\n"


def copy_file(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` atomically; a missing source is a one-line error."""
    if not Path(src).is_file():
        raise PatchworkError(f"{src}: file not found")
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)


def entry_settings(
    config: WorkflowConfig,
    preprocess: PreprocessSettings,
    channels: list[str],
    labels: dict[str, int],
    example: str | None,
    postprocessing: Mapping[str, Postprocessing] | None = None,
) -> dict[str, Any]:
    """The contents of ``entry.json`` (see :class:`patchwork.entry.layout.Entry`); ``postprocessing``: the
    tuned post-processing of the models that have one (``infer --save-models`` applies it). ``threads``:
    the CPU threads the workflow predicted the test subjects with, which ``infer`` uses by default (torch's
    results depend on its thread count, so the entry then reproduces them byte for byte)."""
    postprocessing = postprocessing or {}
    return {
        "format": layout.ENTRY_FORMAT,
        "patchwork": __version__,
        "channels": channels,
        "labels": labels,
        "ingest": config.ingest.to_dict(),
        "preprocess": preprocess.to_dict(),
        "models": [
            {
                "name": spec.name,
                "type": spec.type,
                "apply": spec.apply.to_dict(),
                "threshold": spec.threshold,
                "seed": config.seed if spec.seed is None else spec.seed,
                "postprocessing": (
                    postprocessing[spec.name].to_dict() if spec.name in postprocessing else None
                ),
            }
            for spec in config.models
        ],
        "example": example,
        "threads": config.threads.predict,
    }


def package_entry(
    models: Mapping[str, Path],
    config: Mapping[str, Any],
    ensemble: EnsembleSettings,
    tuned: Path | None,
    fingerprint_json: Path,
    subjects_tsv: Path,
    license_file: Path,
    out_dir: Path,
    postprocessing: Mapping[str, Path] | None = None,
) -> Path:
    """Write the entry into ``out_dir``, beside the test predictions already there; return the manifest.

    ``models``: name -> final ``model.pt`` (``spec.json`` beside it), one per model of ``config`` (the
    run's config as a mapping). ``ensemble``: the hand-set settings with each model's threshold, as the
    ensemble stage got them; ``tuned``: tune-ensemble's ``ensemble_params.json``, whose settings the
    test predictions used instead. ``postprocessing``: model name -> its ``postprocessing.json``
    (tune-postprocessing), shipped as ``models/{name}/postprocessing.json`` and written into
    ``entry.json``. The first test subject of ``subjects_tsv`` becomes the example case.
    """
    out_dir = Path(out_dir)
    parsed = WorkflowConfig.from_dict(config, "--config-json")
    if sorted(models) != sorted(spec.name for spec in parsed.models):
        raise PatchworkError(
            f"models {sorted(models)} are not the config's {[s.name for s in parsed.models]}"
        )
    for name, path in models.items():
        for src in (Path(path), Path(path).parent / layout.SPEC_FILE):
            copy_file(src, out_dir / layout.MODELS / name / src.name)
    postprocessing = dict(postprocessing or {})
    unknown = sorted(set(postprocessing) - set(models))
    if unknown:
        raise PatchworkError(f"post-processing of {unknown}: not among the models {sorted(models)}")
    for name, path in postprocessing.items():
        copy_file(Path(path), out_dir / layout.MODELS / name / layout.POSTPROCESSING_JSON)
    tuned_postprocessing = {name: read_postprocessing(Path(path)) for name, path in postprocessing.items()}
    fingerprint = read_json(fingerprint_json)
    copy_file(Path(fingerprint_json), out_dir / layout.FINGERPRINT_JSON)
    copy_file(Path(license_file), out_dir / layout.LICENSE)
    if tuned is not None:
        copy_file(Path(tuned), out_dir / layout.TUNED_JSON)
    from patchwork.ensembling.tuning import read_tuned

    used = read_tuned(Path(tuned)) if tuned is not None else ensemble
    write_json(out_dir / layout.ENSEMBLE_JSON, {"tuned": tuned is not None, "settings": used.to_dict()})

    test = read_subjects(subjects_tsv, role="test")
    example = test[0].subject if test else None
    for channel, image in enumerate(test[0].images if test else ()):
        ending = ".nii.gz" if image.name.lower().endswith(".gz") else ".nii"
        copy_file(image, out_dir / layout.EXAMPLE / f"{example}_{channel:04d}{ending}")
    preprocess = parsed.preprocess.resolved(fingerprint)
    settings = entry_settings(
        parsed, preprocess, fingerprint["channels"], fingerprint["labels"], example, tuned_postprocessing
    )
    write_json(out_dir / layout.ENTRY_JSON, settings)
    write_json(out_dir / layout.CONFIG_JSON, dict(config))
    write_text(out_dir / layout.LOCK, lock_text())
    return write_manifest(out_dir, parsed.seed, sorted(models))


def write_manifest(out_dir: Path, seed: int, models: list[str]) -> Path:
    """``manifest.json``: versions, seed, models, and the SHA-256 and size of every other file (a partial
    write left by a killed job is removed first, never checksummed)."""
    manifest_path = out_dir / layout.MANIFEST_JSON
    for leftover in filter(is_partial, out_dir.rglob("*")):
        leftover.unlink()
    files = layout.packaged_files(out_dir)
    manifest = {
        "versions": software_versions(),
        "seed": seed,
        "models": models,
        "files": {
            p.relative_to(out_dir).as_posix(): {"sha256": sha256(p), "bytes": p.stat().st_size} for p in files
        },
    }
    write_json(manifest_path, manifest)
    return manifest_path

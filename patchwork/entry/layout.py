"""The file names of an entry and :class:`Entry`, what ``entry.json`` and ``ensemble.json`` say, checked."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchwork.config import EnsembleSettings, IngestSettings, PreprocessSettings
from patchwork.ensembling.tuning import read_tuned
from patchwork.errors import PatchworkError
from patchwork.io import read_json
from patchwork.models import Settings, model_type
from patchwork.postprocessing.components import Postprocessing

ENTRY_FORMAT = 1
ENTRY_JSON = "entry.json"
ENSEMBLE_JSON = "ensemble.json"
TUNED_JSON = "ensemble_params.json"
FINGERPRINT_JSON = "fingerprint.json"
CONFIG_JSON = "config.json"
MANIFEST_JSON = "manifest.json"
LOCK = "requirements.lock"
LICENSE = "LICENSE"
MODELS = "models"
MODEL_FILE = "model.pt"
SPEC_FILE = "spec.json"
POSTPROCESSING_JSON = "postprocessing.json"
EXAMPLE = "example"
PREDICTIONS = "predictions"


def packaged_files(root: Path) -> list[Path]:
    """The files of the entry ``root`` that its manifest lists: all but the manifest itself and hidden files
    (the markers Snakemake leaves in the folders it writes)."""
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file()
        and p.name != MANIFEST_JSON
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def model_path(root: Path, name: str) -> Path:
    """``models/{name}/model.pt`` of the entry ``root``."""
    return Path(root) / MODELS / name / MODEL_FILE


def ensemble_mask(root: Path, case: str) -> Path:
    """The workflow's ensemble mask of test case ``case`` in the entry ``root``."""
    return Path(root) / PREDICTIONS / "ensemble" / f"{case}_seg.nii.gz"


@dataclass(frozen=True)
class EntryModel:
    """A packaged model: name, type, its file, how it is applied, its threshold, its seed and its tuned
    post-processing (None: its threshold alone)."""

    name: str
    type: str
    path: Path
    apply: Settings
    threshold: float
    seed: int
    postprocessing: Postprocessing | None = None


@dataclass(frozen=True)
class Entry:
    """An entry folder as ``patchwork infer`` reads it; models in the order the ensemble sums them."""

    root: Path
    version: str
    channels: tuple[str, ...]
    labels: dict[str, int]
    ingest: IngestSettings
    preprocess: PreprocessSettings
    models: tuple[EntryModel, ...]
    ensemble: EnsembleSettings
    tuned: bool
    example: str | None
    threads: int | None = None  # the CPU threads of the workflow's predictions (None: an older entry)

    @classmethod
    def load(cls, root: Path) -> Entry:
        """Read and check ``root/entry.json`` and ``root/ensemble.json``; problems name the file."""
        root = Path(root)
        if not root.is_dir():
            raise PatchworkError(f"{root}: entry folder not found")
        path = root / ENTRY_JSON
        raw = read_json(path)
        try:
            return cls._parse(root, raw)
        except PatchworkError as err:
            raise PatchworkError(problems=[f"{path}: {p}" for p in err.problems]) from None
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise PatchworkError(f"{path}: not an entry.json of patchwork package ({err!r})") from None

    @classmethod
    def _parse(cls, root: Path, raw: Any) -> Entry:
        if raw.get("format") != ENTRY_FORMAT:
            raise PatchworkError(f"format {raw.get('format')!r}; this patchwork reads format {ENTRY_FORMAT}")
        models = tuple(
            EntryModel(
                name=m["name"],
                type=m["type"],
                path=model_path(root, m["name"]),
                apply=model_type(m["type"]).apply_class.from_dict(m["apply"]),
                threshold=float(m["threshold"]),
                seed=int(m["seed"]),
                postprocessing=(
                    Postprocessing.from_dict(m["postprocessing"]) if m.get("postprocessing") else None
                ),
            )
            for m in raw["models"]
        )
        ensemble_json = root / ENSEMBLE_JSON
        return cls(
            root=root,
            version=str(raw["patchwork"]),
            channels=tuple(raw["channels"]),
            labels={str(k): int(v) for k, v in raw["labels"].items()},
            ingest=IngestSettings.from_dict(raw["ingest"]),
            preprocess=PreprocessSettings.from_dict(raw["preprocess"]),
            models=models,
            ensemble=read_tuned(ensemble_json),  # {"settings": ...}, as tune-ensemble writes it
            tuned=bool(read_json(ensemble_json).get("tuned")),
            example=raw.get("example"),
            threads=raw.get("threads"),
        )

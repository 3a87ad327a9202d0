# Shared names and input functions. Subject lists come from the `ingest` checkpoint and folds from the
# `splits` checkpoint, so the DAG is completed once those two files exist. Files are read by the plain
# helpers of workflow/inputs.py (the package's light readers: no torch, no pandas), once per file version.

import json
import re
import shlex

from patchwork.config import WorkflowConfig
from patchwork.models import MODEL_TYPES
from workflow import inputs

R = config["results"]
PREPROCESSED = f"{R}/preprocessed"
PREDICTIONS = f"{R}/predictions"
SUBMISSION = f"{R}/submission"
ENV = "../../envs/patchwork.yaml"

# The whole config, every model spec included, is parsed and checked here by the package's torch-free
# settings classes, so a wrong key or value stops the run before any job starts.
MODELS = {spec.name: spec for spec in WorkflowConfig.from_dict(config, "config").models}
# Models whose prediction also writes the per-voxel spread (`{subject}_std.nii.gz`), from the registry.
STD_MODELS = [name for name, spec in MODELS.items() if "std" in MODEL_TYPES[spec.type].outputs]

# Where jobs run is a resource, not a parameter: moving a run to another device re-runs nothing.
DEVICE = f"--device {shlex.quote(config['device'])}" if config["device"] else ""


def model_pattern(names):
    """Wildcard regex matching exactly `names` (and nothing when the list is empty)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


def model_seed(model):
    """A model's seed: its own `seed`, else the run's."""
    seed = MODELS[model].seed
    return config["seed"] if seed is None else seed


def ingest_input(wildcards):
    """The generated demo's folder, or every file of the configured dataset (adding or replacing one
    re-runs ingest)."""
    if config["dataset"] == "demo":
        return f"{R}/demo"
    return inputs.dataset_files(config["dataset"])


def subjects_tsv():
    return checkpoints.ingest.get().output.subjects


def splits_json():
    return checkpoints.splits.get().output[0]


def subject_ids(role):
    """Ids of the `train` or `test` subjects (once the ingest checkpoint has run)."""
    return inputs.subject_ids(subjects_tsv(), role)


def subject_files(wildcards):
    """A subject's first image channel and its reference label (the original files)."""
    row = inputs.subject_row(subjects_tsv(), wildcards.subject)
    return {"image": str(row.images[0]), "reference": str(row.label)}


def all_outputs(wildcards):
    """Targets of the default rule: evaluation of every training subject and the summary, plus the
    packaged challenge entry when `submission.enabled`."""
    train = subject_ids("train")
    # Resolving the splits checkpoint here, at the root of the DAG, lets every input function that asks
    # for a subject's fold (predict_model) find it; the file itself is a target anyway.
    outputs = [splits_json(), f"{R}/summary.tsv", f"{R}/metrics.tsv", f"{R}/report.html"]
    outputs += expand(f"{R}/reports/{{subject}}.html", subject=train)
    if config["submission"]["enabled"]:
        outputs.append(f"{SUBMISSION}/manifest.json")
    return outputs


def predict_model(wildcards):
    """Out-of-fold model of a subject, or the final all-data model for the submission stage."""
    if wildcards.stage.startswith("submission"):
        fold = "all"
    else:
        fold = inputs.fold_of(splits_json(), wildcards.subject)
    return f"{R}/models/{wildcards.model}/fold_{fold}/model.pt"


def evaluated_models():
    """Names evaluated per subject: every model, the ensemble and, when tuned, the tuned ensemble."""
    return [*MODELS, "ensemble", *(["ensemble_tuned"] if config["ensemble"]["tune"] else [])]


def named_paths(names, paths):
    """`NAME=PATH` arguments of the command line."""
    return " ".join(shlex.quote(f"{name}={path}") for name, path in zip(names, paths, strict=True))


def ensemble_settings():
    """The `ensemble` config section and each model's own threshold, as the command line's JSON."""
    thresholds = {name: spec.threshold for name, spec in MODELS.items()}
    return json.dumps({**config["ensemble"], "model_thresholds": thresholds}, sort_keys=True)

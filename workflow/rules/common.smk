# Shared names and input functions. Subject lists come from the `ingest` checkpoint and folds
# from the `splits` checkpoint, so the DAG is completed once those two files exist.

import json
import re

from patchwork.data.cohort import read_subjects
from patchwork.models import parse_spec

R = config["results"]
# Every model's settings are parsed here, so a wrong key or value stops the run before any job starts.
for spec in config["models"]:
    parse_spec(spec, f"config models: {spec.get('name')}")
MODELS = {m["name"]: m for m in config["models"]}
# DNP models also write a per-voxel uncertainty map (`{subject}_std.nii.gz`).
UNCERTAINTY_MODELS = [m for m, spec in MODELS.items() if spec["type"] == "dnp"]
PREDICTIONS = f"{R}/predictions"
SUBMISSION = f"{R}/submission"
ENV = "../../envs/patchwork.yaml"


def dataset_source():
    """The cohort the workflow reads: the generated demo, or the configured folder / CSV."""
    if config["dataset"] == "demo":
        return f"{R}/demo"
    return config["dataset"]


def target_spacing():
    """Resampling target in mm: `preprocess.target_spacing`, else for the demo `demo.target_spacing`,
    else None (the cohort's median spacing, from the fingerprint)."""
    spacing = config["preprocess"]["target_spacing"]
    if spacing is None and config["dataset"] == "demo" and config["demo"].get("target_spacing"):
        spacing = [config["demo"]["target_spacing"]] * 3
    return spacing


def subject_ids(role):
    """Ids of the `train` or `test` subjects (after the ingest checkpoint has run)."""
    tsv = checkpoints.ingest.get().output.subjects
    return [s.subject for s in read_subjects(tsv, role=role)]


def subject_row(subject):
    """The cohort-table row of one subject."""
    tsv = checkpoints.ingest.get().output.subjects
    return next(s for s in read_subjects(tsv) if s.subject == subject)


def fold_of(subject):
    """The cross-validation fold whose validation set holds `subject`."""
    with open(checkpoints.splits.get().output[0]) as fh:
        splits = json.load(fh)
    return next(k for k, fold in enumerate(splits) if subject in fold["val"])


def n_folds():
    with open(checkpoints.splits.get().output[0]) as fh:
        return len(json.load(fh))


def model_seed(model):
    """Each model's seed: its own `seed` key, else the run's seed."""
    return MODELS[model].get("seed", config["seed"])


def ensemble_weights():
    return [float(config["ensemble"]["weights"].get(m, 1.0)) for m in MODELS]


def ensemble_model_thresholds():
    return [float(MODELS[m].get("threshold", 0.5)) for m in MODELS]


def all_outputs(wildcards):
    """Targets of the default rule: evaluation of every training subject and the summary,
    plus the packaged challenge entry when `submission.enabled`."""
    train = subject_ids("train")
    # Resolving the splits checkpoint here, at the root of the DAG, lets every input function that
    # asks for a subject's fold (predict_model) find it; the file itself is a target anyway.
    outputs = [checkpoints.splits.get().output[0], f"{R}/summary.tsv", f"{R}/metrics.tsv", f"{R}/report.html"]
    outputs += expand(f"{R}/reports/{{subject}}.html", subject=train)
    if config["submission"]["enabled"]:
        outputs.append(f"{SUBMISSION}/manifest.json")
    return outputs


def predict_model(wc):
    """Out-of-fold model of a subject, or the final all-data model for the submission stage."""
    fold = "all" if wc.stage.startswith("submission") else fold_of(wc.subject)
    return f"{R}/models/{wc.model}/fold_{fold}/model.pt"


def evaluated_models():
    """Names evaluated per subject: every model, the ensemble and, when tuned, the tuned ensemble."""
    return [*MODELS, "ensemble", *(["ensemble_tuned"] if config["ensemble"]["tune"] else [])]


def evaluate_segs(wc):
    """Segmentation of each evaluated model for one subject, keyed by model name."""
    return {name: f"{PREDICTIONS}/{name}/{wc.subject}_seg.nii.gz" for name in evaluated_models()}


def model_pattern(names):
    """Wildcard regex matching exactly `names` (and nothing when the list is empty)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"

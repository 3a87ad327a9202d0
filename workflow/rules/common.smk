# Shared names and input functions. Subject lists come from the `ingest` checkpoint and folds from the
# `splits` checkpoint, so the DAG is completed once those two files exist. Files are read by the plain
# helpers of workflow/inputs.py (the package's light readers: no torch, no pandas), once per file version.
#
# Per-subject work that takes seconds runs in batches, so the number of jobs grows with folds x models and
# not with subjects x models: batch `fold_K` is the validation subjects of fold K (predicted out of fold
# by that fold's model, ensembled and evaluated together), the test batch is every test subject (predicted
# by the final `fold_all` models). A batch job writes one folder of per-subject files.

import dataclasses
import json
import re
import shlex

from patchwork.workflow_config import WorkflowConfig
from patchwork.models import MODEL_TYPES, parse_spec
from patchwork.models.plans import planned_spec
from workflow import inputs, resources

R = config["results"]
PREPROCESSED = f"{R}/preprocessed"
PREDICTIONS = f"{R}/predictions"
ENTRY = f"{R}/entry"
ENV = "../../envs/patchwork.yaml"

# The whole config, every model spec included, is parsed and checked here by the package's torch-free
# settings classes, so a wrong key or value stops the run before any job starts.
WORKFLOW = WorkflowConfig.from_dict(config, "config")
MODELS = {spec.name: spec for spec in WORKFLOW.models}
# Models whose prediction also writes the per-voxel spread (`{subject}_std.nii.gz`), from the registry.
STD_MODELS = [name for name, spec in MODELS.items() if "std" in MODEL_TYPES[spec.type].outputs]

# Where jobs run is a resource, not a parameter: moving a run to another device re-runs nothing.
DEVICE = f"--device {shlex.quote(config['device'])}" if config["device"] else ""
# Training and prediction hold a GPU unless the config says `device: cpu`; on SLURM the `gpu` resource
# becomes `--gpus=1` (and picks a GPU partition), on a workstation `--resources gpu=N` limits them.
GPUS = 0 if str(config["device"]).startswith("cpu") else 1


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


def folds():
    """Fold numbers of the cross-validation (once the splits checkpoint has run)."""
    return list(range(inputs.n_folds(splits_json())))


def validation_ids(fold):
    """The subjects of batch `fold_{fold}`: the validation subjects of that fold."""
    return inputs.validation_ids(splits_json(), fold)


def all_outputs(wildcards):
    """Targets of the default rule: evaluation of every batch and the summary, plus the packaged challenge
    entry when `entry.enabled`."""
    # Resolving the splits checkpoint here, at the root of the DAG, lets every input function that asks
    # for a fold's subjects find it; the file itself is a target anyway.
    outputs = [splits_json(), f"{R}/summary.tsv", f"{R}/metrics.tsv", f"{R}/report.html"]
    outputs += expand(f"{R}/reports/fold_{{fold}}", fold=folds())
    if config["entry"]["enabled"]:
        outputs.append(f"{ENTRY}/manifest.json")
    return outputs


def evaluated_models():
    """Names evaluated per subject: every model, the ensemble and, when tuned, the tuned ensemble and each
    model's post-processed masks."""
    tuned = ["ensemble_tuned"] if config["ensemble"]["tune"] else []
    postprocessed = [f"{m}_pp" for m in MODELS] if config["postprocessing"]["tune"] else []
    return [*MODELS, "ensemble", *tuned, *postprocessed]


def named_paths(names, paths):
    """`NAME=PATH` arguments of the command line."""
    return " ".join(shlex.quote(f"{name}={path}") for name, path in zip(names, paths, strict=True))


def ensemble_settings():
    """The `ensemble` settings and each model's own threshold, as the command line's JSON: written from the
    parsed settings, so a setting at a default they leave out (`min_peak`) changes no job's params."""
    thresholds = {name: spec.threshold for name, spec in MODELS.items()}
    settings = dataclasses.replace(WORKFLOW.ensemble, model_thresholds=thresholds)
    return json.dumps(settings.to_dict(), sort_keys=True)


def cohort():
    """Sizes of the cohort (workflow/resources.py) from the fingerprint; None before ingest."""
    return resources.cohort_of(f"{R}/fingerprint.json", config["preprocess"]["target_spacing"])


def batch_size(wildcards):
    """Subjects of the batch a job handles: fold `wildcards.fold`'s validation set, else the test set."""
    if "fold" in wildcards.keys():
        return len(validation_ids(wildcards.fold))
    return len(subject_ids("test"))


def written_training_spec(name):
    """A model's name, type and params as the config writes them (the plans fill the rest at training)."""
    written = next(m for m in config["models"] if m["name"] == name)
    return {"name": name, "type": written["type"], "params": written.get("params") or {}}


def planned_params(model):
    """A model's params as its training will use them: the config's laid over results/plans.json once the
    plan exists (a job's resources are evaluated again when it is ready to run), else the config's."""
    plans = f"{R}/plans.json"
    if not os.path.exists(plans):
        return MODELS[model].params
    written = next(m for m in config["models"] if m["name"] == model)
    return parse_spec(planned_spec(written, inputs.read_json(plans)), plans).params


def training_share(wildcards):
    """The share of the training subjects a fold's model trains on: (K-1)/K, all for `all`."""
    return 1.0 if wildcards.fold == "all" else 1 - 1 / len(folds())


def train_mem_mb(wildcards):
    """Training memory: what the model type's cost says its planned params hold on the fold's training
    subjects, and one step (workflow/resources.py)."""
    spec = MODELS[wildcards.model]
    return resources.train_mem_mb(cohort(), spec.type, planned_params(spec.name), training_share(wildcards))


def train_minutes(wildcards):
    """Training time: the model type's steps of its planned params at the device's throughput."""
    spec = MODELS[wildcards.model]
    return resources.train_minutes(
        cohort(), spec.type, planned_params(spec.name), training_share(wildcards), GPUS
    )


def tuned_settings():
    """The tuned ensemble settings the test predictions and the entry use, when `ensemble.tune` is on."""
    return {"tuned": f"{R}/ensemble_params.json"} if config["ensemble"]["tune"] else {}


def test_ensemble_inputs(wildcards):
    """Every model's test predictions and, with `ensemble.tune`, the tuned settings."""
    return {"probs": expand(f"{ENTRY}/predictions/{{model}}", model=MODELS), **tuned_settings()}


def postprocessing_files():
    """Each model's tuned post-processing, when `postprocessing.tune` is on."""
    if not config["postprocessing"]["tune"]:
        return {}
    return {"postprocessing": expand(f"{R}/postprocessing/{{model}}.json", model=MODELS)}


def package_inputs(wildcards):
    """What the entry is made of: final models, the test ensemble, the cohort's records, the licence,
    with `ensemble.tune` the tuned settings the test ensemble used, and each model's tuned
    post-processing."""
    return {
        "models": expand(f"{R}/models/{{model}}/fold_all/model.pt", model=MODELS),
        "predictions": f"{ENTRY}/predictions/ensemble",
        "fingerprint": f"{R}/fingerprint.json",
        "subjects": f"{R}/subjects.tsv",
        "license": os.path.join(workflow.basedir, "LICENSE"),
        **tuned_settings(),
        **postprocessing_files(),
    }

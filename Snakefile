# Deep Neural Patchworks cohort workflow.
#
#   snakemake --cores all                          # the built-in demo cohort
#   snakemake --cores all --config dataset=PATH    # an nnU-Net/MSD raw folder or a CSV manifest
#   snakemake --cores all --configfile my.yaml     # any key of config/config.yaml (see config/README.md)
#
# Every rule is a thin call of the `patchwork` command line; the logic lives in the package. Parsing this
# file imports no torch (nor pandas): model specs are checked by torch-free settings classes, and the input
# functions read the cohort table and the splits with the standard library (workflow/inputs.py).

import json
import os

from snakemake.utils import min_version, validate

from patchwork.workflow_config import ensemble_weights_of_present_models

# 9.15 and older start jobs that together need more threads than --cores (snakemake/snakemake#3913).
min_version("9.16")

# The conda environment (envs/patchwork.yaml) installs the package from this repository.
os.environ["PATCHWORK_SOURCE"] = workflow.basedir


envvars:
    "PATCHWORK_SOURCE",


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


# The demo runs the CPU preset; --config and --configfile given on the command line still win.
if config.get("dataset") == "demo":

    configfile: os.path.join(workflow.basedir, "config", "cpu.yaml")


# The shipped configs weigh their own DNP: a config with other models drops the weights it cannot use.
config["ensemble"]["weights"] = ensemble_weights_of_present_models(
    config, os.path.join(workflow.basedir, "config")
)


# Checked against the schema; its defaults fill the keys a config leaves out.
validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"


wildcard_constraints:
    subject=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    model=model_pattern(MODELS),
    fold=r"\d+|all",


include: "workflow/rules/data.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/plan.smk"
include: "workflow/rules/splits.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/ensemble.smk"
include: "workflow/rules/postprocess.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/entry.smk"


rule all:
    default_target: True
    input:
        all_outputs,

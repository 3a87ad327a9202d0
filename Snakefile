# Deep Neural Patchworks cohort workflow.
#
#   snakemake --cores all                          # the built-in demo cohort
#   snakemake --cores all --config dataset=PATH    # an nnU-Net/MSD raw folder or a CSV manifest
#   snakemake --cores all --configfile my.yaml     # any key of config/config.yaml (see config/README.md)
#
# Every rule is a thin call of the `patchwork` command line; the logic lives in the package.

import os

from snakemake.utils import min_version, validate

min_version("8.0")


configfile: os.path.join(workflow.basedir, "config", "config.yaml")


validate(config, "workflow/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"


wildcard_constraints:
    subject=r"[A-Za-z0-9][A-Za-z0-9._-]*",
    model=model_pattern(MODELS),
    fold=r"\d+|all",
    stage=r"predictions|submission/predictions",


include: "workflow/rules/data.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/splits.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/predict.smk"
include: "workflow/rules/ensemble.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/submission.smk"


rule all:
    input:
        all_outputs,
    default_target: True

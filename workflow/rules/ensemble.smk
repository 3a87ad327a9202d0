# Ensemble of all models per subject, one job per batch (as prediction): weighted mean of probabilities
# then threshold (`mean`), or the ATLAS R2.0 vote of per-model masks (`vote`); then removal of small
# 26-connected components. Its settings are the `ensemble` config section plus each model's own threshold
# (ensemble_settings). One `patchwork ensemble --out-dir` process per batch: the subjects whose probability
# the first model's batch folder holds.


rule ensemble:
    input:
        probs=expand(f"{PREDICTIONS}/{{model}}/fold_{{{{fold}}}}", model=MODELS),
    output:
        directory(f"{PREDICTIONS}/ensemble/fold_{{fold}}"),
    log:
        "logs/ensemble/fold_{fold}.log",
    benchmark:
        f"{R}/benchmarks/ensemble/fold_{{fold}}.tsv"
    wildcard_constraints:
        fold=r"\d+",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: attempt * resources.per_subject_mem_mb(cohort(), "ensemble"),
        runtime=lambda wc, attempt: attempt
        * resources.per_subject_minutes(cohort(), "ensemble", batch_size(wc)),
    params:
        probs=lambda wc, input: named_paths(MODELS, input.probs),
        settings=ensemble_settings(),
        tuned=lambda wc, input: f"--tuned {input.tuned}" if "tuned" in input.keys() else "",
    shell:
        "patchwork ensemble --probs {params.probs} --settings {params.settings:q} {params.tuned}"
        " --out-dir {output} > {log} 2>&1"


# The test images' ensemble, in the entry: with `ensemble.tune` it uses the tuned settings (the entry
# ships them, and `patchwork infer` applies the same).


use rule ensemble as ensemble_test with:
    input:
        unpack(test_ensemble_inputs),
    output:
        directory(f"{ENTRY}/predictions/ensemble"),
    log:
        "logs/ensemble_test/ensemble.log",
    benchmark:
        f"{R}/benchmarks/ensemble_test/ensemble.tsv"


# Beyond the recipe (`ensemble.tune: true`): weights, threshold, minimum component size and peak
# chosen on the out-of-fold predictions for the best mean Dice, reported beside the hand-set ensemble.
# `patchwork tune-ensemble` takes every batch folder of every model and reads one subject at a time.


rule tune_ensemble:
    input:
        subjects=f"{R}/subjects.tsv",
        probs=lambda wc: expand(f"{PREDICTIONS}/{{model}}/fold_{{fold}}", model=MODELS, fold=folds()),
    output:
        f"{R}/ensemble_params.json",
    log:
        "logs/tune_ensemble.log",
    benchmark:
        f"{R}/benchmarks/tune_ensemble/tune_ensemble.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: attempt * resources.per_subject_mem_mb(cohort(), "tune", len(MODELS)),
        runtime=lambda wc, attempt: attempt
        * resources.per_subject_minutes(cohort(), "tune", len(MODELS) * len(subject_ids("train"))),
    params:
        probs=lambda wc, input: named_paths([m for m in MODELS for _ in folds()], input.probs),
        settings=ensemble_settings(),
    shell:
        "patchwork tune-ensemble --subjects {input.subjects} --probs {params.probs}"
        " --settings {params.settings:q} --out {output} > {log} 2>&1"


use rule ensemble as ensemble_tuned with:
    input:
        probs=expand(f"{PREDICTIONS}/{{model}}/fold_{{{{fold}}}}", model=MODELS),
        tuned=f"{R}/ensemble_params.json",
    output:
        directory(f"{PREDICTIONS}/ensemble_tuned/fold_{{fold}}"),
    log:
        "logs/ensemble_tuned/fold_{fold}.log",
    benchmark:
        f"{R}/benchmarks/ensemble_tuned/fold_{{fold}}.tsv"

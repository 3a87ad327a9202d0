# Ensemble of all models per subject, one job per batch (as prediction): weighted mean of probabilities
# then threshold (`mean`), or the ATLAS R2.0 vote of per-model masks (`vote`); then removal of small
# 26-connected components. Its settings are the `ensemble` config section plus each model's own threshold
# (ensemble_settings). The job runs `patchwork ensemble` for each subject of the batch (the subjects whose
# probability the first model's batch folder holds).


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
        probs=ensemble_probs,
        settings=ensemble_settings(),
        tuned=lambda wc, input: f"--tuned {input.tuned}" if "tuned" in input.keys() else "",
    shell:
        "shopt -s nullglob; mkdir -p {output}; for prob in {input.probs[0]}/*_prob.nii.gz; do"
        " subject=$(basename $prob _prob.nii.gz);"
        " patchwork ensemble --probs {params.probs} --settings {params.settings:q} {params.tuned}"
        ' --out-prob {output}/"$subject"_prob.nii.gz --out-seg {output}/"$subject"_seg.nii.gz;'
        " done > {log} 2>&1"


# The test images' ensemble, in the entry: with `ensemble.tune` it uses the tuned settings (the entry
# ships them, and `patchwork infer` applies the same).


use rule ensemble as ensemble_test with:
    input:
        unpack(test_ensemble_inputs),
    output:
        directory(f"{SUBMISSION}/predictions/ensemble"),
    log:
        "logs/ensemble_test/ensemble.log",
    benchmark:
        f"{R}/benchmarks/ensemble_test/ensemble.tsv"


# Beyond the recipe (`ensemble.tune: true`): weights, threshold and minimum component size chosen
# on the out-of-fold predictions for the best mean Dice, reported beside the hand-set ensemble.
# `patchwork tune-ensemble` reads {model}/{subject}_prob.nii.gz under one folder: the job gives it a
# temporary folder of links to the batches' files.


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
        mem_mb=lambda wc, attempt: attempt
        * resources.per_subject_mem_mb(cohort(), "tune", len(MODELS) * len(subject_ids("train"))),
        runtime=lambda wc, attempt: attempt
        * resources.per_subject_minutes(cohort(), "tune", len(MODELS) * len(subject_ids("train"))),
    params:
        models=list(MODELS),
        settings=ensemble_settings(),
    shell:
        "view=$(mktemp -d); trap 'rm -rf \"$view\"' EXIT;"
        " for batch in {input.probs}; do model=$view/$(basename $(dirname $batch)); mkdir -p $model;"
        " find $(realpath $batch) -name '*_prob.nii.gz' -exec ln -s -t $model {{}} +; done;"
        " patchwork tune-ensemble --subjects {input.subjects} --predictions $view"
        " --models {params.models} --settings {params.settings:q} --out {output} > {log} 2>&1"


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

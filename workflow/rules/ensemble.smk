# Ensemble of all models per subject: weighted mean of probabilities then threshold (`mean`), or
# the ATLAS R2.0 vote of per-model masks (`vote`); then removal of small 26-connected components.
# Its settings are the `ensemble` config section plus each model's own threshold (ensemble_settings).


rule ensemble:
    input:
        probs=expand(f"{R}/{{{{stage}}}}/{{model}}/{{{{subject}}}}_prob.nii.gz", model=MODELS),
    output:
        prob=f"{R}/{{stage}}/ensemble/{{subject}}_prob.nii.gz",
        seg=f"{R}/{{stage}}/ensemble/{{subject}}_seg.nii.gz",
    log:
        "logs/{stage}/ensemble/{subject}.log",
    benchmark:
        f"{R}/benchmarks/ensemble/{{stage}}/{{subject}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        probs=lambda wc, input: named_paths(MODELS, input.probs),
        settings=ensemble_settings(),
        tuned=lambda wc, input: f"--tuned {input.tuned}" if "tuned" in input.keys() else "",
    shell:
        "patchwork ensemble --probs {params.probs} --settings {params.settings:q} {params.tuned}"
        " --out-prob {output.prob} --out-seg {output.seg} > {log} 2>&1"


# Beyond the recipe (`ensemble.tune: true`): weights, threshold and minimum component size chosen
# on the out-of-fold predictions for the best mean Dice, reported beside the hand-set ensemble.


rule tune_ensemble:
    input:
        subjects=f"{R}/subjects.tsv",
        probs=lambda wc: expand(
            f"{PREDICTIONS}/{{model}}/{{subject}}_prob.nii.gz", model=MODELS, subject=subject_ids("train")
        ),
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
        mem_mb=8000,
        runtime=30,
    params:
        predictions=PREDICTIONS,
        models=list(MODELS),
        settings=ensemble_settings(),
    shell:
        "patchwork tune-ensemble --subjects {input.subjects} --predictions {params.predictions}"
        " --models {params.models} --settings {params.settings:q} --out {output} > {log} 2>&1"


use rule ensemble as ensemble_tuned with:
    input:
        probs=expand(f"{PREDICTIONS}/{{model}}/{{{{subject}}}}_prob.nii.gz", model=MODELS),
        tuned=f"{R}/ensemble_params.json",
    output:
        prob=f"{PREDICTIONS}/ensemble_tuned/{{subject}}_prob.nii.gz",
        seg=f"{PREDICTIONS}/ensemble_tuned/{{subject}}_seg.nii.gz",
    log:
        "logs/predictions/ensemble_tuned/{subject}.log",
    benchmark:
        f"{R}/benchmarks/ensemble_tuned/{{subject}}.tsv"

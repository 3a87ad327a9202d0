# Post-processing of each model (`postprocessing.tune`), as nnU-Net decides it after cross-validation:
# threshold, smallest kept component volume (mm³) and peak probability chosen on the model's out-of-fold
# predictions (results/postprocessing/{model}.json), then applied to its out-of-fold masks, evaluated as
# `{model}_pp` beside the untouched model. The entry ships the chosen settings.


rule tune_postprocessing:
    input:
        subjects=f"{R}/subjects.tsv",
        probs=lambda wc: expand(f"{PREDICTIONS}/{wc.model}/fold_{{fold}}", fold=folds()),
    output:
        f"{R}/postprocessing/{{model}}.json",
    log:
        "logs/tune_postprocessing/{model}.log",
    benchmark:
        f"{R}/benchmarks/tune_postprocessing/{{model}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: attempt * resources.per_subject_mem_mb(cohort(), "tune"),
        runtime=lambda wc, attempt: attempt
        * resources.per_subject_minutes(cohort(), "tune", len(subject_ids("train"))),
    params:
        threshold=lambda wc: MODELS[wc.model].threshold,
    shell:
        "patchwork tune-postprocessing --subjects {input.subjects} --predictions {input.probs}"
        " --model {wildcards.model} --threshold {params.threshold} --out {output} > {log} 2>&1"


rule postprocess:
    input:
        probs=f"{PREDICTIONS}/{{model}}/fold_{{fold}}",
        tuned=f"{R}/postprocessing/{{model}}.json",
    output:
        directory(f"{PREDICTIONS}/{{model}}_pp/fold_{{fold}}"),
    log:
        "logs/postprocess/{model}/fold_{fold}.log",
    benchmark:
        f"{R}/benchmarks/postprocess/{{model}}/fold_{{fold}}.tsv"
    wildcard_constraints:
        fold=r"\d+",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: attempt * resources.per_subject_mem_mb(cohort(), "ensemble"),
        runtime=lambda wc, attempt: attempt
        * resources.per_subject_minutes(cohort(), "ensemble", batch_size(wc)),
    shell:
        "patchwork postprocess --prob-dir {input.probs} --tuned {input.tuned} --out-dir {output} > {log} 2>&1"

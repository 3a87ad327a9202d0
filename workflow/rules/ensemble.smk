# Ensemble of all models per subject: weighted mean of probabilities then threshold (`mean`), or
# the ATLAS R2.0 vote of per-model masks (`vote`); then removal of small 26-connected components.


rule ensemble:
    input:
        probs=expand(f"{R}/{{{{stage}}}}/{{model}}/{{{{subject}}}}_prob.nii.gz", model=MODELS),
    output:
        prob=f"{R}/{{stage}}/ensemble/{{subject}}_prob.nii.gz",
        seg=f"{R}/{{stage}}/ensemble/{{subject}}_seg.nii.gz",
    params:
        weights=" ".join(map(str, ensemble_weights())),
        model_thresholds=" ".join(map(str, ensemble_model_thresholds())),
        mode=config["ensemble"]["mode"],
        threshold=config["ensemble"]["threshold"],
        min_voxels=config["ensemble"]["min_component_voxels"],
        tuned=lambda wc, input: f"--params-json {input.tuned}" if "tuned" in input.keys() else "",
    log:
        "logs/{stage}/ensemble/{subject}.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        ENV
    shell:
        "patchwork --log {log} ensemble --probs {input.probs} --weights {params.weights}"
        " --mode {params.mode} --threshold {params.threshold}"
        " --model-thresholds {params.model_thresholds}"
        " --min-component-voxels {params.min_voxels} {params.tuned}"
        " --out-prob {output.prob} --out-seg {output.seg}"


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
    params:
        predictions=PREDICTIONS,
        models=" ".join(MODELS),
        weights=" ".join(map(str, ensemble_weights())),
        model_thresholds=" ".join(map(str, ensemble_model_thresholds())),
        mode=config["ensemble"]["mode"],
        threshold=config["ensemble"]["threshold"],
        min_voxels=config["ensemble"]["min_component_voxels"],
    log:
        "logs/tune_ensemble.log",
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    conda:
        ENV
    shell:
        "patchwork --log {log} tune-ensemble --subjects {input.subjects} --predictions {params.predictions}"
        " --models {params.models} --weights {params.weights} --mode {params.mode}"
        " --threshold {params.threshold} --model-thresholds {params.model_thresholds}"
        " --min-component-voxels {params.min_voxels} --out {output}"


use rule ensemble as ensemble_tuned with:
    input:
        probs=expand(f"{PREDICTIONS}/{{model}}/{{{{subject}}}}_prob.nii.gz", model=MODELS),
        tuned=f"{R}/ensemble_params.json",
    output:
        prob=f"{PREDICTIONS}/ensemble_tuned/{{subject}}_prob.nii.gz",
        seg=f"{PREDICTIONS}/ensemble_tuned/{{subject}}_seg.nii.gz",
    log:
        "logs/predictions/ensemble_tuned/{subject}.log",

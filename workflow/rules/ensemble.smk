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
        " --min-component-voxels {params.min_voxels} --out-prob {output.prob} --out-seg {output.seg}"

# Prediction, one job per (model, subject), written in the subject's ORIGINAL image grid.
# {stage} = predictions: out-of-fold, by the fold that did not train on the subject;
# {stage} = submission/predictions: test images, by the final all-data model.
# DNP models go through `predict_with_uncertainty`, which also writes the per-voxel spread.

PREDICT_SHELL = (
    "patchwork --log {log} predict --model {input.model} --preprocessed {params.preprocessed}"
    " --subject {wildcards.subject} --out-prob {output.prob} --out-seg {output.seg} {params.std}"
    " --threshold {params.threshold} --seed {params.seed} --threads {threads} {params.device}"
)


rule predict:
    input:
        model=predict_model,
        preprocessed=f"{R}/preprocessed/{{subject}}.json",
    output:
        prob=f"{R}/{{stage}}/{{model}}/{{subject}}_prob.nii.gz",
        seg=f"{R}/{{stage}}/{{model}}/{{subject}}_seg.nii.gz",
    wildcard_constraints:
        model=model_pattern([m for m in MODELS if m not in UNCERTAINTY_MODELS]),
    params:
        preprocessed=lambda wc, input: os.path.dirname(input.preprocessed),
        threshold=lambda wc: MODELS[wc.model].get("threshold", 0.5),
        seed=lambda wc: model_seed(wc.model),
        std=lambda wc, output: f"--out-std {output.std}" if "std" in output.keys() else "",
        device=f"--device {config['device']}" if config["device"] else "",
    log:
        "logs/{stage}/{model}/{subject}.log",
    benchmark:
        f"{R}/benchmarks/{{stage}}/{{model}}/{{subject}}.tsv"
    threads: config["threads"]["predict"]
    resources:
        mem_mb=6000,
        runtime=60,
        gpu=1,
    conda:
        ENV
    shell:
        PREDICT_SHELL


use rule predict as predict_with_uncertainty with:
    output:
        prob=f"{R}/{{stage}}/{{model}}/{{subject}}_prob.nii.gz",
        seg=f"{R}/{{stage}}/{{model}}/{{subject}}_seg.nii.gz",
        std=f"{R}/{{stage}}/{{model}}/{{subject}}_std.nii.gz",
    wildcard_constraints:
        model=model_pattern(UNCERTAINTY_MODELS),

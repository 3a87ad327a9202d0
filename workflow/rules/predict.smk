# Prediction, one job per (model, subject), written in the subject's ORIGINAL image grid.
# {stage} = predictions: out-of-fold, by the fold that did not train on the subject;
# {stage} = submission/predictions: test images, by the final all-data model.
# Its params are how a trained model is applied (threshold, `apply`, seed): changing them re-predicts.
# Models whose type also writes the per-voxel spread (registry: outputs hold "std") go through
# predict_with_std.


rule predict:
    input:
        model=predict_model,
        preprocessed=f"{PREPROCESSED}/{{subject}}",
    output:
        prob=f"{R}/{{stage}}/{{model}}/{{subject}}_prob.nii.gz",
        seg=f"{R}/{{stage}}/{{model}}/{{subject}}_seg.nii.gz",
    log:
        "logs/{stage}/{model}/{subject}.log",
    benchmark:
        f"{R}/benchmarks/predict/{{stage}}/{{model}}/{{subject}}.tsv"
    wildcard_constraints:
        model=model_pattern([m for m in MODELS if m not in STD_MODELS]),
    conda:
        ENV
    threads: config["threads"]["predict"]
    resources:
        mem_mb=6000,
        runtime=60,
        gpu=1,
        device=DEVICE,
    params:
        apply=lambda wc: json.dumps(MODELS[wc.model].apply.to_dict(), sort_keys=True),
        threshold=lambda wc: MODELS[wc.model].threshold,
        seed=lambda wc: model_seed(wc.model),
        out_std=lambda wc, output: f"--out-std {output.std}" if "std" in output.keys() else "",
    shell:
        "patchwork predict --model {input.model} --preprocessed $(dirname {input.preprocessed})"
        " --subject {wildcards.subject} --apply {params.apply:q} --threshold {params.threshold}"
        " --out-prob {output.prob} --out-seg {output.seg} {params.out_std} --seed {params.seed}"
        " --threads {threads} {resources.device} > {log} 2>&1"


use rule predict as predict_with_std with:
    output:
        prob=f"{R}/{{stage}}/{{model}}/{{subject}}_prob.nii.gz",
        seg=f"{R}/{{stage}}/{{model}}/{{subject}}_seg.nii.gz",
        std=f"{R}/{{stage}}/{{model}}/{{subject}}_std.nii.gz",
    benchmark:
        f"{R}/benchmarks/predict_with_std/{{stage}}/{{model}}/{{subject}}.tsv"
    wildcard_constraints:
        model=model_pattern(STD_MODELS),

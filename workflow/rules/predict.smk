# Prediction, one job per (model, subject), written in the subject's ORIGINAL image grid.
# {stage} = predictions: out-of-fold, by the fold that did not train on the subject;
# {stage} = submission/predictions: test images, by the final all-data model.


rule predict:
    input:
        model=predict_model,
        preprocessed=f"{R}/preprocessed/{{subject}}.json",
    output:
        prob=f"{R}/{{stage}}/{{model}}/{{subject}}_prob.nii.gz",
        seg=f"{R}/{{stage}}/{{model}}/{{subject}}_seg.nii.gz",
    params:
        preprocessed=lambda wc, input: os.path.dirname(input.preprocessed),
        threshold=lambda wc: MODELS[wc.model].get("threshold", 0.5),
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
        "patchwork --log {log} predict --model {input.model} --preprocessed {params.preprocessed}"
        " --subject {wildcards.subject} --out-prob {output.prob} --out-seg {output.seg}"
        " --threshold {params.threshold} --threads {threads} {params.device}"

# Training, one job per (model, fold); fold `all` is the final model on every training subject.
# A killed job resumes from models/{model}/fold_{fold}/checkpoint.pt when rerun.


rule train:
    input:
        subjects=f"{R}/subjects.tsv",
        splits=f"{R}/splits.json",
        preprocessed=lambda wc: expand(f"{R}/preprocessed/{{s}}.json", s=subject_ids("train")),
    output:
        model=f"{R}/models/{{model}}/fold_{{fold}}/model.pt",
        log_table=f"{R}/models/{{model}}/fold_{{fold}}/train_log.tsv",
        curve=f"{R}/models/{{model}}/fold_{{fold}}/curve.png",
    params:
        spec=lambda wc: json.dumps(MODELS[wc.model]),
        out_dir=lambda wc, output: os.path.dirname(output.model),
        preprocessed=lambda wc, input: os.path.dirname(input.preprocessed[0]),
        seed=lambda wc: model_seed(wc.model),
        device=f"--device {config['device']}" if config["device"] else "",
    log:
        "logs/train/{model}_fold_{fold}.log",
    benchmark:
        f"{R}/benchmarks/train/{{model}}_fold_{{fold}}.tsv"
    threads: config["threads"]["train"]
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=1,
    conda:
        ENV
    shell:
        "patchwork --log {log} train --spec {params.spec:q} --subjects {input.subjects}"
        " --preprocessed {params.preprocessed} --splits {input.splits} --fold {wildcards.fold}"
        " --out-dir {params.out_dir} --seed {params.seed} --threads {threads} {params.device}"

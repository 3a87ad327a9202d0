# Training, one job per (model, fold); fold `all` is the final model on every training subject.
# A killed job resumes from models/{model}/fold_{fold}/checkpoint.pt (removed at the end) when rerun.
# Its params are what training depends on (name, type, params as the config writes them, seed) and the
# plans, which fill every param the config leaves out (spec.json records what was used): a model's
# threshold and `apply` settings are prediction's, so changing them never retrains.
# Memory and time follow the model type's cost of its planned params (train_mem_mb, train_minutes): training
# reads its cases memory-mapped from preprocessed/{subject}/*.npy, a bounded number at once.


rule train:
    input:
        subjects=f"{R}/subjects.tsv",
        splits=f"{R}/splits.json",
        preprocessed=f"{R}/stamps/preprocessed_train.done",
        plans=f"{R}/plans.json",
    output:
        model=f"{R}/models/{{model}}/fold_{{fold}}/model.pt",
        spec=f"{R}/models/{{model}}/fold_{{fold}}/spec.json",
        log_table=f"{R}/models/{{model}}/fold_{{fold}}/train_log.tsv",
        curve=f"{R}/models/{{model}}/fold_{{fold}}/curve.png",
    log:
        "logs/train/{model}/fold_{fold}.log",
    benchmark:
        f"{R}/benchmarks/train/{{model}}/fold_{{fold}}.tsv"
    conda:
        ENV
    threads: config["threads"]["train"]
    resources:
        mem_mb=lambda wc, attempt: attempt * train_mem_mb(wc),
        runtime=lambda wc, attempt: attempt * train_minutes(wc),
        gpu=GPUS,
        device=DEVICE,
    params:
        preprocessed=PREPROCESSED,
        spec=lambda wc: json.dumps(written_training_spec(wc.model), sort_keys=True),
        seed=lambda wc: model_seed(wc.model),
    shell:
        "patchwork train --spec {params.spec:q} --plans {input.plans} --subjects {input.subjects}"
        " --preprocessed {params.preprocessed} --splits {input.splits}"
        " --fold {wildcards.fold} --out-dir $(dirname {output.model})"
        " --seed {params.seed} --threads {threads} {resources.device} > {log} 2>&1"

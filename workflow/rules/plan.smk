# Self-configuration (nnU-Net): every model type's sizes (U-Net patch, batch, stages, features; the DNP
# scheme, its blocks and batch) planned from the fingerprint and the memory one training step may take
# (`planning`), at the spacing preprocessing uses. Training lays each model's `params` from the config
# over its type's plan: what the config writes wins, the rest comes from results/plans.json.


rule plan:
    input:
        fingerprint=f"{R}/fingerprint.json",
    output:
        f"{R}/plans.json",
    log:
        "logs/plan.log",
    benchmark:
        f"{R}/benchmarks/plan/plan.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: attempt * resources.BASE_MB["train"],
        runtime=lambda wc, attempt: attempt * resources.MIN_RUNTIME,
        device=DEVICE,
    params:
        settings=json.dumps(config["planning"], sort_keys=True),
        preprocess=json.dumps(config["preprocess"], sort_keys=True),
    shell:
        "patchwork plan --fingerprint {input.fingerprint} --settings {params.settings:q}"
        " --preprocess-settings {params.preprocess:q} {resources.device} --out {output} > {log} 2>&1"

# Cross-validation splits (nnU-Net splits_final.json format), or the user's own file, checked.


checkpoint splits:
    input:
        subjects=f"{R}/subjects.tsv",
        user_splits=config["splits"]["file"] or [],
    output:
        f"{R}/splits.json",
    log:
        "logs/splits.log",
    benchmark:
        f"{R}/benchmarks/splits/splits.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: attempt * resources.BASE_MB["default"],
        runtime=lambda wc, attempt: attempt * resources.MIN_RUNTIME,
    params:
        settings=json.dumps(config["splits"], sort_keys=True),
        seed=config["seed"],
    shell:
        "patchwork splits --subjects {input.subjects} --out {output} --settings {params.settings:q}"
        " --seed {params.seed} > {log} 2>&1"

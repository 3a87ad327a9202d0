# Cross-validation splits (nnU-Net splits_final.json format), or the user's own file, checked.


checkpoint splits:
    input:
        subjects=f"{R}/subjects.tsv",
    output:
        f"{R}/splits.json",
    params:
        folds=config["splits"]["n_folds"],
        seed=config["seed"],
        file=f"--file {config['splits']['file']}" if config["splits"]["file"] else "",
    log:
        "logs/splits.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        ENV
    shell:
        "patchwork --log {log} splits --subjects {input.subjects} --out {output}"
        " --folds {params.folds} --seed {params.seed} {params.file}"

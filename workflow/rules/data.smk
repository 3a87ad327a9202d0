# Cohort: generate the demo (when `dataset: demo`), then open and check every file.


rule demo:
    output:
        directory(f"{R}/demo"),
    log:
        "logs/demo.log",
    benchmark:
        f"{R}/benchmarks/demo/demo.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        settings=json.dumps(config["demo"], sort_keys=True),
        seed=config["seed"],
    shell:
        "patchwork demo {output} --settings {params.settings:q} --seed {params.seed} > {log} 2>&1"


# Inputs: every file of the dataset (see ingest_input), so a new or replaced file re-runs ingest.
checkpoint ingest:
    input:
        ingest_input,
    output:
        subjects=f"{R}/subjects.tsv",
        fingerprint=f"{R}/fingerprint.json",
    log:
        "logs/ingest.log",
    benchmark:
        f"{R}/benchmarks/ingest/ingest.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        source=f"{R}/demo" if config["dataset"] == "demo" else config["dataset"],
        settings=json.dumps(config["ingest"], sort_keys=True),
    shell:
        "patchwork ingest {params.source:q} --out {output.subjects} --fingerprint {output.fingerprint}"
        " --settings {params.settings:q} > {log} 2>&1"

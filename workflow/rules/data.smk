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
        mem_mb=lambda wc, attempt: attempt * 2000,
        runtime=lambda wc, attempt: attempt
        * resources.minutes(60 + 10 * (config["demo"]["n_train"] + config["demo"]["n_test"])),
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
        # One image at a time, in a few copies: its size from the largest file (compressed), bounded by
        # what `ingest.max_image_bytes` lets one file decompress to.
        mem_mb=lambda wc, input, attempt: attempt
        * resources.ingest_mem_mb(input, config["ingest"]["max_image_bytes"]),
        runtime=lambda wc, input, attempt: attempt * resources.minutes(60 + 2 * len(input)),
    params:
        source=f"{R}/demo" if config["dataset"] == "demo" else config["dataset"],
        settings=json.dumps(config["ingest"], sort_keys=True),
    shell:
        "patchwork ingest {params.source:q} --out {output.subjects} --fingerprint {output.fingerprint}"
        " --settings {params.settings:q} > {log} 2>&1"

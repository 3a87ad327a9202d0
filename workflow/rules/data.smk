# Cohort: generate the demo (when `dataset: demo`), then open and check every file.


rule demo:
    output:
        f"{R}/demo/dataset.json",
    params:
        out=lambda wc, output: os.path.dirname(output[0]),
        n_train=config["demo"]["n_train"],
        n_test=config["demo"]["n_test"],
        spacing=config["demo"]["spacing"],
        seed=config["seed"],
    log:
        "logs/demo.log",
    benchmark:
        f"{R}/benchmarks/demo.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    conda:
        ENV
    shell:
        "patchwork --log {log} demo {params.out} --n-train {params.n_train} --n-test {params.n_test}"
        " --spacing {params.spacing} --seed {params.seed}"


checkpoint ingest:
    input:
        lambda wc: f"{R}/demo/dataset.json" if config["dataset"] == "demo" else config["dataset"],
    output:
        subjects=f"{R}/subjects.tsv",
        fingerprint=f"{R}/fingerprint.json",
    params:
        source=dataset_source(),
        labels=(
            f"--labels '{json.dumps(config['labels'])}'"
            if str(config["dataset"]).lower().endswith((".csv", ".tsv"))
            else ""
        ),
        tolerance=config["affine_tolerance"],
    log:
        "logs/ingest.log",
    benchmark:
        f"{R}/benchmarks/ingest.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    conda:
        ENV
    shell:
        "patchwork --log {log} ingest {params.source:q} --out {output.subjects}"
        " --fingerprint {output.fingerprint} {params.labels}"
        " --affine-tolerance {params.tolerance}"

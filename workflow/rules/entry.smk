# The challenge entry: final models trained on every training subject, their ensemble on the test
# images, the run's config, the ensemble settings the test predictions used, each model's tuned
# post-processing, the licence and a manifest of versions and checksums (`patchwork package`).


rule package_entry:
    input:
        unpack(package_inputs),
    output:
        f"{ENTRY}/manifest.json",
    log:
        "logs/package_entry.log",
    benchmark:
        f"{R}/benchmarks/package_entry/package_entry.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: attempt * resources.BASE_MB["default"],
        runtime=lambda wc, attempt: attempt * resources.MIN_RUNTIME,
    params:
        models=lambda wc, input: named_paths(MODELS, input.models),
        config=json.dumps(config, sort_keys=True),
        ensemble=ensemble_settings(),
        tuned=lambda wc, input: f"--tuned {input.tuned}" if "tuned" in input.keys() else "",
        postprocessing=lambda wc, input: (
            f"--postprocessing {named_paths(MODELS, input.postprocessing)}"
            if "postprocessing" in input.keys()
            else ""
        ),
        out_dir=lambda wc, output: os.path.dirname(output[0]),
    shell:
        "patchwork package --model {params.models} --config-json {params.config:q}"
        " --ensemble-settings {params.ensemble:q} {params.tuned} --fingerprint {input.fingerprint}"
        " --subjects {input.subjects} --license {input.license:q} {params.postprocessing}"
        " --out-dir {params.out_dir} > {log} 2>&1"

# The challenge entry: final models trained on every training subject, their ensemble on the test
# images, the run's config and a manifest of versions, seed and checksums.


rule package_submission:
    input:
        models=expand(f"{R}/models/{{model}}/fold_all/model.pt", model=MODELS),
        predictions=lambda wc: expand(
            f"{SUBMISSION}/predictions/ensemble/{{subject}}_seg.nii.gz", subject=subject_ids("test")
        ),
    output:
        f"{SUBMISSION}/manifest.json",
    log:
        "logs/package_submission.log",
    benchmark:
        f"{R}/benchmarks/package_submission/package_submission.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        models=lambda wc, input: named_paths(MODELS, input.models),
        config=json.dumps(config, sort_keys=True),
        seed=config["seed"],
    shell:
        "patchwork package --model {params.models} --config-json {params.config:q}"
        " --seed {params.seed} --out-dir $(dirname {output}) > {log} 2>&1"

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
    params:
        models=" ".join(f"{m}={R}/models/{m}/fold_all/model.pt" for m in MODELS),
        config=json.dumps(config),
        seed=config["seed"],
        out_dir=lambda wc, output: os.path.dirname(output[0]),
    log:
        "logs/package_submission.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    conda:
        ENV
    shell:
        "patchwork --log {log} package --model {params.models} --config-json {params.config:q}"
        " --seed {params.seed} --out-dir {params.out_dir}"

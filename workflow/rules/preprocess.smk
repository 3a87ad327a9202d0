# Preprocessing, one job per subject: resampling, normalisation, crop; the json records how to map
# a prediction back to the original grid, and is written last.


rule preprocess:
    input:
        subjects=f"{R}/subjects.tsv",
        fingerprint=f"{R}/fingerprint.json",
    output:
        f"{R}/preprocessed/{{subject}}.json",
    params:
        out_dir=lambda wc, output: os.path.dirname(output[0]),
        spacing=f"--target-spacing {' '.join(map(str, target_spacing()))}" if target_spacing() else "",
        normalization=config["preprocess"]["normalization"],
        crop="" if config["preprocess"]["crop_nonzero"] else "--no-crop",
    log:
        "logs/preprocess/{subject}.log",
    benchmark:
        f"{R}/benchmarks/preprocess/{{subject}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=15,
    conda:
        ENV
    shell:
        "patchwork --log {log} preprocess --subjects {input.subjects} --subject {wildcards.subject}"
        " --fingerprint {input.fingerprint} --out-dir {params.out_dir} {params.spacing}"
        " --normalization {params.normalization} {params.crop}"

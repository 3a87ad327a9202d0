# Preprocessing, one job per subject, into its own folder: resampling, normalisation, crop. The folder
# holds image_0000.nii.gz ..., seg.nii.gz (training subjects) and record.json (how to map a prediction
# back to the original grid, written last).


rule preprocess:
    input:
        subjects=f"{R}/subjects.tsv",
        fingerprint=f"{R}/fingerprint.json",
    output:
        directory(f"{PREPROCESSED}/{{subject}}"),
    log:
        "logs/preprocess/{subject}.log",
    benchmark:
        f"{R}/benchmarks/preprocess/{{subject}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=15,
    params:
        settings=json.dumps(config["preprocess"], sort_keys=True),
    shell:
        "patchwork preprocess --subjects {input.subjects} --subject {wildcards.subject}"
        " --fingerprint {input.fingerprint} --out-dir {output} --settings {params.settings:q} > {log} 2>&1"

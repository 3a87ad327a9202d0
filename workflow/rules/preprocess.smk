# Preprocessing, one job per subject, into its own folder: resampling, normalisation, crop. The folder
# holds image_0000.nii.gz ..., seg.nii.gz and, for training subjects, image.npy and seg.npy (the same
# arrays uncompressed: training memory-maps them), and record.json (how to map a prediction back to the
# original grid, written last).


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
        mem_mb=lambda wc, attempt: attempt * resources.per_subject_mem_mb(cohort(), "preprocess"),
        runtime=lambda wc, attempt: attempt * resources.per_subject_minutes(cohort(), "preprocess", 1),
    params:
        settings=json.dumps(config["preprocess"], sort_keys=True),
    shell:
        "patchwork preprocess --subjects {input.subjects} --subject {wildcards.subject}"
        " --fingerprint {input.fingerprint} --out-dir {output} --settings {params.settings:q} > {log} 2>&1"


# Every subject of a role preprocessed: training and prediction wait for the cohort through this one flag
# instead of an edge to every subject's folder each, so the DAG grows with the subjects, not with subjects
# x jobs (and no job's command line lists thousands of folders). Run by Snakemake itself (no command).
rule preprocessed_cohort:
    input:
        lambda wc: expand(f"{PREPROCESSED}/{{s}}", s=subject_ids(wc.role)),
    output:
        touch(f"{R}/stamps/preprocessed_{{role}}.done"),
    wildcard_constraints:
        role="train|test",

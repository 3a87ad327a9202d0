# Evaluation of every model and the ensemble against the reference, per subject, then the cohort:
# metrics tables, the per-model summary and the HTML reports. The learning curves cover the
# cross-validation folds, and the final all-data models when the submission builds them.

SURFACE_TOLERANCE_MM = config["evaluate"]["surface_tolerance_mm"]


rule evaluate:
    input:
        unpack(subject_files),
        segs=lambda wc: [f"{PREDICTIONS}/{name}/{wc.subject}_seg.nii.gz" for name in evaluated_models()],
        stds=lambda wc: [f"{PREDICTIONS}/{name}/{wc.subject}_std.nii.gz" for name in STD_MODELS],
        fingerprint=f"{R}/fingerprint.json",
    output:
        tsv=f"{R}/metrics/{{subject}}.tsv",
        html=report(
            f"{R}/reports/{{subject}}.html",
            caption="../report/subject.rst",
            category="Subjects",
            labels={"subject": "{subject}"},
        ),
    log:
        "logs/evaluate/{subject}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/{{subject}}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    params:
        segs=lambda wc, input: named_paths(evaluated_models(), input.segs),
        stds=lambda wc, input: f"--std {named_paths(STD_MODELS, input.stds)}" if STD_MODELS else "",
        tolerance=SURFACE_TOLERANCE_MM,
    shell:
        "patchwork evaluate --subject {wildcards.subject} --image {input.image:q}"
        " --reference {input.reference:q} --fingerprint {input.fingerprint} --seg {params.segs}"
        " {params.stds} --surface-tolerance {params.tolerance}"
        " --out-tsv {output.tsv} --out-html {output.html} > {log} 2>&1"


rule summarise:
    input:
        lambda wc: expand(f"{R}/metrics/{{subject}}.tsv", subject=subject_ids("train")),
    output:
        metrics=report(f"{R}/metrics.tsv", caption="../report/metrics.rst", category="Summary"),
        summary=report(f"{R}/summary.tsv", caption="../report/summary.rst", category="Summary"),
    log:
        "logs/summarise.log",
    benchmark:
        f"{R}/benchmarks/summarise/summarise.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "patchwork summarise --metrics {input} --out-metrics {output.metrics}"
        " --out-summary {output.summary} > {log} 2>&1"


rule report:
    input:
        metrics=f"{R}/metrics.tsv",
        summary=f"{R}/summary.tsv",
        subject_reports=lambda wc: expand(f"{R}/reports/{{subject}}.html", subject=subject_ids("train")),
        train_logs=lambda wc: expand(
            f"{R}/models/{{model}}/fold_{{fold}}/train_log.tsv",
            model=MODELS,
            fold=[
                *range(inputs.n_folds(splits_json())),
                *(["all"] if config["submission"]["enabled"] else []),
            ],
        ),
    output:
        html=report(f"{R}/report.html", caption="../report/report.rst", category="Summary"),
        metrics_png=report(f"{R}/plots/metrics.png", caption="../report/metrics_plot.rst", category="Summary"),
        curves_png=report(
            f"{R}/plots/learning_curves.png", caption="../report/learning_curves.rst", category="Training"
        ),
    log:
        "logs/report.log",
    benchmark:
        f"{R}/benchmarks/report/report.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        tolerance=SURFACE_TOLERANCE_MM,
    shell:
        "patchwork report --metrics {input.metrics} --summary {input.summary}"
        " --subject-reports {input.subject_reports} --train-logs {input.train_logs}"
        " --surface-tolerance {params.tolerance} --out-html {output.html}"
        " --out-metrics-png {output.metrics_png} --out-curves-png {output.curves_png} > {log} 2>&1"

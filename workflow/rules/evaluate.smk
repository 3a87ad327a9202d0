# Evaluation of every model and the ensemble against the reference, per subject, then the cohort:
# metrics tables, the per-model summary and the HTML reports. The learning curves cover the
# cross-validation folds, and the final all-data models when the submission builds them.

SURFACE_TOLERANCE_MM = config["evaluate"]["surface_tolerance_mm"]


rule evaluate:
    input:
        unpack(evaluate_segs),
        fingerprint=f"{R}/fingerprint.json",
        stds=lambda wc: [f"{PREDICTIONS}/{m}/{wc.subject}_std.nii.gz" for m in UNCERTAINTY_MODELS],
    output:
        tsv=f"{R}/metrics/{{subject}}.tsv",
        html=report(
            f"{R}/reports/{{subject}}.html",
            caption="../report/subject.rst",
            category="Subjects",
            labels={"subject": "{subject}"},
        ),
    params:
        image=lambda wc: subject_row(wc.subject).images[0],
        reference=lambda wc: subject_row(wc.subject).label,
        segs=lambda wc, input: " ".join(f"{name}={input[name]}" for name in evaluated_models()),
        stds=lambda wc, input: " ".join(
            ["--std", *(f"{m}={p}" for m, p in zip(UNCERTAINTY_MODELS, input.stds))] if input.stds else []
        ),
        tolerance=SURFACE_TOLERANCE_MM,
    log:
        "logs/evaluate/{subject}.log",
    threads: 1
    resources:
        mem_mb=4000,
        runtime=10,
    conda:
        ENV
    shell:
        "patchwork --log {log} evaluate --subject {wildcards.subject} --image {params.image:q}"
        " --reference {params.reference:q} --fingerprint {input.fingerprint} --seg {params.segs}"
        " {params.stds} --surface-tolerance {params.tolerance}"
        " --out-tsv {output.tsv} --out-html {output.html}"


rule summarise:
    input:
        lambda wc: expand(f"{R}/metrics/{{subject}}.tsv", subject=subject_ids("train")),
    output:
        metrics=report(f"{R}/metrics.tsv", caption="../report/metrics.rst", category="Summary"),
        summary=report(f"{R}/summary.tsv", caption="../report/summary.rst", category="Summary"),
    log:
        "logs/summarise.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    shell:
        "patchwork --log {log} summarise --metrics {input} --out-metrics {output.metrics}"
        " --out-summary {output.summary}"


rule report:
    input:
        metrics=f"{R}/metrics.tsv",
        summary=f"{R}/summary.tsv",
        subject_reports=lambda wc: expand(f"{R}/reports/{{subject}}.html", subject=subject_ids("train")),
        train_logs=lambda wc: expand(
            f"{R}/models/{{model}}/fold_{{fold}}/train_log.tsv",
            model=MODELS,
            fold=[*range(n_folds()), *(["all"] if config["submission"]["enabled"] else [])],
        ),
    output:
        html=report(f"{R}/report.html", caption="../report/report.rst", category="Summary"),
        metrics_png=report(
            f"{R}/plots/metrics.png", caption="../report/metrics_plot.rst", category="Summary"
        ),
        curves_png=report(
            f"{R}/plots/learning_curves.png", caption="../report/learning_curves.rst", category="Training"
        ),
    params:
        tolerance=SURFACE_TOLERANCE_MM,
    log:
        "logs/report.log",
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        ENV
    shell:
        "patchwork --log {log} report --metrics {input.metrics} --summary {input.summary}"
        " --subject-reports {input.subject_reports} --train-logs {input.train_logs}"
        " --surface-tolerance {params.tolerance} --out-html {output.html}"
        " --out-metrics-png {output.metrics_png} --out-curves-png {output.curves_png}"

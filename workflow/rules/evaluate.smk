# Evaluation of every model and the ensemble against the reference, one job per batch (fold_K: the
# validation subjects of fold K) in one process: the batch's metrics table and a report page per subject.
# Then the cohort: metrics tables, the per-model summary and the HTML reports. The learning curves cover
# the cross-validation folds, and the final all-data models when the entry is built.

SURFACE_TOLERANCE_MM = config["evaluate"]["surface_tolerance_mm"]


rule evaluate:
    input:
        subjects=f"{R}/subjects.tsv",
        splits=f"{R}/splits.json",
        fingerprint=f"{R}/fingerprint.json",
        segs=lambda wc: [f"{PREDICTIONS}/{name}/fold_{wc.fold}" for name in evaluated_models()],
    output:
        tsv=f"{R}/metrics/fold_{{fold}}.tsv",
        html=report(
            directory(f"{R}/reports/fold_{{fold}}"),
            patterns=["{subject}.html"],
            caption="../report/subject.rst",
            category="Subjects",
            labels={"subject": "{subject}"},
        ),
    log:
        "logs/evaluate/fold_{fold}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/fold_{{fold}}.tsv"
    wildcard_constraints:
        fold=r"\d+",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=lambda wc, attempt: attempt * resources.per_subject_mem_mb(cohort(), "evaluate"),
        runtime=lambda wc, attempt: attempt
        * resources.per_subject_minutes(cohort(), "evaluate", batch_size(wc) * len(evaluated_models())),
    params:
        segs=lambda wc, input: named_paths(evaluated_models(), input.segs),
        stds=lambda wc: (
            f"--std {named_paths(STD_MODELS, [f'{PREDICTIONS}/{m}/fold_{wc.fold}' for m in STD_MODELS])}"
            if STD_MODELS
            else ""
        ),
        tolerance=SURFACE_TOLERANCE_MM,
    shell:
        "patchwork evaluate --subjects {input.subjects} --splits {input.splits} --batch fold_{wildcards.fold}"
        " --fingerprint {input.fingerprint} --seg {params.segs} {params.stds}"
        " --surface-tolerance {params.tolerance} --out-tsv {output.tsv} --out-html-dir {output.html}"
        " > {log} 2>&1"


rule summarise:
    input:
        lambda wc: expand(f"{R}/metrics/fold_{{fold}}.tsv", fold=folds()),
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
        mem_mb=lambda wc, attempt: attempt * resources.table_mem_mb(len(subject_ids("train")), len(MODELS)),
        runtime=lambda wc, attempt: attempt * resources.minutes(len(subject_ids("train")) * 0.05),
    shell:
        "patchwork summarise --metrics {input} --out-metrics {output.metrics}"
        " --out-summary {output.summary} > {log} 2>&1"


rule report:
    input:
        metrics=f"{R}/metrics.tsv",
        summary=f"{R}/summary.tsv",
        plans=f"{R}/plans.json",
        subject_reports=lambda wc: expand(f"{R}/reports/fold_{{fold}}", fold=folds()),
        train_logs=lambda wc: expand(
            f"{R}/models/{{model}}/fold_{{fold}}/train_log.tsv",
            model=MODELS,
            fold=[*folds(), *(["all"] if config["entry"]["enabled"] else [])],
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
        mem_mb=lambda wc, attempt: attempt * resources.table_mem_mb(len(subject_ids("train")), len(MODELS)),
        runtime=lambda wc, attempt: attempt * resources.minutes(len(subject_ids("train")) * 0.1),
    params:
        tolerance=SURFACE_TOLERANCE_MM,
    shell:
        "patchwork report --metrics {input.metrics} --summary {input.summary}"
        " --subject-reports {input.subject_reports} --train-logs {input.train_logs}"
        " --plans {input.plans} --surface-tolerance {params.tolerance} --out-html {output.html}"
        " --out-metrics-png {output.metrics_png} --out-curves-png {output.curves_png} > {log} 2>&1"

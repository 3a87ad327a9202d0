# Evaluation of every model and the ensemble against the reference, per subject, then the cohort.


rule evaluate:
    input:
        unpack(evaluate_segs),
        fingerprint=f"{R}/fingerprint.json",
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
        segs=lambda wc, input: " ".join(f"{name}={input[name]}" for name in [*MODELS, "ensemble"]),
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
        " --out-tsv {output.tsv} --out-html {output.html}"


rule summarise:
    input:
        lambda wc: expand(f"{R}/metrics/{{subject}}.tsv", subject=subject_ids("train")),
    output:
        metrics=f"{R}/metrics.tsv",
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

# Prediction in batches, one job per (model, batch), every subject written in its ORIGINAL image grid:
# batch fold_K = the validation subjects of fold K, predicted out of fold by that fold's model
# (predictions/{model}/fold_K/); the test batch = every test subject, predicted by the final all-data
# model (entry/predictions/{model}/). A job loads its model once and writes {subject}_prob.nii.gz,
# {subject}_seg.nii.gz and, for model types that give one (registry: outputs hold "std"), the per-voxel
# spread {subject}_std.nii.gz. Its params are how a trained model is applied (threshold, `apply`, seed):
# changing them re-predicts, never retrains.


rule predict:
    input:
        model=f"{R}/models/{{model}}/fold_{{fold}}/model.pt",
        subjects=f"{R}/subjects.tsv",
        splits=f"{R}/splits.json",
        preprocessed=f"{R}/stamps/preprocessed_train.done",
    output:
        directory(f"{PREDICTIONS}/{{model}}/fold_{{fold}}"),
    log:
        "logs/predict/{model}/fold_{fold}.log",
    benchmark:
        f"{R}/benchmarks/predict/{{model}}/fold_{{fold}}.tsv"
    wildcard_constraints:
        fold=r"\d+",
    conda:
        ENV
    threads: config["threads"]["predict"]
    resources:
        mem_mb=lambda wc, attempt: attempt * resources.per_subject_mem_mb(cohort(), "predict"),
        runtime=lambda wc, attempt: attempt
        * resources.per_subject_minutes(cohort(), "predict", batch_size(wc), resources.GPU_SPEEDUP**GPUS),
        gpu=GPUS,
        device=DEVICE,
    params:
        batch=lambda wc: f"fold_{wc.fold}",
        preprocessed=PREPROCESSED,
        apply=lambda wc: json.dumps(MODELS[wc.model].apply.to_dict(), sort_keys=True),
        threshold=lambda wc: MODELS[wc.model].threshold,
        seed=lambda wc: model_seed(wc.model),
        std=lambda wc: "--std" if wc.model in STD_MODELS else "",
    shell:
        "patchwork predict --model {input.model} --preprocessed {params.preprocessed}"
        " --subjects {input.subjects} --splits {input.splits} --batch {params.batch}"
        " --apply {params.apply:q} --threshold {params.threshold} --out-dir {output} {params.std}"
        " --seed {params.seed} --threads {threads} {resources.device} > {log} 2>&1"


use rule predict as predict_test with:
    input:
        model=f"{R}/models/{{model}}/fold_all/model.pt",
        subjects=f"{R}/subjects.tsv",
        splits=f"{R}/splits.json",
        preprocessed=f"{R}/stamps/preprocessed_test.done",
    output:
        directory(f"{ENTRY}/predictions/{{model}}"),
    log:
        "logs/predict_test/{model}.log",
    benchmark:
        f"{R}/benchmarks/predict_test/{{model}}.tsv"
    params:
        batch="test",
        preprocessed=PREPROCESSED,
        apply=lambda wc: json.dumps(MODELS[wc.model].apply.to_dict(), sort_keys=True),
        threshold=lambda wc: MODELS[wc.model].threshold,
        seed=lambda wc: model_seed(wc.model),
        std=lambda wc: "--std" if wc.model in STD_MODELS else "",

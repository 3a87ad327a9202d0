"""One function per workflow stage: the Python API that the command line, the benchmarks and users share.

Each function takes paths and settings objects (:mod:`patchwork.config`, :mod:`patchwork.models`), does one
stage and writes its files; ``patchwork <command>`` only parses arguments and calls one of them.

* :mod:`.data`: :func:`~.data.demo`, :func:`~.data.ingest`, :func:`~.data.preprocess`,
  :func:`~.data.splits` (and :func:`~.data.fold_subjects`)
* :mod:`.planning`: :func:`~.planning.plan`
* :mod:`.models`: :func:`~.models.train`, :func:`~.models.predict_batch`
* :mod:`.ensemble`: :func:`~.ensemble.ensemble_batch`, :func:`~.ensemble.tune`,
  :func:`~.ensemble.tune_postprocessing`, :func:`~.ensemble.postprocess_batch`
* :mod:`.evaluation`: :func:`~.evaluation.evaluate_batch`, :func:`~.evaluation.summarise`,
  :func:`~.evaluation.report`
* :mod:`.entry`: :func:`~.entry.package`, :func:`~.entry.infer`, :func:`~.entry.verify`

The workflow works in batches (a fold's validation subjects, the test subjects); :func:`~.models.predict`,
:func:`~.ensemble.ensemble` and :func:`~.evaluation.evaluate` are the same for one subject, as library API.

Importing these modules imports no torch (the heavy modules load inside the functions).
"""

"""The challenge entry: a folder that holds everything needed to segment new scans, and proves what it is.

Layout of ``results/entry/`` (written by ``patchwork package``, the workflow's last step)::

    entry.json              what `patchwork infer` needs: channels, label names, the input checks, the
                            preprocessing (target spacing resolved), each model's type, application
                            settings, threshold and seed, the stored example case
    ensemble.json           the ensemble settings the workflow used for the test images (the tuned ones
                            when ensemble.tune is on), and whether they were tuned
    ensemble_params.json    tune-ensemble's full result, when tuning was on
    fingerprint.json        the training cohort's fingerprint (spacings, shapes, labels)
    config.json             the run's whole config
    requirements.lock       the resolved versions of the package's dependencies (name==version)
    LICENSE                 the licence of the code and models
    models/{name}/          model.pt and spec.json of each final (all-data) model
    example/                the input images of one test case, which `patchwork verify` re-predicts
    predictions/            the workflow's test predictions ({model}/ and ensemble/{case}_seg.nii.gz)
    manifest.json           software versions, the seed, and the SHA-256 and size of every other file

Modules: :mod:`~patchwork.entry.layout` (the file names; reading ``entry.json``),
:mod:`~patchwork.entry.package` (writing an entry), :mod:`~patchwork.entry.cases` (a folder of input
cases, checked as ingest checks a cohort), :mod:`~patchwork.entry.infer` (prediction),
:mod:`~patchwork.entry.resources` (time and peak memory per case), :mod:`~patchwork.entry.verify`.
"""

"""Self-configuration (nnU-Net's idea): what is common to planning every model type's sizes.

Nobody hand-tunes the target spacing, patch size, batch size, depth or DNP scheme: they follow from the
cohort (``fingerprint.json``, written by ingest) and the memory at hand. This package holds what every
type's planner shares: the cohort and nnU-Net's target spacing (:mod:`.spacing`), the memory of a training
step and nnU-Net's batch rule (:mod:`.memory`). Each type plans itself, in its own folder (the registry
row's ``plan``); :mod:`patchwork.models.plans` asks every registered type for its plan.

The fingerprint has no intensity statistics yet. Sizes do not need them; nnU-Net uses them to choose the
normalisation (for CT: clip to the 0.5-99.5 percentiles of the foreground intensities, then z-score with
their mean and standard deviation). Adding per-channel foreground percentiles, mean and standard deviation
to the fingerprint would let the plan choose ``preprocess.normalization`` the same way.
"""

"""Training infrastructure shared by every model type: seeded random streams, lazily read training cases and
bounded caches (:mod:`.cases`), model and checkpoint files,
the training log and its learning curve, and the soft Dice both losses build on.

Neither model package (:mod:`patchwork.models.unet`, :mod:`patchwork.models.dnp`) imports the other; both
import this one and :mod:`patchwork.networks`.
"""

"""Ensembling (nnU-Net's ``ensembling``): several models' probabilities combined into one segmentation
(:mod:`.combine`), and the ensemble's weights, threshold and minimum component size chosen on out-of-fold
predictions (:mod:`.tuning`)."""

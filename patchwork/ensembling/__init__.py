"""Ensembling (nnU-Net's ``ensembling``): several models' probabilities combined into one segmentation
(:mod:`.combine`), and the ensemble's weights, threshold, minimum component size and peak chosen on
out-of-fold predictions (:mod:`.tuning`)."""

"""A third model type, for the tests only: the whole type is this folder and one registry row.

It thresholds the first image channel at the midpoint of the training subjects' mean foreground and
background intensities, smoothed by a logistic of slope ``sharpness`` (no torch network, so it trains in
an instant). ``tests/test_model_types.py`` adds its row and runs it through the tiny workflow.
"""

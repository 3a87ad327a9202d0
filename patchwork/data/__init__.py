"""Cohort data: the demo dataset, ingest and validation, preprocessing, cross-validation splits."""

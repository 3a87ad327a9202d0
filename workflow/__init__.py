"""Python helpers of the Snakemake workflow (input functions; see :mod:`workflow.inputs`)."""

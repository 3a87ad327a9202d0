"""patchwork: Deep Neural Patchworks and a U-Net baseline for 3D medical image segmentation.

The package is usable on its own (``pip install patchwork``); the Snakemake workflow in the
repository root only calls its command line, ``patchwork <subcommand>``.
"""

from patchwork.errors import PatchworkError

__version__ = "0.1.0"
__all__ = ["PatchworkError", "__version__"]

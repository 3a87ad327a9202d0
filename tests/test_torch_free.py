"""What the workflow and a light install import stays free of torch: parsing the Snakefile, checking a
config, reading the cohort table and planning load only these modules, so a cluster's login node running
Snakemake needs no deep-learning stack. Each check runs in a fresh interpreter (``sys.modules`` is clean)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

CHECKS = {
    "registry and config, every model type's spec parsed": (
        "import patchwork.config, patchwork.models\n"
        "for t in patchwork.models.MODEL_TYPES:\n"
        "    patchwork.models.parse_spec({'name': 'm', 'type': t}, 'test')\n"
    ),
    "DNP settings, application and the lazy package": (
        "from patchwork.models.dnp.apply_settings import DNPApply\n"
        "from patchwork.models.dnp.settings import DNPParams\n"
        "DNPParams.from_dict({'crop': {'depth': 2}, 'train': {'augment': {'dphi': 0.1}}})\n"
        "DNPApply.from_dict({'lazyEval': {'fraction': 0.5}, 'out_typ': 'mask:0.4'})\n"
        "import patchwork.models.dnp, patchwork.models.unet, patchwork.models.unet.settings\n"
    ),
    "stages (the heavy modules load inside each function)": (
        "import patchwork.stages.data, patchwork.stages.models, patchwork.stages.ensemble\n"
        "import patchwork.stages.evaluation\n"
    ),
    "planning": "import patchwork.models.plans\n",
    "the Snakefile's input functions": "import workflow.inputs\n",
}


@pytest.mark.parametrize("code", CHECKS.values(), ids=CHECKS.keys())
def test_imports_no_torch(code: str, repo: Path) -> None:
    check = code + "import sys\nassert 'torch' not in sys.modules, 'torch was imported'\n"
    run = subprocess.run([sys.executable, "-c", check], cwd=repo, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr

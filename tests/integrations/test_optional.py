"""The integrations stay optional: nothing in graphscope loads a trainer or tracker package
until its integration or export is used."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OPTIONAL = ("lightning", "pytorch_lightning", "transformers", "accelerate", "tensorboard", "wandb")


def test_core_cli_and_exporters_load_no_optional_package():
    """`import graphscope`, watch, the CLI's help and the exporters' modules load none of the
    optional packages (they are imported when an export or integration runs)."""
    code = (
        "import sys, graphscope, graphscope.cli, graphscope.integrations\n"
        "import graphscope.export.tensorboard, graphscope.export.wandb, graphscope.autograd.watch\n"
        "try:\n    graphscope.cli.main(['export', '--help'])\nexcept SystemExit:\n    pass\n"
        f"bad = [m for m in {OPTIONAL!r} if m in sys.modules]\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr

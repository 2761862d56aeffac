"""Layering: `import graphscope` stays light, and the import-linter contracts hold."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_graphscope_loads_neither_textual_nor_graphviz():
    """Scripts that only capture never pay for the TUI or the renderer."""
    code = (
        "import sys, graphscope; graphscope.capture; "
        "bad = [m for m in ('textual', 'graphviz', 'networkx') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_saved_capture_loads_and_diagnoses_without_torch(tmp_path):
    """A saved capture is loaded and diagnosed with torch blocked, giving the same findings."""
    from graphscope import diagnose, load
    from tests.export import graphs

    path = tmp_path / "nan.json"
    graphs.nan_origin().save(path)
    expected = [(f.kind, f.node) for f in diagnose(load(path))]
    assert expected  # the NaN graph has findings to compare
    code = (
        "import sys; sys.modules['torch'] = None; "
        "import graphscope, graphscope.formatting; "
        f"g = graphscope.load({str(path)!r}); "
        "print([(f.kind, f.node) for f in graphscope.diagnose(g)])"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(expected)


def test_import_linter_contracts_hold():
    """The layers and forbidden-import contracts in pyproject.toml are kept."""
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is a test dependency: pip install -e '.[test]'"
    result = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

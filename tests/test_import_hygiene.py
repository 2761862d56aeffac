"""Layering: every entry point (`import graphscope`, the CLI, DOT export) stays light, and the
import-linter contracts hold."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


# (what runs, the top-level packages it must not load)
LIGHT = {
    "import": ("import graphscope", ("torch", "textual", "graphviz", "networkx")),
    # A script that only captures never pays for the TUI or the renderer.
    "capture": ("import graphscope; graphscope.capture", ("textual", "graphviz", "networkx")),
    # textual and torch come with the command that needs them, not with the CLI.
    "cli help": ("import graphscope.cli; graphscope.cli.main(['--help'])", ("textual", "torch")),
    "cli render": (
        "import graphscope.cli; graphscope.cli.main(['render', CAPTURE, '-o', OUT + '.svg'])",
        ("textual", "torch"),
    ),
    # Drawing a saved capture needs neither torch nor the graphviz package.
    "dot export": (
        "import graphscope, graphscope.export, graphscope.export.render, graphscope.drawing; "
        "graphscope.export.to_dot(graphscope.load(CAPTURE))",
        ("graphviz", "textual", "torch"),
    ),
}


@pytest.mark.parametrize("case", sorted(LIGHT))
def test_import_stays_light(case, tmp_path):
    """Each entry point loads only what it needs: `import graphscope` no torch, textual, graphviz
    or networkx; the CLI's --help and render no textual or torch; DOT export no torch or graphviz."""
    from tests import graphs

    statement, forbidden = LIGHT[case]
    capture = graphs.nan_origin().save(tmp_path / "step.json")
    code = (
        f"import sys\nCAPTURE, OUT = {str(capture)!r}, {str(tmp_path / 'out')!r}\n"
        f"try:\n    {statement}\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        f"bad = [m for m in {forbidden!r} if m in sys.modules]\n"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_saved_capture_loads_and_diagnoses_without_torch(tmp_path):
    """A saved capture is loaded and diagnosed with torch blocked, giving the same findings."""
    from graphscope import diagnose, load
    from tests import graphs

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

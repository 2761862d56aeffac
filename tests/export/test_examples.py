"""The scripts in examples/ run on CPU in seconds and write the pictures they promise."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PICTURES = {
    "linear_regression.py": ["linear_regression.svg"],
    "vanishing_sigmoid_vs_relu.py": ["sigmoid_mlp.svg", "relu_mlp.svg"],
    "lstm.py": ["lstm.svg", "lstm_gates.svg"],
    "attention.py": ["attention.svg"],
    "cnn.py": ["cnn.svg"],
    "nan_hunt.py": ["nan_hunt.svg"],
    "unused_layer.py": ["unused_layer.svg"],
}


def test_every_example_is_tested() -> None:
    """Each script in examples/ has an entry here, so none goes untested."""
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(PICTURES)


@pytest.mark.parametrize("script", sorted(PICTURES))
def test_example_runs_and_writes_its_picture(script: str, tmp_path: Path) -> None:
    """The example exits 0 within a minute and writes valid SVG for each picture it names."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    for name in PICTURES[script]:
        svg = tmp_path / name
        assert svg.exists(), f"{script} did not write {name}"
        ET.parse(svg)
        assert f"wrote {tmp_path}" in proc.stdout


def test_nan_hunt_names_the_origin(tmp_path: Path) -> None:
    """The NaN example finds sqrt as the origin and marks it in the picture."""
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "nan_hunt.py"), str(tmp_path)],
        capture_output=True, text=True, timeout=120, check=True,
    )
    assert "NaN origin: node" in proc.stdout and "SqrtBackward0" in proc.stdout
    assert "NaN/Inf starts here" in (tmp_path / "nan_hunt.svg").read_text()


@pytest.mark.parametrize("script", sorted(PICTURES))
def test_example_builds_its_model_in_the_file(script: str) -> None:
    """A learner reads the example to see the model: it is plain PyTorch in the file, not a
    graphscope.demos import."""
    text = (EXAMPLES / script).read_text(encoding="utf-8")
    assert "graphscope.demos" not in text and "DEMOS" not in text
    assert "nn." in text

"""The command line: exit codes and one-line messages, demo listing, render, view."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from graphscope import cli
from graphscope.errors import EngineError
from tests.tui.graphs import sigmoid_mlp


@pytest.fixture
def capture_file(tmp_path):
    return sigmoid_mlp().save(tmp_path / "step.json")


@pytest.fixture
def fake_demos(monkeypatch):
    """Two demos whose build() returns a hand-made graph (no torch)."""
    built = []

    def demo(name, description):
        def build():
            built.append(name)
            return sigmoid_mlp()
        return types.SimpleNamespace(name=name, description=description, lesson="look", build=build)

    demos = {"sigmoid_mlp": demo("sigmoid_mlp", "fading sigmoids"), "tiny": demo("tiny", "small")}
    monkeypatch.setitem(sys.modules, "graphscope.demos", types.SimpleNamespace(DEMOS=demos))
    return built


@pytest.fixture
def opened(monkeypatch):
    """Record what the CLI would open in the inspector instead of running it."""
    seen = []
    monkeypatch.setattr(cli, "_inspect", lambda graph, source: seen.append((len(graph), source)))
    return seen


@pytest.mark.parametrize("command", ["view", "render"])
def test_missing_file_is_one_line_and_exit_2(command, tmp_path, capsys):
    """A capture file that does not exist: exit 2, a one-line error, no traceback."""
    assert cli.main([command, str(tmp_path / "nope.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("graphscope: error: no such capture file")
    assert "Traceback" not in "".join(err)


@pytest.mark.parametrize("text, words", [
    ('{"format": "graphscope.capture", "version": 1, "nodes": [', "truncated"),
    ('{"nodes": []}', "not a graphscope capture"),
    ("\x89PNG\r\n", "not valid JSON"),
])
def test_corrupt_or_foreign_file_exits_2(text, words, tmp_path, capsys):
    """Truncated, foreign and binary files each get their own clear one-line message."""
    path = tmp_path / "bad.json"
    path.write_text(text)
    assert cli.main(["view", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1


def test_demo_list_names_every_demo(fake_demos, capsys):
    """demo --list prints each demo with its description and marks the default."""
    assert cli.main(["demo", "--list"]) == 0
    out = capsys.readouterr().out
    assert "* sigmoid_mlp  fading sigmoids" in out and "tiny" in out and not fake_demos


def test_demo_defaults_to_sigmoid_mlp_and_opens_it(fake_demos, opened):
    """demo with no name builds the sigmoid MLP and opens the inspector on it."""
    assert cli.main(["demo"]) == 0
    assert fake_demos == ["sigmoid_mlp"] and opened == [(22, "sigmoid_mlp")]


def test_unknown_demo_exits_2_listing_names(fake_demos, capsys):
    """An unknown demo name is an error that lists the known ones."""
    assert cli.main(["demo", "nope"]) == 2
    assert "sigmoid_mlp, tiny" in capsys.readouterr().err


def test_view_opens_the_saved_capture(capture_file, opened):
    """view loads the file and opens the inspector titled by its name."""
    assert cli.main(["view", str(capture_file)]) == 0
    assert opened == [(22, "step.json")]


def test_render_writes_the_file_with_progress(capture_file, tmp_path, monkeypatch, capsys):
    """render hands the loaded graph to export.render_graph and reports each step on stderr."""
    def render(graph, path, *, progress=None):
        progress("laying out")
        path.write_text("<svg/>")

    monkeypatch.setattr("graphscope.export.render_graph", render)
    out = tmp_path / "g.svg"
    assert cli.main(["render", str(capture_file), "-o", str(out)]) == 0
    assert out.read_text() == "<svg/>"
    err = capsys.readouterr().err
    assert "loading" in err and "laying out" in err and "done" in err


def test_render_without_engine_exits_3(capture_file, tmp_path, monkeypatch, capsys):
    """A missing Graphviz engine: exit 3 with the engine error's message."""
    def render(graph, path, *, progress=None):
        raise EngineError("no Graphviz engine for svg; pip install graphviz-pure")

    monkeypatch.setattr("graphscope.export.render_graph", render)
    assert cli.main(["render", str(capture_file), "-o", str(tmp_path / "g.svg")]) == 3
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "graphscope: error: no Graphviz engine for svg; pip install graphviz-pure")


def test_render_real_engine_writes_svg(capture_file, tmp_path):
    """python -m graphscope render writes a real SVG with the installed engine."""
    out = tmp_path / "g.svg"
    proc = subprocess.run([sys.executable, "-m", "graphscope", "render", str(capture_file),
                           "-o", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().lstrip().startswith(("<?xml", "<svg"))


def test_cli_does_not_import_textual_or_torch_to_start():
    """The CLI module loads without textual or torch (they come with the command)."""
    code = ("import sys, graphscope.cli; "
            "print(any(m.split('.')[0] in ('textual', 'torch') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False"

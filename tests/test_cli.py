"""The command line: exit codes and one-line messages, demo listing, render, view."""

from __future__ import annotations

import dataclasses
import io
import re
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import pytest
from textual.app import App

from graphscope import cli
from graphscope.errors import EngineError
from graphscope.export import RenderOptions
from tests.graphs import sigmoid_mlp


@pytest.fixture(autouse=True)
def logs_in_tmp(monkeypatch, tmp_path):
    """Crash logs go to the test's own folder, not the shared temporary one."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))


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
def terminal(monkeypatch):
    """Pretend the command runs in a terminal (pytest's stdin is not one)."""
    monkeypatch.setattr(cli, "_terminal_problem", lambda: None, raising=False)


@pytest.fixture
def opened(monkeypatch, terminal):
    """Record what the CLI would open in the inspector instead of running it."""
    seen = []
    monkeypatch.setattr(cli, "_inspect", lambda graph, source, args: seen.append((len(graph), source)))
    return seen


@pytest.fixture
def headless(monkeypatch, terminal):
    """Run the real inspector without a terminal: App.run(headless=True)."""
    from graphscope.tui.app import InspectorApp

    monkeypatch.setattr(InspectorApp, "run", lambda self, **kw: App.run(self, headless=True))


@pytest.fixture
def crashing(monkeypatch, headless):
    """Make the inspector's main screen raise while it mounts."""
    from graphscope.tui.screens.main import MainScreen

    def boom(self):
        raise RuntimeError("boom in the widget")

    monkeypatch.setattr(MainScreen, "on_mount", boom)


@pytest.fixture
def renders(monkeypatch):
    """Record calls to export.render_graph (which would lay the graph out)."""
    calls = []

    def render(graph, path, *, progress=None, options=None):
        calls.append(path)
        path.write_text("<svg/>")

    monkeypatch.setattr("graphscope.export.render_graph", render)
    return calls


def _one_line(err: str) -> str:
    """The single line a failing command writes on stderr (its last, checked to be alone)."""
    lines = [line for line in err.strip().splitlines() if not line.startswith(("building", "look for", "["))]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("command", ["view", "render"])
def test_missing_file_is_one_line_and_exit_2(command, tmp_path, capsys, terminal):
    """A capture file that does not exist: exit 2, a one-line error, no traceback."""
    assert cli.main([command, str(tmp_path / "nope.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("graphscope: error: no such capture file")
    assert "Traceback" not in "".join(err)


@pytest.mark.parametrize("content, words", [
    (b"", "is empty"),
    (b"  \n", "is empty"),
    (b'{"format": "graphscope.capture", "version": 1, "nodes": [', "truncated"),
    (b'{"nodes": []}', "not a graphscope capture"),
    (b"[]", "not a graphscope capture"),
    (b"\x89PNG\x00\xff\xfe", "binary file, not JSON text"),  # not UTF-8 at all
    ("\x89PNG\r\n".encode(), "not valid JSON"),  # UTF-8, but not JSON
])
def test_corrupt_or_foreign_file_exits_2(content, words, tmp_path, capsys, opened):
    """Empty, truncated, foreign, binary and non-JSON files each get their own clear one-line
    message (no traceback), and the inspector is never opened."""
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    assert cli.main(["view", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("graphscope: error: ") and err.count("\n") == 1
    assert words in err and "Traceback" not in err
    assert opened == []


def test_demo_list_names_every_demo(fake_demos, capsys):
    """demo --list prints each demo with its description and marks the default, only it."""
    assert cli.main(["demo", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:2] == ["* sigmoid_mlp  fading sigmoids", "  tiny         small"]
    assert not fake_demos


def test_demo_defaults_to_sigmoid_mlp_and_opens_it(fake_demos, opened):
    """demo with no name builds the sigmoid MLP and opens the inspector on it."""
    assert cli.main(["demo"]) == 0
    assert fake_demos == ["sigmoid_mlp"] and opened == [(22, "sigmoid_mlp")]


def test_unknown_demo_exits_2_listing_names(fake_demos, capsys, terminal):
    """An unknown demo name is an error that lists the known ones."""
    assert cli.main(["demo", "nope"]) == 2
    assert "sigmoid_mlp, tiny" in capsys.readouterr().err


def test_unknown_demo_without_a_terminal_names_the_demo_not_the_terminal(fake_demos, capsys,
                                                                          monkeypatch):
    """Without a terminal, an unknown name was answered with the no-terminal advice to build
    DEMOS['nope'] (which does not exist): the name is checked first."""
    monkeypatch.setattr(cli, "_terminal_problem", lambda: "stdin")
    assert cli.main(["demo", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no demo named 'nope'" in err and "terminal" not in err
    assert cli.main(["demo", "tiny"]) == 2  # a known one still gets the terminal advice
    err = capsys.readouterr().err
    assert "needs a terminal, but stdin" in err and "DEMOS['tiny']" in err
    assert not fake_demos  # nothing built


def test_view_opens_the_saved_capture(capture_file, opened):
    """view loads the file and opens the inspector titled by its name."""
    assert cli.main(["view", str(capture_file)]) == 0
    assert opened == [(22, str(capture_file))]  # the path: the inspector exports next to it


def test_quick_render_says_one_line(capture_file, tmp_path, monkeypatch, capsys):
    """A quick render hands the graph to export.render_graph and prints only what it wrote."""
    def render(graph, path, *, progress=None, options=None):
        progress("laying out")
        path.write_text("<svg/>")

    monkeypatch.setattr("graphscope.export.render_graph", render)
    out = tmp_path / "g.svg"
    assert cli.main(["render", str(capture_file), "-o", str(out)]) == 0
    assert out.read_text() == "<svg/>"
    assert capsys.readouterr().err.splitlines() == [f"wrote {out} (6 bytes)"]
    assert cli.main(["render", str(capture_file), "-o", str(out), "--quiet"]) == 0
    assert capsys.readouterr().err == ""


def test_slow_render_shows_its_steps(capture_file, tmp_path, monkeypatch, capsys):
    """Once a render runs past the delay, each step is shown (one line each when not a tty)."""
    def render(graph, path, *, progress=None, options=None):
        progress("reducing")
        progress("laying out")
        path.write_text("<svg/>")

    monkeypatch.setattr("graphscope.export.render_graph", render)
    monkeypatch.setattr(cli._Progress.__init__, "__kwdefaults__", {"delay": 0.0, "tick": 0.01})
    assert cli.main(["render", str(capture_file), "-o", str(tmp_path / "g.svg")]) == 0
    steps = [re.sub(r"^\[ *[\d.]+s\] ", "", line) for line in capsys.readouterr().err.splitlines()]
    assert steps[-3:] == ["reducing", "laying out", f"wrote {tmp_path / 'g.svg'} (6 bytes)"]


def test_progress_on_a_terminal_redraws_one_line_and_clears_it():
    """On a tty the step is one line rewritten in place while it runs, and erased at the end."""
    class Tty(io.StringIO):
        def isatty(self):
            return True

    stream = Tty()
    progress = cli._Progress(stream, delay=0.0, tick=0.01)
    progress("laying out 6,000 boxes")
    time.sleep(0.05)  # the ticker redraws it with the seconds so far
    progress.close()
    text = stream.getvalue()
    assert "\n" not in text and text.count("\r\033[Klaying out 6,000 boxes … ") >= 2
    assert text.endswith("\r\033[K")


def test_quick_progress_stays_silent():
    """Steps of a job that ends before the delay print nothing at all."""
    stream = io.StringIO()
    progress = cli._Progress(stream, delay=60.0, tick=0.01)
    progress("loading")
    progress("laying out")
    progress.close()
    assert stream.getvalue() == ""


def test_render_options_reach_the_picture(capture_file, tmp_path, monkeypatch):
    """Each picture option on the command line arrives in the RenderOptions handed to render."""
    seen = []

    def render(graph, path, *, progress=None, options=None):
        seen.append(options)
        path.write_text("<svg/>")

    monkeypatch.setattr("graphscope.export.render_graph", render)
    assert cli.main(["render", str(capture_file), "-o", str(tmp_path / "g.dot"), "--max-nodes",
                     "all", "--depth", "2", "--direction", "LR", "--no-fold", "--no-shapes",
                     "--no-legend", "--engine", "graphviz-pure", "--timeout", "5"]) == 0
    assert seen == [RenderOptions(max_nodes=None, depth=2, rankdir="LR", fold_repeats=False,
                                  show_shapes=False, legend=False, engine="graphviz-pure",
                                  timeout=5.0)]
    assert cli.main(["render", str(capture_file), "-o", str(tmp_path / "g.dot")]) == 0
    assert seen[-1] == RenderOptions()  # no options: the Python API's defaults


def test_every_render_option_has_a_flag():
    """render exposes each RenderOptions field: a field added to the API must get a flag too."""
    parser = cli.build_parser()
    render = next(a for a in parser._subparsers._group_actions[0].choices.values()
                  if a.prog.endswith("render"))
    dests = {action.dest for action in render._actions}
    flags = {"max_nodes": "max_nodes", "depth": "depth", "fold_repeats": "fold",
             "show_shapes": "shapes", "legend": "legend", "rankdir": "direction",
             "engine": "engine", "timeout": "timeout", "thresholds": "threshold"}
    assert {f.name for f in dataclasses.fields(RenderOptions)} == set(flags)
    assert set(flags.values()) <= dests


@pytest.mark.parametrize("option", [["--max-nodes", "1"], ["--max-nodes", "many"],
                                    ["--depth", "-1"], ["--timeout", "0"],
                                    ["--direction", "up"]])
def test_bad_render_option_is_a_usage_error(option, capture_file, renders, capsys):
    """A picture option out of range: exit 2 with argparse's message naming the option."""
    with pytest.raises(SystemExit) as exit_:
        cli.main(["render", str(capture_file), *option])
    assert exit_.value.code == 2
    assert f"argument {option[0]}" in capsys.readouterr().err
    assert renders == []


def test_version_prints_the_package_version(capsys):
    """graphscope --version prints the version and exits 0."""
    from graphscope import __version__

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"graphscope {__version__}\n"


@pytest.mark.parametrize("how", [["-m", "graphscope"], ["-c", "from graphscope.cli import main; "
                                                               "raise SystemExit(main([]))"]])
def test_bare_command_prints_the_help(how):
    """graphscope with no command (and python -m graphscope) prints the full help, exit 0."""
    proc = subprocess.run([sys.executable, *how], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: graphscope") and "render" in proc.stdout
    assert "draw a saved capture" in proc.stdout and proc.stderr == ""


def test_demo_list_does_not_import_torch():
    """demo --list answers from the catalogue alone: torch is never imported."""
    code = ("import sys; from graphscope.cli import main; code = main(['demo', '--list']); "
            "assert 'torch' not in sys.modules, 'torch imported'; raise SystemExit(code)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "sigmoid_mlp" in proc.stdout


def test_render_without_engine_exits_3(capture_file, tmp_path, monkeypatch, capsys):
    """A missing Graphviz engine: exit 3 with the engine error's message."""
    def render(graph, path, *, progress=None, options=None):
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


# -- the inspector crashing --------------------------------------------------------------------

_CRASH = re.compile(r"graphscope: error: the inspector crashed: RuntimeError: boom in the widget "
                    r"\(full traceback in (\S+\.log); rerun with --debug to see it\)")


@pytest.mark.parametrize("command", ["demo", "view"])
def test_inspector_crash_exits_1_with_one_line_and_a_log(command, crashing, fake_demos,
                                                           capture_file, tmp_path, capsys):
    """An error inside the running inspector: exit 1, one line naming it, traceback in a log."""
    argv = ["demo"] if command == "demo" else ["view", str(capture_file)]
    assert cli.main(argv) == 1
    line = _one_line(capsys.readouterr().err)
    match = _CRASH.fullmatch(line)
    assert match, line
    log = Path(match.group(1))
    assert log.parent == tmp_path
    log = log.read_text()
    assert "Traceback" in log and "in boom" in log and log.endswith("RuntimeError: boom in the widget\n")


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_flag_shows_the_full_traceback(where, crashing, fake_demos, capsys):
    """--debug (before or after the command) prints the traceback, then the one-line error."""
    argv = ["--debug", "demo"] if where == "before" else ["demo", "--debug"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "in boom" in err
    assert err.strip().splitlines()[-1] == (
        "graphscope: error: the inspector crashed: RuntimeError: boom in the widget")


def test_inspect_raises_what_crashed_the_app(crashing, capsys):
    """graphscope.inspect() re-raises the app's error after the terminal is restored."""
    from graphscope.tui import inspect

    with pytest.raises(RuntimeError, match="boom in the widget"):
        inspect(sigmoid_mlp())
    assert "Traceback" not in capsys.readouterr().err  # textual's own report is not printed


def test_unexpected_error_in_a_command_is_one_line_exit_1(capture_file, monkeypatch, capsys):
    """Any other unexpected exception: exit 1 and one line with a log, never a traceback."""
    def render(graph, path, *, progress=None, options=None):
        raise KeyError("layout")

    monkeypatch.setattr("graphscope.export.render_graph", render)
    assert cli.main(["render", str(capture_file)]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("graphscope: error: unexpected KeyError: 'layout' (full traceback in ")
    assert line.endswith("; rerun with --debug to see it)")


# -- render: the output is checked before the work ---------------------------------------------


@pytest.mark.parametrize("name, words", [
    ("out.jpg", ["'.jpg'", ".svg, .png, .pdf, .dot, .json", "PDF needs the system Graphviz"]),
    ("noext", ["has no suffix", ".svg, .png, .pdf, .dot, .json"]),
])
def test_render_unknown_suffix_exits_2_before_layout(name, words, capture_file, tmp_path,
                                                     renders, capsys):
    """-o with an unknown or missing suffix: exit 2 and one line listing the formats, no layout."""
    assert cli.main(["render", str(capture_file), "-o", str(tmp_path / name)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("graphscope: error: ")
    for w in words:
        assert w in line, line
    assert renders == []


@pytest.mark.parametrize("name", ["pics.svg", "pics"])
def test_render_to_a_directory_exits_2_before_layout(name, capture_file, tmp_path, renders, capsys):
    """-o naming a directory (with or without a suffix): exit 2, one line suggesting a file in it."""
    out = tmp_path / name
    out.mkdir()
    assert cli.main(["render", str(capture_file), "-o", str(out)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "is a directory" in line and str(out / "step.svg") in line
    assert renders == []


@pytest.mark.parametrize("where", ["under_a_file", "read_only"])
def test_render_unwritable_output_exits_2_before_layout(where, capture_file, tmp_path, renders,
                                                        capsys):
    """-o where no file can be written: exit 2, one line saying why, no layout."""
    if where == "under_a_file":
        (tmp_path / "notes.txt").write_text("x")
        out, why = tmp_path / "notes.txt" / "g.svg", "not a directory"
    else:  # sysfs refuses new files even to root, unlike a chmod-ed folder
        out, why = Path("/sys/graphscope-test.svg"), "cannot write"
    assert cli.main(["render", str(capture_file), "-o", str(out)]) == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"graphscope: error: cannot write {out}") and why in line, line
    assert renders == []


def test_render_without_an_engine_for_the_format_fails_before_layout(capture_file, tmp_path,
                                                                    renders, monkeypatch, capsys):
    """-o x.pdf with no engine that writes PDF: exit 3 before the graph is laid out."""
    def find_engine(fmt, *, prefer=None):
        raise EngineError("PDF needs the system Graphviz `dot`")

    monkeypatch.setattr("graphscope.export.find_engine", find_engine)
    assert cli.main(["render", str(capture_file), "-o", str(tmp_path / "g.pdf")]) == 3
    assert _one_line(capsys.readouterr().err) == (
        "graphscope: error: PDF needs the system Graphviz `dot`")
    assert renders == []


def test_render_bad_suffix_on_the_real_command_line(capture_file, tmp_path):
    """python -m graphscope render -o out.jpg: exit 2, one line on stderr, nothing written."""
    proc = subprocess.run([sys.executable, "-m", "graphscope", "render", str(capture_file),
                           "-o", str(tmp_path / "out.jpg")], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=60)
    assert proc.returncode == 2
    assert _one_line(proc.stderr).startswith("graphscope: error: cannot tell the format")
    assert not (tmp_path / "out.jpg").exists()


# -- no terminal -------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["view", "demo"])
def test_inspector_without_a_terminal_exits_2(command, capture_file):
    """view/demo with stdin not a terminal: exit 2 at once, suggesting render (no hang)."""
    argv = ["view", str(capture_file)] if command == "view" else ["demo", "sigmoid_mlp"]
    proc = subprocess.run([sys.executable, "-m", "graphscope", *argv], capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=30)
    assert proc.returncode == 2
    line = _one_line(proc.stderr)
    assert line.startswith("graphscope: error: the inspector needs a terminal")
    assert "graphscope render" in line


def test_closed_pipe_on_stdout_is_quiet():
    """demo --list piped into a reader that has already gone: no traceback, no error line."""
    proc = subprocess.run(f"{sys.executable} -m graphscope demo --list | true",
                          shell=True, capture_output=True, text=True, timeout=60)
    assert proc.stderr == ""


def test_render_with_threshold_options_rediagnoses(tmp_path):
    """render --threshold: the saved picture and capture are judged with the given limits."""
    import json

    src = tmp_path / "step.json"
    sigmoid_mlp().save(src)
    out = tmp_path / "strict.json"
    assert cli.main(["render", str(src), "-o", str(out), "--threshold", "vanishing_ratio=0.5"]) == 0
    data = json.loads(out.read_text())
    assert data["meta"]["thresholds"]["vanishing_ratio"] == 0.5

    def vanishing(findings: list[dict]) -> set[int]:  # a one-node finding stores no "nodes"
        return {n for f in findings if f["kind"] == "vanishing" for n in f.get("nodes", [f["node"]])}

    assert vanishing(data["findings"]) > vanishing(json.loads(src.read_text())["findings"])


@pytest.mark.parametrize("option, words", [
    ("vanishing=1", "NAME one of vanishing_rms"),
    ("exploding_rms=lots", "'lots' is not a number"),
    ("exploding_rms=-3", "positive finite number"),
])
def test_bad_threshold_option_is_one_line_exit_2(tmp_path, capsys, option, words):
    """A --threshold that names no limit, is not a number or is invalid: one line, exit 2."""
    src = tmp_path / "step.json"
    sigmoid_mlp().save(src)
    assert cli.main(["render", str(src), "-o", str(tmp_path / "x.svg"), "--threshold", option]) == 2
    err = capsys.readouterr().err
    assert err.startswith("graphscope: error: --threshold") and err.count("\n") == 1
    assert words in err

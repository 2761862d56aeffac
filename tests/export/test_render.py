"""Laying out and saving: engines, formats, the missing-engine message, progress, Jupyter."""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from graphscope.drawing import render
from graphscope.errors import CaptureTypeError, EngineError
from graphscope.export import render as rendermod
from graphscope.export.render import Engine, find_engine, run_engine
from graphscope.model import load
from tests import graphs

SVG = "{http://www.w3.org/2000/svg}"
PURE = shutil.which("graphviz-pure", path=rendermod._search_path())
SYSTEM_DOT = shutil.which("dot")


def test_graphviz_pure_is_installed() -> None:
    """graphviz-pure, a declared dependency, is found: the engine every machine has."""
    assert PURE is not None, "graphviz-pure is a dependency of graphscope: pip install -e ."


@pytest.fixture
def no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rendermod.shutil, "which", lambda name, path=None: None)


@pytest.fixture
def pure_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rendermod.shutil, "which", lambda name, path=None: PURE if name == "graphviz-pure" else None)


def test_svg_from_graphviz_pure_is_valid_xml_with_titles() -> None:
    """graphviz-pure SVG parses as XML; every node has its <title> and a tooltip <title>."""
    g = graphs.mlp()
    svg = render(g, engine="graphviz-pure").svg
    root = ET.fromstring(svg)
    titles = [t.text for t in root.iter(f"{SVG}title")]
    for n in g.nodes:
        assert f"n{n.id}" in titles
        assert any(t and t.startswith(n.op) for t in titles), f"no tooltip title for {n.op}"


def test_png_from_graphviz_pure(tmp_path: Path, pure_only: None) -> None:
    """Saving .png with only graphviz-pure installed writes a PNG file."""
    out = render(graphs.nan_origin(), tmp_path / "g.png")
    assert out.options.engine is None
    assert (tmp_path / "g.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_escaped_labels_reach_the_picture() -> None:
    """Quotes and backslashes in labels are escaped so the engine draws them verbatim."""
    b = graphs.Builder()
    b.add("WeirdBackward0", 'say "hi" \\o/', root=True)
    svg = render(b.graph(), engine="graphviz-pure", legend=False).svg
    texts = [t.text for t in ET.fromstring(svg).iter(f"{SVG}text")]
    assert 'say "hi" \\o/' in texts


def test_missing_engine_says_how_to_get_one(no_engine: None) -> None:
    """With no engine installed, drawing SVG raises EngineError naming both installs."""
    rendering = render(graphs.mlp())
    with pytest.raises(EngineError) as info:
        rendering.svg
    message = str(info.value)
    assert "pip install graphviz-pure" in message and "apt-get install graphviz" in message


def test_missing_engine_on_save_is_engine_error(tmp_path: Path, no_engine: None) -> None:
    """render(..., 'x.svg') with no engine raises EngineError, and writes no file."""
    with pytest.raises(EngineError):
        render(graphs.mlp(), tmp_path / "x.svg")
    assert not (tmp_path / "x.svg").exists()


def test_pdf_needs_system_dot(tmp_path: Path, pure_only: None) -> None:
    """PDF with only graphviz-pure installed asks for the system Graphviz."""
    with pytest.raises(EngineError, match="PDF needs the system Graphviz"):
        render(graphs.mlp(), tmp_path / "x.pdf")


def test_asked_for_engine_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """engine='dot' when dot is absent says so rather than silently using another."""
    monkeypatch.setattr(rendermod.shutil, "which", lambda name, path=None: "/x/gp" if name == "graphviz-pure" else None)
    with pytest.raises(EngineError, match="engine='dot' was asked for"):
        find_engine("svg", prefer="dot")


def test_system_dot_preferred_when_present(monkeypatch: pytest.MonkeyPatch) -> None:
    """With both engines installed, the system dot is used."""
    monkeypatch.setattr(rendermod.shutil, "which", lambda name, path=None: f"/x/{name}")
    assert find_engine("svg") == Engine("dot", "/x/dot")


def test_dot_and_json_need_no_engine(tmp_path: Path, no_engine: None) -> None:
    """.dot and .json are written without any engine; the JSON loads back as the same graph."""
    g = graphs.nan_origin()
    rendering = render(g, tmp_path / "g.dot")
    assert (tmp_path / "g.dot").read_text() == rendering.dot
    rendering.save(tmp_path / "g.json")
    back = load(tmp_path / "g.json")
    assert back.to_dict() == g.to_dict()


def test_render_accepts_a_saved_capture(tmp_path: Path) -> None:
    """render() takes the path of a saved capture and draws the same DOT."""
    g = graphs.mlp()
    g.save(tmp_path / "g.json")
    assert render(tmp_path / "g.json").dot == render(g).dot


def test_unknown_suffix_is_rejected(tmp_path: Path) -> None:
    """A path whose suffix names no format is a ValueError that lists the formats."""
    with pytest.raises(ValueError, match=r"\.svg, \.png, \.pdf, \.dot, \.json"):
        render(graphs.mlp(), tmp_path / "g.gif")


def test_unknown_option_is_rejected() -> None:
    """A misspelt option is a TypeError naming the known ones."""
    with pytest.raises(TypeError, match="max_nodes"):
        render(graphs.mlp(), max_node=5)


def test_non_graph_is_rejected() -> None:
    """Something that is not a Graph, a path or a tensor is a CaptureTypeError."""
    with pytest.raises(CaptureTypeError, match="graphscope.capture"):
        render(42)


def test_engine_timeout_is_engine_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A layout that runs past the timeout stops with an EngineError that suggests max_nodes."""
    def slow(*args: object, **kwargs: object) -> None:
        raise subprocess.TimeoutExpired("dot", 1)

    monkeypatch.setattr(rendermod.subprocess, "run", slow)
    with pytest.raises(EngineError, match="max_nodes"):
        run_engine(Engine("dot", "/x/dot"), "digraph {}", "svg", timeout=1)


def test_engine_failure_reports_its_stderr(tmp_path: Path) -> None:
    """An engine that exits non-zero gives an EngineError carrying its message."""
    fake = tmp_path / "fake-dot"
    fake.write_text("#!/bin/sh\necho 'syntax error in line 1' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(EngineError, match="syntax error in line 1"):
        run_engine(Engine("dot", str(fake)), "digraph {", "svg")


def test_jupyter_repr_without_engine_is_text(no_engine: None) -> None:
    """In a notebook with no engine, the rendering shows a message, not a traceback."""
    rendering = render(graphs.mlp())
    bundle = rendering._repr_mimebundle_()
    assert set(bundle) == {"text/plain"} and "pip install graphviz-pure" in bundle["text/plain"]
    assert rendering._repr_svg_() is None


def test_jupyter_repr_is_svg() -> None:
    """With an engine, the notebook gets the SVG."""
    bundle = render(graphs.mlp(), engine="graphviz-pure")._repr_mimebundle_()
    assert bundle["image/svg+xml"].lstrip().startswith("<?xml")


def test_progress_reports_each_slow_step(tmp_path: Path) -> None:
    """The progress callback hears about reducing, laying out and writing."""
    heard: list[str] = []
    render(graphs.random_dag(2000), tmp_path / "g.svg", engine="graphviz-pure", progress=heard.append)
    text = "\n".join(heard)
    assert "reducing 2,000 nodes" in text and "laying out" in text and "wrote" in text


def test_quiet_by_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Without a progress callback, rendering prints nothing."""
    render(graphs.random_dag(2000), tmp_path / "g.svg", engine="graphviz-pure")
    assert capsys.readouterr() == ("", "")


def test_pdf_with_system_dot(tmp_path: Path) -> None:
    """With the system dot, .pdf is written (CI installs system Graphviz, so this always runs)."""
    assert SYSTEM_DOT is not None, "system Graphviz is needed for PDF: apt-get install -y graphviz"
    render(graphs.mlp(), tmp_path / "g.pdf")
    assert (tmp_path / "g.pdf").read_bytes()[:5] == b"%PDF-"

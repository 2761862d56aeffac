"""The capture file: graphscope's versioned JSON format and the record codec behind it.

Owns the header (``format``, ``version``), reading and writing the JSON text, and the mapping of
dataclass records to JSON. A field still at its dataclass default is left out on save and
restored from the same dataclass on load, so defaults exist once, on the record types in
``graphscope.model`` (which says, per field, how a stored value is read back). A 50k-node
capture is mostly defaults, and JSON parsing is most of loading it.

JSON has no NaN or Inf: non-finite numbers are stored as the strings ``'nan'``, ``'inf'`` and
``'-inf'``. Small fixed records (gradient statistics, source lines) are stored as lists in field
order. No pickle: loading a file never runs code. Sits below the model, which calls it from
``Graph.save`` and ``load``; imports nothing of graphscope but ``errors``, and never torch,
textual or graphviz.
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import MISSING, fields, is_dataclass
from functools import cache
from pathlib import Path
from typing import Any, Callable

from graphscope.errors import LoadError

FORMAT = "graphscope.capture"
FORMAT_VERSION = 1

Reader = Callable[[Any], Any]


@cache
def _stored(cls: type) -> tuple[tuple[str, Any], ...]:
    """(name, default) of each stored field of a record type; ``MISSING`` where none."""
    return tuple((f.name, f.default) for f in fields(cls) if not f.name.startswith("_"))


@cache
def _floats(cls: type) -> tuple[bool, ...]:
    """Which fields of a record type are floats (stored as strings when NaN or Inf)."""
    return tuple(f.type in ("float", float) for f in fields(cls) if not f.name.startswith("_"))


def _num(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return repr(x)  # 'nan', 'inf', '-inf'
    return x


_PLAIN = frozenset({int, str, bool, type(None)})


@cache
def _record(cls: type) -> tuple[tuple[str, Any], ...] | None:
    """The stored fields of a record type, or ``None`` for a type that is not a dataclass."""
    return _stored(cls) if is_dataclass(cls) else None


def encode(value: Any, *, compact: frozenset[type] = frozenset()) -> Any:
    """A model value as JSON data: records as dicts without their default fields (``compact``
    record types as lists in field order), tuples as lists, enums by name, NaN/Inf as strings."""
    cls = type(value)
    if cls in _PLAIN:
        return value
    if cls is float:
        return _num(value)
    stored = _record(cls)
    if stored is not None:
        # Primitive field values are stored as they are, without a call per value.
        if cls in compact:
            out_list = [getattr(value, name) for name, _ in stored]
            return [v if type(v) in _PLAIN else encode(v, compact=compact) for v in out_list]
        out = {}
        for name, default in stored:
            v = getattr(value, name)
            # 0 is not None and False is not 0: a default matches only with its type.
            if default is MISSING or type(v) is not type(default) or v != default:
                out[name] = v if type(v) in _PLAIN else encode(v, compact=compact)
        return out
    if cls is tuple or cls is list:
        return [x if type(x) in _PLAIN else encode(x, compact=compact) for x in value]
    if isinstance(value, enum.Enum):
        return str(value)
    return value


def decode(cls: type, data: Any, read: dict[str, Reader]) -> Any:
    """Rebuild a record from ``encode`` output; ``read`` converts the fields that are not
    stored as their JSON value. A field left out takes the dataclass default.

    Raises:
        TypeError, ValueError, KeyError: The data does not describe a ``cls``.
    """
    if not isinstance(data, dict):
        raise TypeError(f"a {cls.__name__} record must be an object, got {type(data).__name__}")
    kwargs = {}
    for name, _ in _stored(cls):
        if name in data:
            v = data[name]
            kwargs[name] = read[name](v) if name in read else v
    return cls(**kwargs)  # a missing required field is a TypeError


def decode_list(cls: type, data: Any) -> Any:
    """Rebuild a ``compact`` record (a list in field order); NaN/Inf strings become floats.

    Raises:
        ValueError: Not a list of as many values as ``cls`` has fields.
    """
    floats = _floats(cls)
    if not isinstance(data, list) or len(data) != len(floats):
        raise ValueError(f"a {cls.__name__} record needs {len(floats)} values")
    return cls(*[float(v) if f and isinstance(v, str) else v for f, v in zip(floats, data)])


def with_header(body: dict[str, Any]) -> dict[str, Any]:
    """``body`` under the format header (``format``, ``version``)."""
    return {"format": FORMAT, "version": FORMAT_VERSION, **body}


def write(path: str | Path, data: dict[str, Any]) -> Path:
    """Write ``data`` as compact JSON; returns the path written."""
    path = Path(path)
    path.write_text(json.dumps(data, separators=(",", ":")), encoding="utf-8")
    return path


def check_header(data: Any) -> dict[str, Any]:
    """``data`` itself once it is known to be a capture this graphscope can read.

    Raises:
        LoadError: Not a graphscope capture, or from a newer version.
    """
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise LoadError(
            "this is not a graphscope capture (no 'format': 'graphscope.capture' field); "
            "make one with graphscope.capture(loss) and graph.save(path)"
        )
    version = data.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise LoadError(
            f"capture format version {version!r} is newer than this graphscope understands "
            f"(up to {FORMAT_VERSION}); upgrade graphscope"
        )
    return data


def read(path: str | Path) -> Any:
    """The JSON data of a file (``check_header`` tells whether it is a capture).

    Raises:
        LoadError: The file is missing, unreadable, not JSON or truncated.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LoadError(f"no such capture file: {path}") from None
    except IsADirectoryError:
        raise LoadError(f"{path} is a directory; give the path of a capture .json file") from None
    except UnicodeDecodeError:
        raise LoadError(
            f"{path} is not a graphscope capture: it is a binary file, not JSON text (an image or "
            f"an archive renamed .json?); save a capture with graph.save(path)"
        ) from None
    except OSError as exc:
        raise LoadError(f"cannot read capture file {path}: {exc}") from None
    if not text.strip():
        raise LoadError(f"{path} is empty: a capture file is never empty; was it still being "
                        f"written, or saved from a capture that failed?")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        # An unterminated string is reported where it started, not at the end of the text.
        cut = exc.pos >= len(text) - 1 or exc.msg.startswith("Unterminated string")
        hint = " (the file looks truncated)" if cut or not text.rstrip().endswith("}") else ""
        raise LoadError(f"{path} is not valid JSON{hint}: {exc.msg} at line {exc.lineno}") from None
    except RecursionError:
        raise LoadError(f"{path} is nested too deeply to be a graphscope capture") from None
    return data

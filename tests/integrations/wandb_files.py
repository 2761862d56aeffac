"""Reads an offline W&B run's ``run-*.wandb`` file back: its records, as wandb's protos.

The file is W&B's transaction log: a 7-byte header (``:W&B``, magic, version), then records in
LevelDB's log format (32 KiB blocks; each chunk a 7-byte header: CRC32C, length, type
full/first/middle/last), each record a serialized ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

_BLOCK = 32768
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B transaction log"
    pos, out, parts = 7, [], []
    while pos + 7 <= len(data):
        if _BLOCK - pos % _BLOCK < 7:  # a block's tail too short for a header is padding
            pos += _BLOCK - pos % _BLOCK
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        chunk, pos = data[pos:pos + length], pos + length
        if kind == _FULL:
            out.append(chunk)
        elif kind == _FIRST:
            parts = [chunk]
        elif kind == _MIDDLE:
            parts.append(chunk)
        elif kind == _LAST:
            out.append(b"".join(parts + [chunk]))
        elif kind == 0 and length == 0:
            pos += _BLOCK - pos % _BLOCK  # zero padding to the block's end
    parsed = []
    for raw in out:
        rec = wandb_internal_pb2.Record()
        rec.ParseFromString(raw)
        parsed.append(rec)
    return parsed


def history(folder: Path) -> dict[int, dict[str, object]]:
    """Step -> {key: value} of the offline run under ``folder`` (its one ``run-*.wandb``)."""
    (path,) = sorted(folder.glob("wandb/offline-run-*/run-*.wandb"))
    rows: dict[int, dict[str, object]] = {}
    for rec in records(path):
        if rec.WhichOneof("record_type") != "history":
            continue
        row = {}
        for item in rec.history.item:
            key = item.key or "/".join(item.nested_key)
            row[key] = json.loads(item.value_json)
        rows.setdefault(int(rec.history.step.num), {}).update(row)
    return rows

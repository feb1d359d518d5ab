"""Reads an offline W&B run file (``run-<id>.wandb``) back, for tests.

The file is a LevelDB-style log of protobuf ``Record`` messages after a 7-byte header; recent
wandb releases no longer ship a Python reader for it.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B run file")
    records, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # block trailer too small for a header: padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += BLOCK - pos % BLOCK
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == FULL:
            records.append(chunk)
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            records.append(pending + chunk)
    out = []
    for raw in records:
        rec = pb.Record()
        rec.ParseFromString(raw)
        out.append(rec)
    return out


def logged(run_dir: Path) -> dict:
    """History keys, summary, config, run record (group, job type, tags) and artifacts (name,
    type) of the single offline run under ``run_dir``."""
    files = sorted(Path(run_dir).rglob("run-*.wandb"))
    if not files:
        raise FileNotFoundError(f"no offline W&B run under {run_dir}")
    history: set[str] = set()
    summary: dict = {}
    config: dict = {}
    run: dict = {}
    artifacts: list[tuple[str, str]] = []
    for rec in _finished_records(files[-1]):
        kind = rec.WhichOneof("record_type")
        if kind == "artifact":
            artifacts.append((rec.artifact.name, rec.artifact.type))
        if kind == "history":
            history |= {item.nested_key[0] if item.nested_key else item.key for item in rec.history.item}
            history |= {"/".join(item.nested_key) for item in rec.history.item if item.nested_key}
        elif kind == "summary":
            for item in rec.summary.update:
                key = "/".join(item.nested_key) if item.nested_key else item.key
                summary[key] = json.loads(item.value_json)
        if kind == "run":
            run = {"group": rec.run.run_group, "job_type": rec.run.job_type, "tags": list(rec.run.tags)}
        if kind in ("config", "run"):
            cfg = rec.config if kind == "config" else rec.run.config
            for item in cfg.update:
                key = "/".join(item.nested_key) if item.nested_key else item.key
                config[key] = json.loads(item.value_json)
    return {"history": history, "summary": summary, "config": config, "run": run, "artifacts": artifacts}


def _finished_records(path: Path, timeout: float = 30.0) -> list:
    """The records of a run file once its ``exit`` record is there: ``run.finish()`` can return
    before the wandb service has flushed the file (seen: only the 7-byte header right after)."""
    deadline = time.monotonic() + timeout
    while True:
        records = read_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            return records
        time.sleep(0.2)

"""A run's record of its training segments: ``<run>/segments.jsonl``.

A run trained in several goes (interrupted and resumed, or continued with a larger
``train.max_steps``) keeps every go's settings: ``config.yaml`` is written once, with the first
segment's configuration, and each segment appends two lines here, one when it starts (its
step, command line, full configuration and what changed since the segment before) and one
when it ends (its step and why: ``max_steps``, ``cpu_budget`` or ``interrupted``). Lines are
appended whole, so a killed segment leaves its start line without an end line.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from leads.config.schema import flat_keys, plain

FILE = "segments.jsonl"


def read_segments(run_dir: Path) -> list[dict[str, Any]]:
    """Every line of the run's record (unreadable lines, from a writer killed mid-line, skipped)."""
    path = Path(run_dir) / FILE
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _append(run_dir: Path, record: dict[str, Any]) -> None:
    from leads.reporting.results import now

    data = (json.dumps({"time": now(), **record}, default=str) + "\n").encode()
    fd = os.open(Path(run_dir) / FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def start_segment(run_dir: Path, cfg: Mapping[str, Any], from_step: int) -> int:
    """Record that a segment starts at ``from_step`` with ``cfg``; returns its number (1, 2, ...)."""
    starts = [r for r in read_segments(run_dir) if r.get("event") == "start"]
    config = plain(cfg)
    changed = {}
    if starts:
        before, now = flat_keys(starts[-1].get("config") or {}), flat_keys(config)
        changed = {k: [before.get(k), now.get(k)] for k in sorted(set(before) | set(now))
                   if before.get(k) != now.get(k)}
    number = len(starts) + 1
    _append(run_dir, {"segment": number, "event": "start", "from_step": int(from_step), "argv": sys.argv,
                      "changed": changed, "config": config})
    return number


def end_segment(run_dir: Path, number: int, at_step: int, stop: str) -> None:
    """Record that segment ``number`` ended at ``at_step`` because of ``stop``."""
    _append(run_dir, {"segment": number, "event": "end", "at_step": int(at_step), "stop": stop})

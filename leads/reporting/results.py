"""Result rows: one JSON object per line in ``<results_dir>/<system>/results.jsonl``.

A row is one number: (run, split, environment, metric) -> value, plus what is needed to group,
filter and reproduce it (method, seed, profile, shots, timings, parameter counts, git commit,
config hash, which environments). Per-environment rows hold the mean over that environment's
test trajectories; rows with ``environment == "all"`` the mean over all of the split's
trajectories. ``std`` is over the same trajectories. Tables are built from these rows only.

Appending takes an exclusive ``fcntl`` lock on ``results.jsonl.lock`` and writes each batch
of rows with one ``write`` on an ``O_APPEND`` descriptor, then ``fsync``: concurrent runs never
interleave or lose rows, and a crash leaves at most one incomplete last line, which readers
skip with a warning.
"""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import warnings
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from leads.config.loading import config_hash
from leads.datasets.cache import file_lock

if TYPE_CHECKING:  # scoring pulls in Lightning; writing and reading rows should not
    from leads.evaluation.scoring import Scores

ALL = "all"
# Keys that say where and how a run was executed, not what it computed.
BOOKKEEPING = ("run_name", "device", "devices", "num_nodes", "strategy", "logger", "wandb", "runs_dir",
               "results_dir")
REPO = Path(__file__).resolve().parents[2]


def results_path(cfg: Mapping[str, Any]) -> Path:
    return Path(cfg["results_dir"]) / cfg["system_name"] / "results.jsonl"


def study_hash(cfg: Mapping[str, Any]) -> str:
    """Hash of what determines a result: the config without bookkeeping and the data directory."""
    ident = {k: v for k, v in cfg.items() if k not in BOOKKEEPING}
    ident["data"] = {k: v for k, v in cfg["data"].items() if k != "dir"}
    return config_hash(ident)


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """The code's commit, ``+dirty`` when tracked files differ from it; ``unknown`` outside git."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
    try:
        head = git("rev-parse", "--short=12", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _clean(value: Any) -> Any:
    """JSON-safe: NaN and infinities become null, numpy scalars plain numbers."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def score_rows(base: dict[str, Any], split: str, scores: Scores, env_names: list[str]) -> list[dict[str, Any]]:
    """Rows of every metric of ``scores``: one per environment and one for all trajectories."""
    from leads.evaluation.scoring import METRICS

    rows = []
    groups = [(name, scores.env == i) for i, name in enumerate(env_names)] + [(ALL, np.ones_like(scores.env, bool))]
    for metric in METRICS:
        values = getattr(scores, metric)
        for env, sel in groups:
            v = values[sel]
            if not len(v):
                continue
            finite = bool(np.isfinite(v).all())
            rows.append({**base, "split": split, "environment": env, "metric": metric,
                         "value": float(v.mean()) if finite else math.nan,
                         "std": float(v.std()) if finite else math.nan, "n_traj": len(v)})
    return rows


def append_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append ``rows`` to ``path`` atomically with respect to other writers."""
    if not rows:
        return
    data = "".join(json.dumps({k: _clean(v) for k, v in r.items()}, allow_nan=False) + "\n" for r in rows).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path):
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            end = os.lseek(fd, 0, os.SEEK_END)
            if end and os.pread(fd, 1, end - 1) != b"\n":
                # A writer died mid-line (full disk, kill): end that line, or it would swallow our first row.
                data = b"\n" + data
            view = memoryview(data)
            while view:  # one write in practice; the loop only guards against short writes
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)


def read_rows(path: Path) -> list[dict[str, Any]]:
    """All rows of ``path`` (none if it does not exist); nulls read back as NaN where numbers."""
    if not Path(path).exists():
        return []
    with file_lock(Path(path)):
        lines = Path(path).read_text().splitlines()
    rows, bad = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += 1
            continue
        for key in ("value", "std"):
            if row.get(key) is None:
                row[key] = math.nan
        rows.append(row)
    if bad:
        warnings.warn(f"{path}: skipped {bad} unreadable line(s) (an interrupted write?)", stacklevel=2)
    return rows

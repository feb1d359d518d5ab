"""Result rows: one JSON object per line in ``<results_dir>/<system>/results.jsonl``.

A row is one number: (run, split, environment, metric) -> value, plus what is needed to group,
filter and reproduce it (method, seed, profile, shots, timings, parameter counts, git commit,
which environments) and what makes it comparable: its ``protocol_key`` (what it is measured
on) and ``config_key`` (how the model was trained and adapted; ``leads.reporting.keys``).
Per-environment rows hold the mean over that environment's test trajectories; rows with
``environment == "all"`` the mean over all of the split's trajectories. ``std`` is over the
same trajectories; ``n_diverged`` and ``diverged_at`` say how many forecasts became
non-finite and from when. Tables are built from these rows only.

Appending takes an exclusive ``fcntl`` lock on ``results.jsonl.lock``. New rows of an
evaluation already in the file (same run, configuration, kind, split, shots and set) replace
its rows: the file is rewritten to a temporary file and renamed into place. Otherwise each
batch of rows is one ``write`` on an ``O_APPEND`` descriptor, then ``fsync``. Either way
concurrent writers never interleave or lose rows, and a crash leaves at most one incomplete
last line, which readers skip with a warning.
"""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import subprocess
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from leads.config.loading import config_hash
from leads.datasets.atomic import atomic_write
from leads.datasets.cache import file_lock
from leads.envs.errors import UserError
from leads.reporting.keys import BOOKKEEPING, identity

if TYPE_CHECKING:  # scoring pulls in Lightning; writing and reading rows should not
    from leads.config.schema import RunConfig
    from leads.evaluation.scoring import Scores

ALL = "all"
REPO = Path(__file__).resolve().parents[2]


def results_path(cfg: RunConfig) -> Path:
    return Path(cfg.results_dir) / cfg.system_name / "results.jsonl"


def study_hash(cfg: RunConfig) -> str:
    """Hash of what determines a result: the config without bookkeeping and the data directory."""
    ident = {k: v for k, v in cfg.to_dict().items() if k not in BOOKKEEPING}
    ident["data"] = {k: v for k, v in ident["data"].items() if k != "dir"}
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
    """Rows of every metric of ``scores``: one per environment and one for all trajectories.

    ``value`` and ``std`` are over the trajectories that have a score in the metric (a forecast
    that diverged before the metric's window has none); ``n_diverged`` counts the forecasts that
    became non-finite and ``diverged_at`` is the earliest time one did (None if none did)."""
    from leads.evaluation.scoring import METRICS

    rows = []
    groups = [(name, scores.env == i) for i, name in enumerate(env_names)] + [(ALL, np.ones_like(scores.env, bool))]
    diverged_at = scores.diverged_at
    for metric in METRICS:
        values = getattr(scores, metric)
        for env, sel in groups:
            v = values[sel]
            if not len(v):
                continue
            scored = v[np.isfinite(v)]
            hit = diverged_at[sel][np.isfinite(diverged_at[sel])]
            rows.append({**base, "split": split, "environment": env, "metric": metric,
                         "value": float(scored.mean()) if len(scored) else math.nan,
                         "std": float(scored.std()) if len(scored) else math.nan, "n_traj": len(v),
                         "n_diverged": len(hit), "diverged_at": float(hit.min()) if len(hit) else None})
    return rows


def append_rows(path: Path, rows: list[dict[str, Any]]) -> int:
    """Append ``rows`` to ``path`` atomically with respect to other writers, replacing the rows of
    an earlier evaluation they repeat (same run, configuration, kind, split, shots and set:
    ``leads.reporting.keys.identity``), so re-adapting or re-scoring never duplicates a row.

    Returns:
        How many earlier rows were replaced.
    """
    if not rows:
        return 0
    data = "".join(json.dumps({k: _clean(v) for k, v in r.items()}, allow_nan=False) + "\n" for r in rows).encode()
    new_ids = {identity(r) for r in rows if r.get("config_key")}
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path):
        old = path.read_bytes() if new_ids and path.exists() else b""
        kept, replaced = _without(old, new_ids)
        if replaced:
            # Rewritten whole (temporary file, fsync, rename): a crash leaves the old file or the new one.
            with atomic_write(path, ".jsonl.tmp") as tmp:
                tmp.write_bytes(kept + data)
            return replaced
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
        except OSError as e:
            if e.errno and not e.filename:  # a full disk names no file: name it
                raise OSError(e.errno, e.strerror, str(path)) from e
            raise
        finally:
            os.close(fd)
    return 0


def _without(text: bytes, ids: set[tuple]) -> tuple[bytes, int]:
    """``text``'s lines without the rows of evaluations ``ids`` (unreadable lines are kept as
    they are: nothing a user wrote is dropped), and how many rows were dropped."""
    if not ids or not text:
        return text, 0
    kept, dropped = [], 0
    for line in text.splitlines(keepends=True):
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict) and identity(row) in ids:
            dropped += 1
            continue
        kept.append(line if line.endswith(b"\n") else line + b"\n")
    return b"".join(kept), dropped


def read_rows(path: Path) -> list[dict[str, Any]]:
    """All rows of ``path`` (none if it does not exist); nulls read back as NaN where numbers."""
    path = Path(path)
    if not path.exists():
        return []
    try:
        try:
            with file_lock(path):
                lines = path.read_text().splitlines()
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC):
                raise
            # No lock file can be made beside it (a read-only copy): a rewrite lands by a rename
            # and an append is one write, so an unlocked read still sees whole rows.
            lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        reason = os.strerror(e.errno) if isinstance(e, OSError) and e.errno else type(e).__name__
        raise UserError(f"results file {path} cannot be read ({reason}); fix its permissions or choose another "
                        "--set results_dir=DIR") from None
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

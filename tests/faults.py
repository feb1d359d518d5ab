"""Helpers of the fault-injection tests: run ``python run.py`` on tiny configs in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import tiny
from tiny import PER_SYSTEM, TINY

ROOT = Path(__file__).resolve().parents[1]
INJECT = Path(__file__).resolve().parent / "fault_inject.py"


def tiny_sets(system: str, tmp: Path, *extra: str, shared_data: bool = False) -> list[str]:
    """``--set`` arguments of :func:`tiny.tiny_config` for ``python run.py``, with data of their own
    under ``tmp``, or in the shared cache with ``shared_data``: the data directory is part of a
    run's configuration, so a run trained by ``tiny_config`` is resumed with ``shared_data``."""
    data = tiny.SHARED_DATA if shared_data and tiny.SHARED_DATA is not None else tmp / "data"
    sets = [*TINY, *PER_SYSTEM.get(system, []), f"runs_dir={tmp / 'runs'}", f"data.dir={data}",
            f"results_dir={tmp / 'results'}", *extra]
    return [f"--set={s}" for s in sets]


def child_env(**extra: str) -> dict[str, str]:
    """One thread per process (the machine is shared) and no W&B unless a test asks for it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LEADS_FAULT", "WANDB_"))}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="disabled", WANDB_SILENT="true",
               PYTHONPATH=str(ROOT))
    env.update(extra)
    return env


def run_py(args: list[str], env: dict[str, str] | None = None, fault: dict[str, str] | None = None,
           timeout: float = 300, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """``python run.py ARGS`` (through tests/fault_inject.py when ``fault`` is given)."""
    env = dict(env or child_env())
    cmd = [sys.executable, str(ROOT / "run.py"), *args]
    if fault:
        env.update(fault)
        cmd = [sys.executable, str(INJECT), str(ROOT / "run.py"), *args]
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str, only_line: bool = True) -> str:
    """Exit code 2, no traceback, and one ``error:`` line naming ``needles``; with ``only_line``
    (errors raised before training starts) it is the only line on stderr."""
    err = proc.stderr
    assert proc.returncode == 2, (proc.returncode, err[-3000:])
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err[-3000:]
    if only_line:
        assert err.strip() == lines[0], err[-3000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def run_dirs(tmp: Path, system: str) -> list[Path]:
    root = tmp / "runs" / system
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.exists() else []


def state(run_dir: Path) -> dict[str, Any]:
    return json.loads((run_dir / "state.json").read_text())

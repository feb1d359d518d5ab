"""What the benchmark scripts share: finding trained checkpoints, timing, writing results."""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from leads.datasets.atomic import atomic_write_text  # noqa: E402
from leads.envs.errors import UserError  # noqa: E402

T = TypeVar("T")


def _profile(run_dir: Path) -> str | None:
    path = run_dir / "config.yaml"
    return yaml.safe_load(path.read_text()).get("profile") if path.is_file() else None


def latest_checkpoint(runs_dir: Path, system: str, method: str, seed: int, profile: str = "quick") -> Path:
    """The best checkpoint of the newest finished ``<method>-s<seed>-*`` run of ``system`` in ``profile``."""
    runs = sorted((p for p in (runs_dir / system).glob(f"{method}-s{seed}-*")
                   if (p / "state.json").is_file() and (p / "checkpoints" / "best.ckpt").is_file()
                   and _profile(p) == profile),
                  key=lambda p: (p / "state.json").stat().st_mtime)
    if not runs:
        raise UserError(f"no finished {method} run with seed {seed} and profile {profile} under {runs_dir / system}; "
                        f"train one with `python run.py --env {system} --method {method} --seed {seed} "
                        f"--profile {profile}` or pass --ckpt")
    return runs[-1] / "checkpoints" / "best.ckpt"


def best_time(repeat: int, fn: Callable[[], T]) -> tuple[T, float]:
    """``fn()``'s result and its fastest wall time over ``repeat`` runs (after one warm-up)."""
    out = fn()
    best = math.inf
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def write_json(name: str, data: Any) -> Path:
    OUT.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(OUT / name, json.dumps({"machine": machine(), "results": data}, indent=1))


def table(headers: list[str], rows: list[list[Any]]) -> str:
    """A Markdown table, as pasted into docs/benchmarks.md."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)

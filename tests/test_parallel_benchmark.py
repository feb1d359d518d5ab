"""benchmarks/parallel_runs.py and benchmarks/thread_probe.py stay runnable; the drift measure
reads seconds per step from stamped progress lines correctly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _intervals():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from parallel_runs import intervals
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return intervals


@pytest.mark.parametrize("script", ["parallel_runs.py", "thread_probe.py"])
def test_script_explains_itself(script):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--help"], capture_output=True,
                         text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage:" in out.stdout


def test_intervals_give_seconds_per_step_and_show_a_slowdown():
    intervals = _intervals()
    # 0.1 s a step for 300 steps, then 1 s a step: the drift is 10x.
    stamps = [(0.0, 0), (10.0, 100), (20.0, 200), (30.0, 300), (130.0, 400), (230.0, 500)]
    assert intervals(stamps, 100) == pytest.approx([0.1, 0.1, 0.1, 1.0, 1.0])
    # Readings closer than min_steps are merged; a short tail joins the last interval.
    assert intervals([(0.0, 0), (1.0, 10), (10.0, 100), (11.0, 110)], 100) == pytest.approx([0.1])
    assert intervals([(0.0, 0), (5.0, 50)], 100) == pytest.approx([0.1])
    assert intervals([], 100) == [] and intervals([(0.0, 0)], 100) == []

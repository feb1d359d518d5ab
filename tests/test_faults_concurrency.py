"""Runs started together on one data directory and one results file corrupt neither, and no
results row is ever lost (also after a writer died mid-line)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
import torch
from faults import ROOT, child_env, run_dirs, tiny_sets

from leads.datasets.h5 import load_split
from leads.reporting.results import append_rows, read_rows

# Fault injection: real runs in subprocesses, killed, resumed, compared (-m slow; CI runs them).
pytestmark = pytest.mark.slow

SYSTEM = "lotka_volterra"


@pytest.mark.slow
def test_two_runs_of_one_config_at_once_share_data_and_results_safely(tmp_path):
    args = [sys.executable, str(ROOT / "run.py"), "--env", SYSTEM, "--no-progress",
            *tiny_sets(SYSTEM, tmp_path, "adapt.sets=[interp]")]
    procs = [subprocess.Popen(args, env=child_env(), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    # Same config, same moment: each run got its own directory, checkpoints and summary.
    dirs = run_dirs(tmp_path, SYSTEM)
    assert len(dirs) == 2 and {d.name for d in dirs} == {dirs[0].name, dirs[0].name + "-2"}
    for d in dirs:
        assert (d / "summary.json").exists()
        assert torch.load(d / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["global_step"] == 4
    # Every row of both runs is there, whole.
    path = tmp_path / "results" / SYSTEM / "results.jsonl"
    rows = read_rows(path)
    per_run = Counter(r["run_id"] for r in rows)
    assert sorted(per_run) == sorted(d.name for d in dirs)
    assert len(set(per_run.values())) == 1 and len(rows) == len(path.read_text().splitlines())
    # The data are valid and no temporary file is left: the training splits and the three of the
    # one held-out set adapted to (a run generates no other).
    files = sorted((tmp_path / "data").rglob("*.h5"))
    assert len(files) == 6 and not list((tmp_path / "data").rglob("*.tmp"))
    assert all(torch.isfinite(load_split(f).states).all() for f in files)


def test_rows_appended_after_a_torn_line_are_kept(tmp_path):
    path = tmp_path / "results.jsonl"
    append_rows(path, [{"value": 1.0, "i": 0}])
    with open(path, "a") as f:
        f.write('{"value": 2.0, "i": 1, "tru')  # a writer killed (or out of disk) mid-row
    append_rows(path, [{"value": 3.0, "i": 2}, {"value": 4.0, "i": 3}])
    with pytest.warns(UserWarning, match="skipped 1"):
        rows = read_rows(path)
    assert [r["i"] for r in rows] == [0, 2, 3]

"""W&B online mode asked for without a reachable server: the run degrades to offline logging
with a warning, finishes, and its offline log holds the run (end to end through run.py)."""

from __future__ import annotations

import pytest
from faults import child_env, run_dirs, run_py, tiny_sets
from wandb_offline import logged

# Fault injection: real runs in subprocesses, killed, resumed, compared (-m slow; CI runs them).
pytestmark = pytest.mark.slow

SYSTEM = "lotka_volterra"


@pytest.mark.slow
def test_online_without_network_falls_back_to_offline_and_logs_the_run(tmp_path):
    env = child_env(HOME=str(tmp_path / "home"), WANDB_API_KEY="x" * 40, WANDB_BASE_URL="http://127.0.0.1:9")
    del env["WANDB_MODE"]  # the mode comes from --wandb online, as a user would ask for it
    args = ["--env", SYSTEM, "--no-progress", "--wandb", "online",
            *tiny_sets(SYSTEM, tmp_path, "logger=wandb", "adapt.sets=[interp]")]
    proc = run_py(args, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    warnings = [line for line in proc.stderr.splitlines() if "logging offline instead" in line]
    assert warnings and "unreachable" in warnings[0]
    assert "Traceback" not in proc.stderr
    (run_dir,) = run_dirs(tmp_path, SYSTEM)
    got = logged(run_dir)
    assert "train/loss" in got["history"] and any(k.startswith("test/in_domain") for k in got["history"])
    assert got["config"].get("method") == "lowrank"

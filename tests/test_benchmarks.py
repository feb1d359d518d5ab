"""The benchmark scripts stay runnable, and the adaptation hook they rely on behaves."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from leads.envs.errors import UserError
from leads.evaluation.adaptation import adapt_to_new_environments

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["datagen.py", "equations_speed.py", "equations_accuracy.py", "train_speed.py", "adapt_speed.py",
           "surrogate.py", "main_job.py", "burgers_accuracy.py", "kolmogorov_accuracy.py", "physics_integrator.py",
           "residual_fit.py", "curves.py", "step_variants.py", "identification.py"]


def _latest_checkpoint():
    """``benchmarks/common.py``'s finder (the scripts import ``common`` from their own folder)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from common import latest_checkpoint
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return latest_checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_script_imports_and_explains_itself(script):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--help"],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "usage:" in out.stdout


def test_missing_trained_run_is_one_line_naming_the_command(tmp_path):
    latest_checkpoint = _latest_checkpoint()
    (tmp_path / "gray_scott" / "lowrank-s0-abc").mkdir(parents=True)  # unfinished: no state.json
    with pytest.raises(UserError, match=r"python run\.py --env gray_scott --method lowrank --seed 0") as e:
        latest_checkpoint(tmp_path, "gray_scott", "lowrank", 0)
    assert "\n" not in str(e.value)


def test_latest_checkpoint_is_the_newest_finished_run_of_the_profile(tmp_path):
    latest_checkpoint = _latest_checkpoint()
    for name, profile in (("lowrank-s0-old", "quick"), ("lowrank-s0-new", "quick"), ("lowrank-s0-paper", "paper")):
        run = tmp_path / "gray_scott" / name
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "best.ckpt").write_bytes(b"")
        (run / "config.yaml").write_text(f"profile: {profile}\n")
        (run / "state.json").write_text("{}")
        time.sleep(0.02)  # distinct modification times
    assert latest_checkpoint(tmp_path, "gray_scott", "lowrank", 0).parent.parent.name == "lowrank-s0-new"
    assert latest_checkpoint(tmp_path, "gray_scott", "lowrank", 0, "paper").parent.parent.name == "lowrank-s0-paper"
    with pytest.raises(UserError, match="profile paper_leads"):
        latest_checkpoint(tmp_path, "gray_scott", "lowrank", 0, "paper_leads")


def test_on_check_sees_every_validation_and_its_time_is_not_counted():
    from fakes import decay_data
    from test_harness import ADAPT, _module

    module = _module("lowrank")
    states, t = decay_data(2, 2, seed=2)
    calls: list[tuple[int, torch.Tensor]] = []

    def on_check(step, current):
        calls.append((step, current.model.contexts.detach().clone()))
        time.sleep(0.3)

    cfg = {**ADAPT, "steps": 6, "val_every": 2, "patience": 10}
    start = time.perf_counter()
    adapted = adapt_to_new_environments(module, states, states, t, ["x", "y"], cfg, on_check=on_check)
    elapsed = time.perf_counter() - start
    assert [s for s, _ in calls] == [0, 2, 4, 6]
    assert not torch.equal(calls[0][1], calls[-1][1]), "on_check did not see the parameters being fitted"
    assert adapted.seconds <= elapsed - 4 * 0.3

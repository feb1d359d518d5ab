"""train.max_cpu_seconds: training stops before its CPU clock passes the budget."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from tiny import tiny_config

from leads.training.budget import CPUBudget


class _Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def cpu_seconds(self) -> float:
        return self.t


def _simulate(budget: float, step_cost: float, val_cost: float, val_every: int, max_steps: int = 1000):
    """Lightning's order of calls for one run, on a clock each step and validation advances by
    a fixed cost. Returns the step it stopped at and the clock at the end."""
    clock = _Clock()
    cb = CPUBudget(budget, clock, announce=False)
    strategy = SimpleNamespace(reduce_boolean_decision=lambda decision, all: decision)
    trainer = SimpleNamespace(global_step=0, max_steps=max_steps, val_check_batch=val_every, should_stop=False,
                              sanity_checking=False, is_global_zero=True, strategy=strategy)
    while trainer.global_step < max_steps:
        cb.on_train_batch_start(trainer)
        clock.t += step_cost
        trainer.global_step += 1
        cb.on_train_batch_end(trainer)
        if trainer.should_stop or trainer.global_step % val_every == 0:  # Lightning validates at a stop too
            cb.on_validation_start(trainer, None)
            clock.t += val_cost
            cb.on_validation_end(trainer, None)
        if trainer.should_stop:
            break
    return trainer.global_step, clock.t


def _cost_of_stopping_at(k: int, step_cost: float, val_cost: float, val_every: int) -> float:
    """k steps, the validations due before step k, and one at k."""
    return k * step_cost + ((k - 1) // val_every + 1) * val_cost


@pytest.mark.parametrize("step_cost, val_cost, val_every",
                         [(1.0, 2.0, 2), (1.0, 0.0, 5), (0.25, 4.0, 7), (2.5, 0.5, 1)])
def test_the_run_stops_at_the_last_step_whose_final_validation_ends_within_the_budget(step_cost, val_cost, val_every):
    budget = 50.0
    stopped, spent = _simulate(budget, step_cost, val_cost, val_every)
    best = max(k for k in range(1, 1000) if _cost_of_stopping_at(k, step_cost, val_cost, val_every) <= budget)
    assert stopped == best and spent == pytest.approx(_cost_of_stopping_at(best, step_cost, val_cost, val_every))
    assert spent <= budget


def test_a_budget_larger_than_the_run_changes_nothing():
    stopped, spent = _simulate(1e9, 1.0, 2.0, 5, max_steps=40)
    assert stopped == 40 and spent == 40 * 1.0 + 8 * 2.0


def test_every_rank_stops_when_one_rank_is_over_budget():
    # Under DDP each rank has its own clock: any rank over its budget stops them all.
    decisions = []
    strategy = SimpleNamespace(reduce_boolean_decision=lambda d, all: decisions.append((d, all)) or True)
    clock = _Clock()
    cb = CPUBudget(100.0, clock, announce=False)
    trainer = SimpleNamespace(global_step=1, max_steps=10, val_check_batch=5, should_stop=False,
                              is_global_zero=True, strategy=strategy)
    cb.on_train_batch_start(trainer)
    clock.t = 1.0
    cb.on_train_batch_end(trainer)
    assert decisions == [(False, False)] and trainer.should_stop


def test_noisy_costs_pass_the_budget_by_less_than_one_step():
    """Steps and validations whose costs vary (a shared machine): the run stops before the budget,
    or passes it by less than one step's cost, whatever the noise."""
    import random

    for seed in range(20):
        rng = random.Random(seed)
        clock = _Clock()
        cb = CPUBudget(30.0, clock, announce=False)
        strategy = SimpleNamespace(reduce_boolean_decision=lambda decision, all: decision)
        trainer = SimpleNamespace(global_step=0, max_steps=10_000, val_check_batch=5, should_stop=False,
                                  sanity_checking=False, is_global_zero=True, strategy=strategy)
        worst_step = 0.0
        while not trainer.should_stop:
            cb.on_train_batch_start(trainer)
            cost = rng.uniform(0.05, 0.15)
            worst_step = max(worst_step, cost)
            clock.t += cost
            trainer.global_step += 1
            cb.on_train_batch_end(trainer)
            if trainer.should_stop or trainer.global_step % 5 == 0:
                cb.on_validation_start(trainer, None)
                clock.t += rng.uniform(0.2, 0.3)
        cb.on_train_end(trainer, None)
        assert cb.stopped and clock.t - 30.0 < worst_step, seed


def test_a_cpu_budget_stops_a_real_run_and_its_summary_says_so(tmp_path, capsys):
    from leads.jobs import run_experiment

    budget = 3.0
    cfg = tiny_config("lotka_volterra", tmp_path, "train.max_steps=100000", "train.val_every=50",
                      f"train.max_cpu_seconds={budget}")
    out = run_experiment(cfg, progress=False)  # as with --no-progress: the stop is still announced
    run = out["run"]
    state = json.loads((run.run_dir / "state.json").read_text())
    assert 0 < state["global_step"] < 100000 and state["global_step"] == run.train_steps
    assert state["stop"] == "cpu_budget" and state["step_cpu_seconds"] > 0
    printed = capsys.readouterr().out
    assert "train.max_cpu_seconds=3: stopping at step" in printed
    assert f"trained {state['global_step']} of 100000 steps, stopped by the CPU budget train.max_cpu_seconds=3: " \
           in printed
    assert "within the 3 CPU s budget" in printed or "over the 3 CPU s budget: less than one step" in printed
    # The first steps (warm-up of the autograd graph, the first validation) cost more than the
    # last ones: a generous margin over the budget, not a timing target.
    assert state["train_cpu_seconds"] < budget + 1.0
    assert run.best_ckpt.exists() and (run.run_dir / "checkpoints" / "last.ckpt").exists()
    assert {r["train_steps"] for r in out["rows"]} == {state["global_step"]}
    assert {r["train_cpu_seconds"] for r in out["rows"]} == {state["train_cpu_seconds"]}
    assert {r["train_stop"] for r in out["rows"]} == {"cpu_budget"}
    assert {r["train_max_cpu_seconds"] for r in out["rows"]} == {budget}


def test_the_training_line_states_a_passed_budget_beside_one_steps_cost():
    from leads.jobs import training_line

    t = {"steps": 900, "max_steps": 1000, "seconds": 700.0, "cpu_seconds": 600.02, "stop": "cpu_budget",
         "max_cpu_seconds": 600.0, "step_cpu_seconds": 0.071}
    assert training_line(t) == ("trained 900 of 1000 steps, stopped by the CPU budget train.max_cpu_seconds=600: "
                                "700 s wall, 600.0 CPU s (0.02 s over the 600 CPU s budget: less than one step, "
                                "0.071 s)")
    assert training_line({**t, "cpu_seconds": 599.5}).endswith("(within the 600 CPU s budget)")
    assert training_line({**t, "stop": "max_steps", "steps": 1000, "max_cpu_seconds": None,
                          "segments": [{"at_step": 400, "stop": "interrupted"}]}) == (
        "trained 1000 steps (train.max_steps): 700 s wall, 600.0 CPU s; resumed after 1 interruption(s) (at step 400)")

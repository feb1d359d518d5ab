"""Adaptation as independent problems per environment: each keeps its own validation-chosen row,
stopping needs a minimum relative improvement, and held-out sets are adapted in one optimisation
then split into one exact model per set."""

from __future__ import annotations

import math

import pytest
import torch
from fakes import decay_data
from tiny import tiny_config

from leads.config.loading import load_config
from leads.envs.base import env_label
from leads.evaluation import heldout
from leads.evaluation.adaptation import (
    _make_optimizer,
    adapt_to_new_environments,
    split_environments,
    stacked_by_environment,
)
from leads.evaluation.metrics import relative_l2
from leads.evaluation.scoring import flatten_trajectories
from leads.models.forecaster import Forecaster


def module_of(method: str, n_env: int = 3) -> Forecaster:
    torch.manual_seed(0)
    cfg = load_config("lotka_volterra", "quick", [f"method={method}", "model.width=8", "model.depth=2"])
    module = Forecaster(cfg, (2,), [f"e{i}" for i in range(n_env)])
    states, t = decay_data(n_env, 2, seed=1)
    module.fit_normalization(states.flatten(0, 1), t)
    return module


def per_env_val(module: Forecaster, val: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    x, env = flatten_trajectories(val)
    with torch.no_grad():
        err = relative_l2(module.eval()(x[:, 0], t, env), x).double()
    return torch.stack([err[env == e].mean() for e in range(val.shape[0])])


@pytest.mark.parametrize("method, optimizer", [("lowrank", "adam"), ("leads", "adam"), ("coda", "lbfgs")])
def test_each_environment_keeps_the_row_of_its_own_best_check(method, optimizer):
    states, t = decay_data(4, 2, seed=2)
    val = decay_data(4, 1, seed=5)[0]
    trace = []
    cfg = {"shots": 2, "steps": 30, "lr": 0.3, "weights_lr": 3e-2, "val_every": 1, "patience": 30,
           "optimizer": optimizer, "init": "default"}
    adapted = adapt_to_new_environments(module_of(method), states, val, t, ["a", "b", "c", "d"], cfg,
                                        on_check=lambda step, m: trace.append(per_env_val(m, val, t)))
    errors = torch.stack(trace)  # (checks, n_env)
    best = errors.min(0).values
    assert torch.allclose(torch.tensor(adapted.val_rel_l2_per_env, dtype=torch.float64), best, rtol=1e-6)
    # the kept model really is, environment by environment, at those errors
    assert torch.allclose(per_env_val(adapted.module, val, t), best, rtol=1e-5)
    assert math.isclose(adapted.best_val_rel_l2, float(best.mean()), rel_tol=1e-9)


def test_environments_do_reach_their_best_at_different_checks():
    # Without this the test above would not tell per-environment rows from one global choice.
    states, t = decay_data(4, 2, seed=2)
    val = decay_data(4, 1, seed=5)[0]
    trace = []
    cfg = {"shots": 2, "steps": 30, "lr": 0.3, "val_every": 1, "patience": 30, "optimizer": "adam"}
    adapt_to_new_environments(module_of("lowrank"), states, val, t, ["a", "b", "c", "d"], cfg,
                              on_check=lambda step, m: trace.append(per_env_val(m, val, t)))
    assert len(set(torch.stack(trace).argmin(0).tolist())) > 1


def test_a_minimum_relative_improvement_stops_adaptation_earlier():
    states, t = decay_data(2, 2, seed=2)
    cfg = {"shots": 2, "steps": 40, "lr": 1e-2, "val_every": 2, "patience": 3, "optimizer": "adam"}
    patient = adapt_to_new_environments(module_of("lowrank", 2), states, states, t, ["x", "y"],
                                        {**cfg, "min_rel_improvement": 0.0})
    strict = adapt_to_new_environments(module_of("lowrank", 2), states, states, t, ["x", "y"],
                                       {**cfg, "min_rel_improvement": 0.45})
    assert patient.steps == 40  # small steady gains count when any improvement does
    # Nothing halves the error between checks here, so it stops after `patience` checks.
    assert strict.steps == cfg["patience"] * cfg["val_every"]
    assert strict.best_val_rel_l2 <= adapt_to_new_environments(
        module_of("lowrank", 2), states, states, t, ["x", "y"], {**cfg, "steps": 0}).best_val_rel_l2


@pytest.mark.parametrize("method", ["lowrank", "coda", "lora", "leads", "per_env"])
def test_a_joint_adaptation_splits_into_exact_per_set_models(method):
    module = module_of(method)
    states, t = decay_data(5, 2, seed=2)
    joint = adapt_to_new_environments(module, states, states, t, ["a", "b", "c", "d", "e"],
                                      {"shots": 2, "steps": 4, "val_every": 1, "weights_lr": 1e-2})
    groups = [[0, 1], [2, 3, 4]]
    parts = split_environments(module, joint.module, groups)
    x, env = flatten_trajectories(states)
    with torch.no_grad():
        whole = joint.module(x[:, 0], t, env)
        for rows, part in zip(groups, parts, strict=True):
            assert part.env_names == [joint.module.env_names[i] for i in rows]
            mine = torch.isin(env, torch.tensor(rows))
            local = torch.searchsorted(torch.tensor(rows), env[mine])
            # the same numbers up to float rounding (a smaller batch sums in another order)
            assert torch.allclose(part(x[mine, 0], t, local), whole[mine], rtol=1e-5, atol=1e-6)
            assert not any(p.requires_grad for p in part.parameters())


def test_stacked_by_environment():
    assert stacked_by_environment([torch.nn.Parameter(torch.zeros(3, 4)), torch.nn.Parameter(torch.zeros(3))], 3)
    assert not stacked_by_environment([torch.nn.Parameter(torch.zeros(4, 3))], 3)
    assert not stacked_by_environment([], 3)


def _count_adaptations(monkeypatch) -> list[list[str]]:
    calls = []
    original = heldout.adapt_to_new_environments

    def counting(module, adapt_states, val_states, t, env_names, *a, **kw):
        calls.append(list(env_names))
        return original(module, adapt_states, val_states, t, env_names, *a, **kw)

    monkeypatch.setattr(heldout, "adapt_to_new_environments", counting)
    return calls


@pytest.mark.parametrize("joint", [True, False])
def test_heldout_sets_are_adapted_together_or_one_after_the_other(joint, tmp_path, monkeypatch):
    from leads.training.train import train

    cfg = tiny_config("lotka_volterra", tmp_path, f"adapt.joint={str(joint).lower()}")
    module = train(cfg, progress=False).module
    calls = _count_adaptations(monkeypatch)
    sets = heldout.heldout_sets(cfg)
    results = heldout.evaluate_heldout_sets(module, cfg, sets, progress=False)
    assert len(calls) == (1 if joint else len(sets))
    for name, r in results.items():
        assert r.adapted.module.env_names == [env_label(e) for e in sets[name]]
        assert len(r.adapted.val_rel_l2_per_env) == len(sets[name])
        assert math.isclose(r.adapted.best_val_rel_l2, sum(r.adapted.val_rel_l2_per_env) / len(sets[name]))
    if joint:
        # one optimisation: the same steps, its seconds shared out in proportion to the environments
        assert len({r.adapted.steps for r in results.values()}) == 1
        per_env = [r.adapted.seconds / len(sets[n]) for n, r in results.items()]
        assert max(per_env) == pytest.approx(min(per_env))


def test_a_method_without_stacked_environment_rows_is_adapted_set_by_set(tmp_path, monkeypatch):
    from leads.training.train import train

    cfg = tiny_config("lotka_volterra", tmp_path)
    module = train(cfg, progress=False).module
    calls = _count_adaptations(monkeypatch)
    monkeypatch.setattr(heldout, "stacked_by_environment", lambda params, n: False)
    sets = heldout.heldout_sets(cfg)
    heldout.evaluate_heldout_sets(module, cfg, sets, progress=False)
    assert len(calls) == len(sets)


def test_lbfgs_keeps_stepping_on_a_loss_with_tiny_gradients():
    # A joint loss is a mean over environments in normalised units: one environment still far from
    # its optimum can have gradients below L-BFGS's default tolerance (1e-7), which skipped its steps.
    theta = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = _make_optimizer("lbfgs", [theta], 1.0)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = 1e-6 * (theta - torch.tensor([0.5, 0.25])).square().sum()
        loss.backward()
        return loss

    for _ in range(10):
        opt.step(closure)
    assert torch.allclose(theta.detach(), torch.tensor([0.5, 0.25]), atol=1e-4)

"""Levenberg-Marquardt adaptation (``adapt.optimizer: gauss_newton``): its gradient is the
objective's, its steps never raise the objective, it stops where no step lowers it, it identifies
physical parameters, and it refuses what it cannot fit."""

from __future__ import annotations

import pytest
import torch
from fakes import decay_data
from tiny import tiny_config

from leads.config.loading import load_config
from leads.config.schema import RunConfig
from leads.envs.errors import UserError
from leads.evaluation.adaptation import _loss, adapt_to_new_environments
from leads.evaluation.gauss_newton import LevenbergMarquardt
from leads.evaluation.heldout import evaluate_heldout
from leads.evaluation.scoring import flatten_trajectories
from leads.models.forecaster import Forecaster
from leads.training.train import train


def module_of(*overrides: str, n_env: int = 9) -> Forecaster:
    """An untrained forecaster for Lotka-Volterra's 9 training environments (known terms' rows follow them)."""
    torch.manual_seed(0)
    cfg = load_config("lotka_volterra", "quick", ["model.width=8", "model.depth=2", *overrides])
    module = Forecaster(cfg, (2,), [f"e{i}" for i in range(n_env)])
    states, t = decay_data(n_env, 2, seed=1)
    module.fit_normalization(states.flatten(0, 1), t)
    for p in module.parameters():
        p.requires_grad_(False)
    for p in module.env_parameters():
        p.requires_grad_(True)
    return module


def problem(module: Forecaster) -> LevenbergMarquardt:
    states, t = decay_data(len(module.env_names), 2, seed=2)
    x, env = flatten_trajectories(states)
    with torch.no_grad():  # environments away from each other and from zero
        for p in module.env_parameters():
            p.add_(0.3 * torch.randn_like(p))
    return LevenbergMarquardt(module, module.env_parameters(), x, t, env, len(module.env_names))


@pytest.mark.parametrize("overrides", [
    ("method=lowrank",),
    ("method=coda",),  # a context penalty
    # learned physical parameters beside the context, and APHYNITY's penalty on the residual
    ("method=lowrank", "physics.terms=[growth,death]"),
])
def test_its_gradient_is_the_objective_s_and_its_matrix_is_symmetric_positive(overrides):
    module = module_of(*overrides)
    lm = problem(module)
    loss, H, g = lm.normal_equations()
    params = module.env_parameters()
    expected = _loss(module, lm.x, lm.t, lm.env)
    grads = torch.autograd.grad(expected, params)
    flat = torch.cat([d.reshape(lm.n_env, -1) for d in grads], 1).double()
    assert float(loss) == pytest.approx(float(expected.detach()), rel=1e-6)
    assert g.shape == flat.shape == (lm.n_env, sum(p[0].numel() for p in params))
    torch.testing.assert_close(g, flat, rtol=1e-4, atol=1e-7 * float(flat.abs().max()))
    assert float(flat.abs().max()) > 0
    torch.testing.assert_close(H, H.transpose(1, 2))
    assert float(torch.linalg.eigvalsh(H).min()) >= -1e-9 * float(H.abs().max())


def test_each_step_lowers_the_objective_until_none_can():
    module = module_of("method=lowrank")
    lm = problem(module)
    losses = [float(lm.step()) for _ in range(40)]
    final = float(_loss(module, lm.x, lm.t, lm.env).detach())
    assert all(b <= a for a, b in zip(losses, losses[1:], strict=False))
    assert final < 0.1 * losses[0]
    # and adaptation stops once a step finds nothing lower, before its step budget
    states, t = decay_data(3, 2, seed=2)
    val = decay_data(3, 1, seed=5)[0]
    cfg = {"shots": 2, "steps": 500, "val_every": 10, "patience": 500, "optimizer": "gauss_newton", "init": "default"}
    adapted = adapt_to_new_environments(module_of("method=lowrank", n_env=3), states, val, t, ["a", "b", "c"], cfg,
                                        progress=False)
    assert adapted.steps < 500 and adapted.optimizer == "gauss_newton"


@pytest.mark.slow
def test_it_identifies_physical_parameters_in_a_few_steps(tmp_path):
    # Complete physics, no residual, as tests/test_physics.py's identification with L-BFGS (100
    # steps, 1%): Levenberg-Marquardt from the same trained model, at most 30 steps, and it stops
    # by itself (no step lowers the objective) before them.
    cfg = RunConfig.of(tiny_config("lotka_volterra", tmp_path, "physics.terms=all", "physics.residual=false",
                                   "train.max_steps=400", "train.val_every=200", "train.lr=2e-2",
                                   "adapt.steps=30", "adapt.val_every=1", "data.window=null",
                                   "adapt.optimizer=gauss_newton"))
    run = train(cfg, progress=False)
    result = evaluate_heldout(run.module, cfg, "interp")
    assert result.adapted.optimizer == "gauss_newton" and result.adapted.steps < 30
    for row in result.identified:
        for p, ident in row.items():
            assert ident.rel_error <= 1e-4, (p, ident)  # float32 rollouts: ~1e-6 measured


def test_it_refuses_a_method_that_adapts_weight_tensors():
    states, t = decay_data(2, 1, seed=2)
    cfg = {"shots": 1, "steps": 3, "val_every": 1, "patience": 3, "optimizer": "gauss_newton", "init": "default"}
    with pytest.raises(UserError, match="adapt.optimizer=auto") as e:
        adapt_to_new_environments(module_of("method=leads", n_env=2), states, states, t, ["a", "b"], cfg,
                                  progress=False)
    assert "\n" not in str(e.value)

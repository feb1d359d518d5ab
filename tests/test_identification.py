"""Identification of physical parameters on new environments: every environment of a set to the
tolerance, inside, at the edge of and beyond the training range; adaptation that stops at its
step cap says so; a parameter the fit cannot determine is reported as such, not as a number;
a poorly fitted environment is flagged; the worst parameter is reported beside the mean."""

from __future__ import annotations

import math

import pytest
import torch
from tiny import tiny_config

from leads.config.loading import system_of
from leads.config.schema import RunConfig
from leads.datasets.cache import ensure_split
from leads.datasets.h5 import load_split
from leads.envs.base import env_label
from leads.envs.lotka_volterra import LotkaVolterra
from leads.envs.registry import SYSTEMS
from leads.evaluation.adaptation import adapt_to_new_environments
from leads.evaluation.heldout import evaluate_heldout_sets
from leads.evaluation.identifiability import DETERMINED
from leads.evaluation.identification import POOR_FIT, POOR_FIT_ABSOLUTE, Identified, identify, poor_fits, worst
from leads.jobs import format_summary
from leads.models.forecaster import Forecaster
from leads.reporting.identification import identification_rows, summary_entry, summary_lines

# Lotka-Volterra's training environments are (beta, delta) in {0.5, 0.75, 1}^2.
EDGES = [
    {"beta": 0.625, "delta": 0.875},  # inside
    {"beta": 0.5, "delta": 1.0},      # a corner of the training range
    {"beta": 1.25, "delta": 1.25},    # beyond it: the fastest dynamics (the environment that once came out 21% off)
    {"beta": 0.375, "delta": 0.375},  # beyond, below
    {"beta": 1.4, "delta": 0.3},      # far beyond, in both directions
]
TOLERANCE = 1e-2  # what the identification benchmarks claim (docs/identification.md)


def _setup(tmp, *overrides: str) -> tuple[RunConfig, Forecaster]:
    """Complete Lotka-Volterra physics, no network, one adaptation trajectory per new environment.
    Untrained: without a network, a new environment's parameters start at the mean of the
    training environments' (here their true values), which training would only refine."""
    cfg = RunConfig.of(tiny_config("lotka_volterra", tmp, "physics.terms=all", "physics.residual=false",
                                   "data.n_adapt=1", "data.window=null", *overrides))
    system = system_of(cfg)
    train = load_split(ensure_split(system, cfg.data, "train"))
    torch.manual_seed(0)
    module = Forecaster(cfg, system.state_shape, [env_label(e) for e in system.train_envs])
    module.fit_normalization(train.states.flatten(0, 1), torch.as_tensor(train.t, dtype=train.states.dtype))
    return cfg, module


@pytest.fixture(scope="module")
def lotka_volterra(tmp_path_factory):
    return _setup(tmp_path_factory.mktemp("identification"))


def _adapt(cfg, module, envs, name="edges", **adapt):
    system = system_of(cfg)
    data = {k: load_split(ensure_split(system, cfg.data, f"{k}_{name}", envs)) for k in ("adapt", "val")}
    t = torch.as_tensor(data["adapt"].t, dtype=data["adapt"].states.dtype)
    return adapt_to_new_environments(module, data["adapt"].states, data["val"].states, t,
                                     [env_label(e) for e in envs], {**cfg.adapt.to_dict(), **adapt}, envs=envs,
                                     progress=False)


def test_every_environment_inside_at_the_edge_and_beyond_the_training_range_is_identified(lotka_volterra):
    cfg, module = lotka_volterra
    envs = [LotkaVolterra().complete_env(e) for e in EDGES]
    adapted = _adapt(cfg, module, envs, steps=100)  # the default optimizer
    assert adapted.converged, adapted.stop
    identified = identify(adapted.module, envs, adapted.physics_rel_std_errors)
    for env, row in zip(envs, identified, strict=True):
        assert set(row) == {"alpha", "beta", "gamma", "delta"}
        for p, ident in row.items():
            assert ident.true == pytest.approx(env[p])
            assert ident.rel_error <= TOLERANCE, (env, p, ident)
            assert ident.determined and ident.rel_std_error <= TOLERANCE, (env, p, ident)
    assert worst(identified).rel_error <= TOLERANCE


def test_adaptation_stopped_by_its_step_cap_is_reported_as_capped(lotka_volterra, tmp_path):
    cfg, module = lotka_volterra
    cfg = cfg.replace(adapt=cfg.adapt.replace(steps=2, val_every=1, patience=10))
    sets = {"beyond": [LotkaVolterra().complete_env(e) for e in EDGES[2:4]]}
    (result,) = evaluate_heldout_sets(module, cfg, sets, progress=False).values()
    assert result.adapted.steps == 2 and result.adapted.stop == "capped" and not result.adapted.converged
    entry = summary_entry(result)
    assert entry["adapt_stop"] == "capped"
    by_env = {env_label(e): {p: {"estimate": i.estimate, "true": i.true, "rel_error": i.rel_error,
                                 "rel_std_error": i.rel_std_error, "determined": i.determined}
                             for p, i in row.items()} for e, row in zip(result.envs, result.identified, strict=True)}
    assert "stopped at its 2-step cap, not converged" in summary_lines("beyond", by_env, entry)[0]
    rows = identification_rows({"adapt_stop": result.adapted.stop}, "beyond", result.envs, result.identified)
    assert {r["adapt_stop"] for r in rows} == {"capped"}
    split = {"rel_l2": (0.1, 0.0), "rel_l2_extrap": (0.1, 0.0), "mse": (0.1, 0.0), "adapt_steps": 2,
             "adapt_seconds": 1.0, "adapt_stop": "capped"}
    table = format_summary({"system": "lotka_volterra", "method": "phys[all]", "seed": 0, "run_dir": "r",
                            "splits": {"beyond": split}})
    assert "2 st 1.0s capped" in table
    assert "capped" not in format_summary({"system": "lotka_volterra", "method": "phys[all]", "seed": 0,
                                           "run_dir": "r", "splits": {"beyond": {**split, "adapt_stop": "plateau"}}})
    # and the same adaptation with room to finish does not say so
    done = evaluate_heldout_sets(module, cfg.replace(adapt=cfg.adapt.replace(steps=100)), sets, progress=False)
    assert done["beyond"].adapted.stop in ("converged", "plateau") and done["beyond"].adapted.converged


class ProductRates(LotkaVolterra):
    """Lotka-Volterra where predation and conversion both run at the rate beta * delta:
    x' = alpha x - beta delta x y, y' = beta delta x y - gamma y. The trajectories determine
    alpha, gamma and the product beta * delta, never beta or delta alone."""

    terms = {"growth": ("alpha",), "interaction": ("beta", "delta"), "death": ("gamma",)}

    def term_interaction(self, t, u, p):
        rate = p["beta"] * p["delta"] * u[:, 0] * u[:, 1]
        return torch.stack((-rate, rate), dim=1)


def test_a_parameter_the_trajectory_cannot_determine_is_reported_as_such(tmp_path, monkeypatch):
    monkeypatch.setitem(SYSTEMS, "lotka_volterra", ProductRates)
    cfg, module = _setup(tmp_path)
    envs = [LotkaVolterra().complete_env(e) for e in EDGES[:2]]
    adapted = _adapt(cfg, module, envs, steps=100)
    identified = identify(adapted.module, envs, adapted.physics_rel_std_errors)
    for env, row in zip(envs, identified, strict=True):
        assert row["alpha"].determined and row["gamma"].determined
        assert row["alpha"].rel_error <= TOLERANCE and row["gamma"].rel_error <= TOLERANCE
        for p in ("beta", "delta"):
            assert not row[p].determined and row[p].rel_std_error > DETERMINED, (p, row[p])
        product = row["beta"].estimate * row["delta"].estimate
        assert product == pytest.approx(env["beta"] * env["delta"], rel=TOLERANCE)  # what the data do determine
    # reported without a number, and left out of the worst case
    lines = summary_lines("edges", {env_label(e): {p: {**i.__dict__, "determined": i.determined}
                                                   for p, i in row.items()}
                                    for e, row in zip(envs, identified, strict=True)}, None)
    assert all("beta not determined by the fit" in line and "delta not determined" in line for line in lines[1:])
    assert worst(identified).parameter in ("alpha", "gamma")
    rows = identification_rows({}, "edges", envs, identified)
    (overall,) = [r for r in rows if r["metric"] == "param_rel_error_max"]
    assert overall["n_undetermined"] == 2 * len(envs) and overall["worst_parameter"] in ("alpha", "gamma")
    assert {r["determined"] for r in rows if r["metric"] in ("param/beta", "param/delta")} == {False}


def test_worst_and_poor_fits():
    row = {"a": Identified(1.0, 1.0, 0.001, 1e-5), "b": Identified(2.2, 2.0, 0.1, 1e-4)}
    undetermined = {"a": Identified(1.0, 1.0, 0.002, 1e-5), "b": Identified(9.0, 2.0, 3.5, math.inf)}
    w = worst([row, undetermined])
    assert (w.rel_error, w.environment, w.parameter) == (0.1, 0, "b")  # b of environment 1 is not determined
    assert worst([{"b": undetermined["b"]}]) is None
    assert poor_fits([1e-4, 0.5, math.inf, math.nan], 2e-4) == [False, True, True, True]
    assert poor_fits([0.99 * POOR_FIT * 1e-3, 1.01 * POOR_FIT * 1e-3], 1e-3) == [False, True]
    # a model that fits its own training environments badly is no reference: 10% off is poor anyway
    assert poor_fits([0.5 * POOR_FIT_ABSOLUTE, POOR_FIT_ABSOLUTE], 0.2) == [False, True]
    assert poor_fits([0.05, 0.5], math.nan) == [False, True]  # no reference: the absolute bound alone

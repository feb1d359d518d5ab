"""Partial observations (data.observe) through the data pipeline, and every method forecasting from
them with hidden channels (forecaster.latent_channels, leads/models/latent.py)."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_config

from leads.config.schema import RunConfig
from leads.datasets.cache import prepare_split
from leads.datasets.h5 import load_split
from leads.envs.errors import UserError
from leads.envs.registry import get_system
from leads.jobs import run_experiment
from leads.models.forecaster import Forecaster

TINY_QG = {"size": 8, "solver_size": 16, "spinup_window": 2 * 86400.0, "spinup_growth": 0.0}


def data_cfg(tmp_path, **kw):
    return {"dir": str(tmp_path / "data"), "n_train": 2, "n_val": 1, "n_test": 1, "n_adapt": 1, "n_adapt_val": 1,
            "n_test_heldout": 1, "gen_batch_size": 16, **kw}


def test_observed_split_stores_only_the_observation(tmp_path):
    """An observed split is computed from the whole state's split (generated first if missing):
    the same trajectories, solved once."""
    system = get_system("qg_ocean", **TINY_QG)
    ssh = prepare_split(system, data_cfg(tmp_path, observe="ssh"), "train", progress=False)
    full = prepare_split(system, data_cfg(tmp_path), "train", progress=False)
    assert ssh.generated and not full.generated  # the whole state's file was made on the way
    assert ssh.path != full.path and full.path.parent == ssh.path.parent  # one physics, two files
    a, b = load_split(full.path), load_split(ssh.path)
    assert b.states.shape == (*a.states.shape[:3], 1, 8, 8) and b.attrs["state_names"] == ["psi1"]
    params = a.params.repeat_interleave(a.n_traj, dim=0)
    expected = system.observe(a.states.flatten(0, 1).double(), params, "ssh").float()
    torch.testing.assert_close(b.states.flatten(0, 1), expected, rtol=1e-6, atol=1e-6 * float(expected.abs().max()))
    direct = system.observe(system.generate(a.seeds[0].tolist(), params[:a.n_traj], a.t.numpy()), params[:a.n_traj],
                            "ssh").float()
    torch.testing.assert_close(b.states[0], direct, rtol=1e-5, atol=1e-5 * float(direct.abs().max()))
    assert not prepare_split(system, data_cfg(tmp_path, observe="ssh"), "train", progress=False).generated


@pytest.mark.parametrize("system, name", [("qg_ocean", "velocity"), ("lotka_volterra", "ssh")])
def test_unknown_observation_is_a_one_line_error(tmp_path, system, name):
    with pytest.raises(UserError) as e:
        prepare_split(get_system(system, **(TINY_QG if system == "qg_ocean" else {})),
                      data_cfg(tmp_path, observe=name), "train", progress=False)
    assert "\n" not in str(e.value) and "observe" in str(e.value) and name in str(e.value)


def test_hidden_channels_are_integrated_and_only_the_observed_ones_returned(tmp_path):
    cfg = RunConfig.of(tiny_config("qg_ocean", tmp_path, "data.observe=ssh", "forecaster.latent_channels=2"))
    module = Forecaster(cfg, (1, 8, 8), ["a", "b"])
    u = torch.randn(3, 4, 1, 8, 8)
    t = torch.arange(4, dtype=torch.float32)
    env = torch.tensor([0, 1, 0])
    pred = module(u[:, 0], t, env)
    assert pred.shape == u.shape and torch.equal(pred[:, 0], u[:, 0])
    # the hidden channels start from the encoder: it gets gradients through the forecast
    pred[:, -1].square().sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.encoder.parameters())
    # a teacher-forced restart encodes the true observed state as a forecast's start does
    forced = module(u[:, 0], t, env, truth=u, teacher_forcing=1.0)
    torch.testing.assert_close(forced[:, 2], module(u[:, 1], t[:2], env)[:, 1], rtol=1e-4, atol=1e-4)


def test_known_terms_need_the_whole_state(tmp_path):
    cfg = RunConfig.of(tiny_config("qg_ocean", tmp_path, "data.observe=ssh", "physics.terms=all",
                                   "physics.integrator=etdrk4"))
    with pytest.raises(UserError) as e:
        Forecaster(cfg, (1, 8, 8), ["a"] * 8)
    assert "\n" not in str(e.value) and "physics.terms" in str(e.value)


@pytest.mark.slow
def test_every_method_forecasts_the_sea_surface_height(tmp_path):
    """From SSH alone, with hidden channels (and one method without: a Markov model of SSH)."""
    for method, latent in [(m, 1) for m in ("erm", "per_env", "leads", "coda", "lowrank", "lora")] + [("erm", 0)]:
        cfg = tiny_config("qg_ocean", tmp_path, f"method={method}", "data.observe=ssh",
                          f"forecaster.latent_channels={latent}", "train.max_steps=2", "adapt.sets=[interp]")
        out = run_experiment(cfg, progress=False)
        summary = out["summary"]
        for split in ("in_domain", "interp"):
            assert summary["splits"][split]["rel_l2"][0] >= 0
        adapted = summary["splits"]["interp"]["adapted_params_per_env"]
        assert (adapted == 0) == (method == "erm"), (method, adapted)
        assert out["run"].module.u_mean.shape == (1, 1, 1)  # the model saw one observed channel

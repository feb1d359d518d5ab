"""What makes our LEADS baseline follow LEADS' Lotka-Volterra protocol: the penalty in physical
units, training without normalisation, every environment from the same initial states."""

from __future__ import annotations

import numpy as np
import torch
from tiny import tiny_config

from leads.config.loading import load_config, system_of
from leads.datasets.cache import ensure_split
from leads.datasets.h5 import load_split
from leads.datasets.seeds import check_disjoint, split_seeds
from leads.models.adapters import Cond
from leads.models.forecaster import Forecaster
from leads.models.methods import build_model


def _leads_module(normalize: bool) -> Forecaster:
    cfg = load_config("lotka_volterra", "paper_leads", [f"forecaster.normalize={str(normalize).lower()}",
                                                        "method=leads", "model.width=16"])
    torch.manual_seed(0)
    return Forecaster(cfg, (2,), [f"e{i}" for i in range(10)])


def test_leads_penalty_is_computed_in_physical_units():
    """LEADS' ratio ||g_e(x)||^2 / ||x||^2 of physical states and rates, whatever the normalisation."""
    module = _leads_module(normalize=True)
    module.u_mean.fill_(1.3)
    module.u_std.fill_(0.4)
    module.du_std.fill_(0.25)
    g = torch.Generator().manual_seed(1)
    states = 1 + torch.rand(10, 5, 2, generator=g, dtype=torch.float64)  # (trajectories, times, state)
    env = torch.arange(10)
    module.double()
    _, penalty = module.objective(states, states, env)
    raw = states.flatten(0, 1)
    env_flat = env.repeat_interleave(5)
    g_raw = 0.25 * module.model.g((raw - 1.3) / 0.4, Cond(env_flat))
    ratio = g_raw.square().sum(1) / raw.square().sum(1)
    expected = module.model.cfg["lambda"] * torch.stack([ratio[env_flat == e].mean() for e in range(10)]).sum()
    torch.testing.assert_close(penalty, expected)


def test_a_method_without_raw_states_keeps_its_own_penalty():
    model = build_model({"name": "mlp", "width": 8}, {"name": "leads", "lambda": 0.5}, (2,), 3).double()
    u = torch.rand(6, 2, dtype=torch.float64) + 1
    env = torch.tensor([0, 0, 1, 1, 2, 2])
    torch.testing.assert_close(model.penalty(u, env), model.penalty(u, env, raw=u, out_scale=torch.ones(1, 1)))


def test_without_normalisation_the_model_works_in_physical_units(tmp_path):
    cfg = tiny_config("lotka_volterra", tmp_path, "forecaster.normalize=false")
    module = Forecaster(cfg, (2,), ["a", "b"])
    states = 1 + torch.rand(4, 6, 2)
    module.fit_normalization(states, torch.linspace(0, 1, 6))
    assert module.u_mean.eq(0).all() and module.u_std.eq(1).all() and module.du_std.eq(1).all()
    normalised = Forecaster(tiny_config("lotka_volterra", tmp_path), (2,), ["a", "b"])
    normalised.fit_normalization(states, torch.linspace(0, 1, 6))
    assert not normalised.u_std.eq(1).all()


def test_same_initial_states_across_environments_never_across_splits():
    shared = {k: split_seeds(0, k, None, 10, 3, same_across_envs=True) for k in ("train", "val", "test")}
    for seeds in shared.values():
        assert (seeds == seeds[:1]).all() and len(np.unique(seeds[0])) == 3
    check_disjoint(shared)  # repeats inside a split are allowed, across splits never
    assert not np.array_equal(split_seeds(0, "train", None, 10, 3), shared["train"])


def test_leads_protocol_data_start_every_environment_from_the_same_states(tmp_path):
    cfg = load_config("lotka_volterra", "paper_leads", [f"data.dir={tmp_path}", "data.n_test=2"])
    system = system_of(cfg)
    train = load_split(ensure_split(system, cfg.data, "train", progress=False))
    test = load_split(ensure_split(system, cfg.data, "test", progress=False))
    for split in (train, test):
        first = split.states[:, :, 0]
        assert torch.equal(first, first[:1].expand_as(first))
        assert not torch.equal(split.states[0, :, 1], split.states[1, :, 1])  # different dynamics per env
    assert not torch.equal(train.states[0, 0, 0], test.states[0, 0, 0])


def test_paper_leads_follows_leads_recipe():
    cfg = load_config("lotka_volterra", "paper_leads")
    assert not cfg.forecaster.normalize and cfg.data.same_initial_states
    assert (cfg.train.lr, cfg.train.scheduler, cfg.train.grad_clip, cfg.train.weight_decay) == (1e-3, "none", None, 0)
    assert cfg.methods["leads"]["lambda"] == 2e-4 and cfg.train.max_steps == 120000
    tf = cfg.forecaster.teacher_forcing  # LEADS: 0.99 ** i, i = 1 + step // 10
    assert (tf.start, tf.decay, tf.every) == (0.99, 0.99, 10)


def test_paper_leads_cpu_is_paper_leads_with_the_per_capita_networks():
    ours = load_config("lotka_volterra", "paper_leads_cpu").to_dict()
    same = load_config("lotka_volterra", "paper_leads", [
        "model.per_capita=true", "train.max_steps=15000", "train.val_every=500", "train.compile=true"]).to_dict()
    assert ours.pop("profile") == "paper_leads_cpu" and same.pop("profile") == "paper_leads"
    assert ours == same

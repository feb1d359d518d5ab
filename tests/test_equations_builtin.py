"""Gray-Scott and Lotka-Volterra written as system files (systems/) are the hand-written
systems: the same data from the same seeds, the same named terms with the same values and the
same parameter gradients in a hybrid model's physics part."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from leads.envs.equations import load_system
from leads.envs.registry import get_system
from leads.models.physics import PhysicsPart

SYSTEMS_DIR = Path(__file__).resolve().parents[1] / "systems"
PAIRS = {"gray_scott": "gray_scott.yaml", "lotka_volterra": "lotka_volterra.yaml"}


def _pair(name: str, **overrides: object) -> tuple:
    file_overrides = {"solver": {"method": "etdrk4", "step": 0.25}} if overrides.get("solver") == "etdrk4" else {}
    return get_system(name, **overrides), load_system(SYSTEMS_DIR / PAIRS[name], **file_overrides)


@pytest.mark.parametrize("name, overrides", [("gray_scott", {}), ("gray_scott", {"solver": "etdrk4"}),
                                             ("lotka_volterra", {})])
def test_same_data_from_the_same_seeds(name, overrides):
    built_in, from_file = _pair(name, **overrides)
    assert from_file.param_names == built_in.param_names and from_file.state_names == built_in.state_names
    assert from_file.train_envs == built_in.train_envs and from_file.heldout == built_in.heldout
    assert (from_file.dt, from_file.horizon) == (built_in.dt, built_in.horizon)
    envs = [*built_in.train_envs[::2], *built_in.heldout["extrap"][::2]]
    seeds = [11 * i + 3 for i in range(len(envs))]
    params = built_in.env_tensor(envs)
    assert torch.equal(from_file.env_tensor(envs), params)
    assert torch.equal(from_file.sample_initial_states(seeds), built_in.sample_initial_states(seeds))
    # Over the test horizon [0, 2T], float64 solves.
    t = built_in.times(2 * built_in.horizon)
    a, b = from_file.generate(seeds, params, t), built_in.generate(seeds, params, t)
    rel = (a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1)
    assert float(rel.max()) < 1e-6, rel


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_same_terms_values_and_parameter_gradients(name):
    built_in, from_file = _pair(name)
    assert from_file.terms == built_in.terms and from_file.constants == built_in.constants
    assert from_file.spectral_terms == built_in.spectral_terms
    envs = built_in.train_envs
    torch.manual_seed(0)
    u = torch.rand(len(envs), *built_in.state_shape, dtype=torch.float64) + 0.1
    env = torch.arange(len(envs))
    w = torch.randn_like(u)
    for terms in [[n] for n in built_in.terms] + [list(built_in.terms)]:
        outs, grads = [], []
        for system in (built_in, from_file):
            part = PhysicsPart(system, terms, envs).double()
            out = part(0.7, u, env)
            (grad,) = torch.autograd.grad((out * w).sum(), [part.theta]) if part.names else (torch.zeros(0),)
            outs.append(out)
            grads.append(grad)
        scale = float(outs[0].detach().abs().max())
        assert torch.allclose(outs[1], outs[0], rtol=1e-12, atol=1e-13 * scale), terms
        assert torch.allclose(grads[1], grads[0], rtol=1e-10, atol=1e-12), terms
    values = built_in.parameter_values(built_in.env_tensor(envs))
    # (The built-in one takes its constants through float32.)
    assert from_file.stiffness(tuple(built_in.terms), values) == pytest.approx(
        built_in.stiffness(tuple(built_in.terms), values), rel=1e-6)
    if built_in.spectral_terms:
        names = tuple(built_in.terms)
        assert torch.allclose(from_file.linear_symbol(names, values), built_in.linear_symbol(names, values),
                              rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_same_quick_run_settings(name):
    from leads.config.loading import load_config

    built_in, from_file = load_config(name).to_dict(), load_config(str(SYSTEMS_DIR / PAIRS[name])).to_dict()
    for key in ("system", "system_name"):
        built_in.pop(key), from_file.pop(key)
    assert from_file == built_in

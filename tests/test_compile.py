"""train.compile: training calls the network through torch.compile, and computes what eager training computes."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_config

import leads.models.forecaster as forecaster_module
from leads.models.forecaster import Forecaster
from leads.training.train import run_id_of, train


class CountingCompile:
    """``torch.compile`` that counts the calls of what it returns."""

    def __init__(self) -> None:
        self.calls = 0
        self.compile = torch.compile

    def __call__(self, fn, **kw):
        compiled = self.compile(fn, **kw)

        def counted(*args, **kwargs):
            self.calls += 1
            return compiled(*args, **kwargs)

        return counted


def _weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.slow
@pytest.mark.parametrize("system", ["lotka_volterra", "gray_scott"])
def test_a_compiled_run_trains_the_eager_runs_weights_through_the_compiled_network(tmp_path, monkeypatch, system):
    spy = CountingCompile()
    monkeypatch.setattr(forecaster_module.torch, "compile", spy)
    eager = train(tiny_config(system, tmp_path / "eager"), progress=False)
    assert spy.calls == 0
    compiled = train(tiny_config(system, tmp_path / "compiled", "train.compile=true"), progress=False)
    # every training step's rollout and every validation went through the compiled network
    assert spy.calls >= 4 * (compiled.module.cfg.data.window or 1)
    a, b = (_weights(run.run_dir / "checkpoints" / "last.ckpt") for run in (eager, compiled))
    assert a.keys() == b.keys()  # the compiled function is not a submodule
    for name in a:
        assert torch.allclose(a[name], b[name], rtol=1e-4, atol=1e-6), name
    assert compiled.run_id == eager.run_id  # how a step is computed is not what is trained


@pytest.mark.slow
def test_after_the_fit_the_module_calls_its_eager_network(tmp_path):
    cfg = tiny_config("lotka_volterra", tmp_path, "train.compile=true", "train.ema=0.5")
    run = train(cfg, progress=False)
    assert run.module._compiled_network is None
    module = Forecaster.load_from_checkpoint(str(run.best_ckpt), map_location="cpu")
    assert module._compiled_network is None and module.cfg.train.compile


def test_compile_is_not_part_of_the_run_id(tmp_path):
    base = tiny_config("lotka_volterra", tmp_path)
    assert run_id_of(tiny_config("lotka_volterra", tmp_path, "train.compile=true")) == run_id_of(base)
    assert run_id_of(tiny_config("lotka_volterra", tmp_path, "train.compile=false")) == run_id_of(base)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "coda", "leads", "erm", "per_env"])
def test_every_method_s_network_compiles_to_its_eager_values_and_gradients(tmp_path, method):
    from leads.config.loading import system_of

    cfg = tiny_config("lotka_volterra", tmp_path, f"method={method}")
    system = system_of(cfg)
    module = Forecaster(cfg, system.state_shape, [f"e{i}" for i in range(len(system.train_envs))])
    u = torch.randn(6, *system.state_shape)
    env = torch.arange(6) % len(system.train_envs)
    outputs, grads = [], []
    for network in (module.model.forward, torch.compile(module.model.forward)):
        module.zero_grad(set_to_none=True)
        out = network(u, env)
        out.square().sum().backward()
        outputs.append(out.detach())
        grads.append(torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None]))
    assert torch.allclose(outputs[0], outputs[1], rtol=1e-5, atol=1e-6)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)

"""Models of ``leads``: backbones, per-environment parametrizations, the methods registry."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from leads.envs.errors import UserError
from leads.models.adapters import Cond
from leads.models.layers import Linear, Op, PeriodicConv1d, PeriodicConv2d, SpectralConv1d, SpectralConv2d
from leads.models.methods import METHODS, build_model

N_ENVS = 3
SMALL = {
    "mlp": ({"name": "mlp", "width": 16, "depth": 3}, (3,)),
    "conv": ({"name": "conv", "width": 6, "depth": 3}, (2, 8, 8)),
    "fno": ({"name": "fno", "width": 5, "depth": 2, "modes": 3, "proj_width": 7}, (2, 8, 8)),
    "conv1d": ({"name": "conv", "width": 6, "depth": 3}, (2, 12)),
    "fno1d": ({"name": "fno", "width": 5, "depth": 2, "modes": 3, "proj_width": 7}, (1, 12)),
    "mlp_skip": ({"name": "mlp", "width": 16, "depth": 3, "skip": True}, (3,)),
    "conv_skip": ({"name": "conv", "width": 6, "depth": 3, "skip": True}, (2, 8, 8)),
    "mlp_per_capita": ({"name": "mlp", "width": 16, "depth": 3, "per_capita": True}, (3,)),
    "conv_per_capita": ({"name": "conv", "width": 6, "depth": 3, "per_capita": True}, (2, 8, 8)),
}
ADAPTERS = ("lowrank", "coda", "lora")
ALL = [(m, b) for m in METHODS for b in SMALL]


def make(method: str, backbone: str, n_envs: int = N_ENVS, dtype: torch.dtype = torch.float64,
         seed: int = 0, **method_cfg: object) -> nn.Module:
    torch.manual_seed(seed)
    cfg, shape = SMALL[backbone]
    return build_model(cfg, {"name": method, **method_cfg}, shape, n_envs).to(dtype)


def batch(backbone: str, envs: list[int], dtype: torch.dtype = torch.float64, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(len(envs), *SMALL[backbone][1], generator=g, dtype=dtype)
    return u, torch.tensor(envs)


def randomize_env_params(model: nn.Module, scale: float = 0.3, seed: int = 2) -> None:
    """Move every environment-specific parameter off its (often zero) initial value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.env_parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))


def erm_twin(model: nn.Module, backbone: str) -> nn.Module:
    """An ``erm`` model of the same backbone holding ``model``'s shared weights."""
    erm = make("erm", backbone, n_envs=model.n_envs)
    missing = erm.load_state_dict(model.state_dict(), strict=False).missing_keys
    assert not missing
    return erm


# ---------------------------------------------------------------------------- ops


@pytest.mark.parametrize("op", [Linear(4, 3), PeriodicConv2d(4, 3, 3), PeriodicConv2d(4, 3, 1),
                                SpectralConv2d(4, 3, 2), PeriodicConv1d(4, 3, 3), PeriodicConv1d(4, 3, 1),
                                SpectralConv1d(4, 3, 2)])
def test_per_sample_op_with_equal_weights_equals_shared_op(op: Op) -> None:
    torch.manual_seed(0)
    x = torch.randn(5, 4, *([6] * op.n_spatial), dtype=torch.float64)
    w = op.init_weight(3, dtype=torch.float64)
    assert torch.allclose(op.per_sample(x, w.expand(5, *w.shape)), op(x, w), atol=1e-12)
    # and per-sample weights really are per sample
    w2 = torch.stack([w * (i + 1) for i in range(5)])
    y = op.per_sample(x, w2)
    for i in range(5):
        assert torch.allclose(y[i], op(x[i:i + 1], w2[i])[0], atol=1e-12)


def test_periodic_conv_matches_torch_circular_conv() -> None:
    torch.manual_seed(0)
    ref = nn.Conv2d(3, 4, 5, padding=2, padding_mode="circular", bias=False).double()
    x = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    assert torch.allclose(PeriodicConv2d(3, 4, 5)(x, ref.weight), ref(x), atol=1e-12)


def test_spectral_conv_multiplies_kept_modes_and_drops_the_rest() -> None:
    h, w, m = 8, 8, 3
    i, j = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                          indexing="ij")
    op = SpectralConv2d(1, 1, m)
    weight = torch.zeros(1, 1, 2, m, m, 2, dtype=torch.float64)
    weight[..., 0, :, :, 0] = 2.0  # block of non-negative first-axis frequencies: real 2
    weight[..., 1, :, :, 1] = 1.0  # block of negative first-axis frequencies: imaginary 1
    for kx, ky, expect in [(1, 2, "x2"), (-2, 1, "i"), (0, 1, "x2"), (m, 1, "zero"), (1, m, "zero")]:
        theta = 2 * math.pi * (kx * i / h + ky * j / w)
        x = torch.cos(theta)[None, None]
        y = op(x, weight)[0, 0]
        want = {"x2": 2 * torch.cos(theta), "i": -torch.sin(theta), "zero": 0 * theta}[expect]
        assert torch.allclose(y, want, atol=1e-12), (kx, ky)


def test_periodic_conv1d_matches_torch_circular_conv() -> None:
    torch.manual_seed(0)
    ref = nn.Conv1d(3, 4, 5, padding=2, padding_mode="circular", bias=False).double()
    x = torch.randn(2, 3, 9, dtype=torch.float64)
    assert torch.allclose(PeriodicConv1d(3, 4, 5)(x, ref.weight), ref(x), atol=1e-12)


def test_spectral_conv1d_multiplies_kept_modes_and_drops_the_rest() -> None:
    n, m = 16, 3
    op = SpectralConv1d(1, 1, m)
    weight = torch.zeros(1, 1, m, 2, dtype=torch.float64)
    weight[..., 0] = 2.0  # real 2 on every kept mode
    weight[0, 0, 1] = torch.tensor([0.0, 1.0], dtype=torch.float64)  # mode 1: multiply by i
    x = torch.arange(n, dtype=torch.float64) * (2 * math.pi / n)
    for k, want in [(0, 2 * torch.ones(n)), (1, -torch.sin(x)), (2, 2 * torch.cos(2 * x)), (m, 0 * x)]:
        y = op(torch.cos(k * x)[None, None], weight)[0, 0]
        assert torch.allclose(y, want.to(y), atol=1e-12), k
    with pytest.raises(UserError, match="modes"):
        build_model({"name": "fno", "modes": 12}, {"name": "erm"}, (1, 16), 2)


def test_spectral_conv_rejects_too_many_modes() -> None:
    with pytest.raises(UserError, match="modes"):
        build_model({"name": "fno", "modes": 12}, {"name": "erm"}, (1, 16, 16), 2)


# ---------------------------------------------------------------------------- every method


@pytest.mark.parametrize("method,backbone", ALL)
def test_forward_shape_dtype_and_finite(method: str, backbone: str) -> None:
    for dtype in (torch.float32, torch.float64):
        model = make(method, backbone, dtype=dtype)
        randomize_env_params(model)
        u, env = batch(backbone, [0, 2, 1, 2], dtype=dtype)
        y = model(u, env)
        assert y.shape == u.shape and y.dtype == dtype and torch.isfinite(y).all()


@pytest.mark.parametrize("method,backbone", ALL)
def test_float32_agrees_with_float64(method: str, backbone: str) -> None:
    model = make(method, backbone)
    randomize_env_params(model)
    u, env = batch(backbone, [0, 1, 2])
    with torch.no_grad():
        y64 = model(u, env)
        y32 = model.float()(u.float(), env)
    assert torch.allclose(y32.double(), y64, rtol=1e-4, atol=1e-5 * float(y64.abs().max()))


@pytest.mark.parametrize("method,backbone", ALL)
def test_mixed_batch_equals_per_environment_subbatches(method: str, backbone: str) -> None:
    model = make(method, backbone)
    randomize_env_params(model)
    envs = [2, 0, 1, 0, 2, 2, 1]
    u, env = batch(backbone, envs)
    y = model(u, env)
    outputs = []
    for e in range(N_ENVS):
        sel = env == e
        sub = model(u[sel], env[sel])
        assert torch.allclose(y[sel], sub, rtol=1e-10, atol=1e-12)
        outputs.append(sub)
    if method != "erm":  # environments must actually matter
        assert not torch.allclose(model(u, torch.zeros_like(env)), y)


@pytest.mark.parametrize("method,backbone", [(m, b) for m in METHODS if m != "leads" for b in SMALL])
def test_structured_forward_equals_effective_weights(method: str, backbone: str) -> None:
    """The cheap batched form of each parametrization equals the network with W_e, b_e spelled out."""
    model = make(method, backbone)
    randomize_env_params(model)
    u, _ = batch(backbone, [0] * 4)
    reference = make("erm", backbone)
    for e in range(N_ENVS):
        with torch.no_grad():
            for layer, (w, b) in zip(reference.net.layers, model.effective_weights(e), strict=True):
                layer.weight.copy_(w)
                if b is not None:
                    layer.bias.copy_(b)
        env = torch.full((4,), e)
        assert torch.allclose(model(u, env), reference(u, env), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method,backbone", [(m, b) for m in ADAPTERS for b in SMALL])
def test_adapters_at_zero_equal_their_backbone(method: str, backbone: str) -> None:
    """lowrank with c = 0, coda with ξ = 0, lora with B = 0 (all at construction) are the backbone."""
    model = make(method, backbone)
    u, env = batch(backbone, [0, 1, 2, 1])
    assert torch.allclose(model(u, env), erm_twin(model, backbone)(u, env), rtol=1e-12, atol=1e-14)
    randomize_env_params(model)
    assert not torch.allclose(model(u, env), erm_twin(model, backbone)(u, env))


@pytest.mark.parametrize("backbone", SMALL)
def test_leads_with_zero_g_is_f(backbone: str) -> None:
    model = make("leads", backbone)
    u, env = batch(backbone, [0, 1, 2])
    model.reset_environments(N_ENVS, init="zero")
    assert torch.allclose(model(u, env), model.f(u, Cond(env)), rtol=1e-12, atol=1e-14)
    assert model.penalty(u, env) == 0


@pytest.mark.parametrize("method,backbone", ALL)
def test_gradients_reach_exactly_the_right_parameters(method: str, backbone: str) -> None:
    model = make(method, backbone)
    randomize_env_params(model)
    e = 1
    u, env = batch(backbone, [e] * 3)
    model(u, env).square().sum().backward()
    for p in model.shared_parameters():
        assert p.grad is not None and p.grad.abs().max() > 0
    for p in model.env_parameters():
        assert p.shape[0] == N_ENVS
        assert p.grad[e].abs().max() > 0
        others = torch.cat([p.grad[:e].flatten(), p.grad[e + 1:].flatten()])
        assert (others == 0).all()


@pytest.mark.parametrize("method,backbone", [(m, b) for m in METHODS if m != "erm" for b in SMALL])
def test_adaptation_with_frozen_shared_trains_env_parameters_only(method: str, backbone: str) -> None:
    model = make(method, backbone)
    model.reset_environments(2)
    # At B_e = 0 (lora) or a zero output layer of g_e (leads' default) the inner factors have
    # zero gradient, as intended for a start at the shared model: move off it.
    if method in ("lora", "leads"):
        randomize_env_params(model)
    for p in model.shared_parameters():
        p.requires_grad_(False)
    u, env = batch(backbone, [0, 1, 1])
    (model(u, env).square().sum() + model.penalty(u, env)).backward()
    assert all(p.grad is None for p in model.shared_parameters())
    assert all(p.grad is not None and p.grad.abs().max() > 0 for p in model.env_parameters())


@pytest.mark.parametrize("method,backbone", ALL)
def test_parameters_split_into_shared_and_env(method: str, backbone: str) -> None:
    model = make(method, backbone)
    shared = {id(p) for p in model.shared_parameters()}
    env = {id(p) for p in model.env_parameters()}
    assert not shared & env
    assert shared | env == {id(p) for p in model.parameters()}
    erm_size = sum(p.numel() for p in make("erm", backbone).parameters())
    layers = make("erm", backbone).net.layers
    expected = {
        "erm": 0,
        "per_env": erm_size,
        "leads": erm_size,
        "lowrank": 8,
        "coda": 2,
        "lora": sum(2 * (layer.op.out_channels + layer.op.fan_in) for layer in layers),
    }[method]
    assert model.n_params_per_env == expected


@pytest.mark.parametrize("method,backbone", ALL)
def test_reset_environments_keeps_shared_and_resizes_env_parameters(method: str, backbone: str) -> None:
    model = make(method, backbone)
    randomize_env_params(model)
    before = [(p, p.detach().clone()) for p in model.shared_parameters()]
    per_env = model.n_params_per_env
    model.reset_environments(5)
    assert model.n_envs == 5 and model.n_params_per_env == per_env
    after = model.shared_parameters()
    assert len(after) == len(before)
    for q, (p, value) in zip(after, before, strict=True):
        assert q is p and torch.equal(q, value)
    for p in model.env_parameters():
        assert p.shape[0] == 5 and p.dtype == torch.float64
    u, env = batch(backbone, [4, 0, 3])
    assert model(u, env).shape == u.shape


@pytest.mark.parametrize("method", ["lowrank", "coda"])
def test_contexts_reset_to_mean_by_default_or_zero(method: str) -> None:
    model = make(method, "mlp")
    randomize_env_params(model)
    mean = model.contexts.detach().mean(0)
    model.reset_environments(4)
    assert torch.allclose(model.contexts, mean.expand(4, -1))
    model.reset_environments(2, init="zero")
    assert (model.contexts == 0).all()


def test_per_env_reset_to_mean_and_lora_reset_to_zero() -> None:
    model = make("per_env", "conv")
    mean = model.net.layers[0].weight.detach().mean(0)
    model.reset_environments(2, init="mean")
    assert torch.allclose(model.net.layers[0].weight, mean.expand(2, *mean.shape))
    lora = make("lora", "conv")
    randomize_env_params(lora)
    lora.reset_environments(2)
    u, env = batch("conv", [0, 1])
    assert torch.allclose(lora(u, env), erm_twin(lora, "conv")(u, env), atol=1e-14)


@pytest.mark.parametrize("method", ["lowrank", "per_env", "lora"])
def test_unknown_init_is_a_user_error(method: str) -> None:
    with pytest.raises(UserError, match="choose one of"):
        make(method, "mlp").reset_environments(2, init="bogus")


# ---------------------------------------------------------------------------- penalties


@pytest.mark.parametrize("method,backbone", ALL)
def test_penalties_are_non_negative_scalars(method: str, backbone: str) -> None:
    model = make(method, backbone)
    randomize_env_params(model)
    u, env = batch(backbone, [0, 1, 1, 2])
    p = model.penalty(u, env)
    assert p.shape == () and p.dtype == torch.float64 and p >= 0
    if method in ("erm", "per_env", "lora", "lowrank"):
        assert p == 0
    else:
        assert p > 0


def test_leads_penalty_matches_its_definition() -> None:
    lam = 0.1
    model = make("leads", "conv", **{"lambda": lam})
    u, env = batch("conv", [2, 0, 2, 2, 0])
    with torch.no_grad():
        g = model(u, env) - model.f(u, Cond(env))
    expected = 0.0
    for e in (0, 2):  # environment 1 is absent from the batch and contributes nothing
        sel = env == e
        expected += (g[sel].flatten(1).square().sum(1) / u[sel].flatten(1).square().sum(1)).mean()
    assert torch.allclose(model.penalty(u, env), lam * expected, rtol=1e-12)
    model.penalty(u, env).backward()
    grads = [p.grad for p in model.env_parameters()]
    assert all((g[1] == 0).all() and g[0].abs().max() > 0 for g in grads)
    assert all(p.grad is None for p in model.shared_parameters())


def test_coda_penalty_matches_its_definition() -> None:
    model = make("coda", "mlp", l1_hyper=0.5, l2_context=0.25)
    u, env = batch("mlp", [0])
    with torch.no_grad():
        model.contexts.normal_()
    rows = 0.0
    for layer in model.net.layers:  # row i of the hypernetwork: the d-vector of parameter i
        rows += torch.stack([layer.U[j].flatten() for j in range(2)]).norm(dim=0).sum()
        rows += torch.stack([layer.V[j] for j in range(2)]).norm(dim=0).sum()
    expected = 0.5 * rows + 0.25 * model.contexts.square().sum()
    assert torch.allclose(model.penalty(u, env), expected, rtol=1e-12)
    zero = make("coda", "mlp", l1_hyper=0.0)
    assert zero.penalty(u, env) == 0  # ξ = 0 at construction


def test_lowrank_context_penalty() -> None:
    model = make("lowrank", "mlp", l2_context=0.5)
    u, env = batch("mlp", [0])
    assert model.penalty(u, env) == 0
    randomize_env_params(model)
    assert torch.allclose(model.penalty(u, env), 0.5 * model.contexts.square().sum())


# ---------------------------------------------------------------------------- structure


@pytest.mark.parametrize("method", list(METHODS))
def test_one_batched_pass_whatever_the_number_of_environments(method: str, monkeypatch) -> None:
    """The number of layer ops per forward does not grow with the environments in the batch."""
    calls = []
    for name in ("__call__", "per_sample"):
        original = getattr(PeriodicConv2d, name)

        def counted(self, x, w, _original=original, _name=name):
            calls.append(_name)
            return _original(self, x, w)

        monkeypatch.setattr(PeriodicConv2d, name, counted)
    model = make(method, "conv", n_envs=6)
    counts = []
    for envs in ([3], [0, 1, 2, 3, 4, 5, 5, 1]):
        calls.clear()
        model(*batch("conv", envs))
        counts.append(len(calls))
    assert counts[0] == counts[1] > 0


@pytest.mark.parametrize("method", ["erm", "lowrank"])
def test_conv_backbone_is_translation_equivariant(method: str) -> None:
    model = make(method, "conv")
    randomize_env_params(model)
    u, env = batch("conv", [0, 1])
    shifted = model(torch.roll(u, shifts=(3, -2), dims=(2, 3)), env)
    assert torch.allclose(shifted, torch.roll(model(u, env), shifts=(3, -2), dims=(2, 3)), atol=1e-12)


def test_fno_coordinates_break_translation_equivariance_only_when_enabled() -> None:
    u, env = batch("fno", [0])
    for coords in (False, True):
        torch.manual_seed(0)
        model = build_model({**SMALL["fno"][0], "coords": coords}, {"name": "erm"}, (2, 8, 8), 1).double()
        shifted = model(torch.roll(u, 2, dims=3), env)
        equivariant = torch.allclose(shifted, torch.roll(model(u, env), 2, dims=3), atol=1e-12)
        assert equivariant != coords


def test_default_backbones() -> None:
    mlp = build_model({"name": "mlp"}, {"name": "erm"}, (2,), 1)
    assert [layer.op.out_channels for layer in mlp.net.layers] == [64, 64, 64, 2]
    conv = build_model({"name": "conv"}, {"name": "erm"}, (2, 16, 16), 1)
    assert [layer.op.tail for layer in conv.net.layers] == [(2, 3, 3), (64, 3, 3), (64, 3, 3), (64, 3, 3)]
    fno = build_model({"name": "fno"}, {"name": "erm"}, (1, 32, 32), 1)
    kinds = [type(layer.op).__name__ for layer in fno.net.layers]
    assert kinds.count("SpectralConv2d") == 4 and fno.net.layers[1].op.modes == 12
    assert fno.net.layers[1].op.in_channels == 10 and len(kinds) == 11
    assert build_model({"name": "conv"}, {}, (2, 8, 8), 3).name == "lowrank"


# ---------------------------------------------------------------------------- user errors


def test_unknown_method_and_backbone_list_the_choices() -> None:
    with pytest.raises(UserError) as err:
        build_model({"name": "mlp"}, {"name": "maml"}, (2,), 2)
    assert all(name in str(err.value) for name in METHODS)
    with pytest.raises(UserError) as err:
        build_model({"name": "transformer"}, {"name": "erm"}, (2,), 2)
    assert all(name in str(err.value) for name in ("mlp", "conv", "fno"))


@pytest.mark.parametrize("backbone_cfg,method_cfg,shape,match", [
    ({"name": "mlp", "widht": 3}, {"name": "erm"}, (2,), "widht"),
    ({"name": "mlp", "width": 0}, {"name": "erm"}, (2,), "positive integer"),
    ({"name": "mlp", "activation": "sigmoid"}, {"name": "erm"}, (2,), "activation"),
    ({"name": "conv", "kernel_size": 4}, {"name": "erm"}, (2, 8, 8), "odd"),
    ({"name": "mlp"}, {"name": "erm"}, (2, 8, 8), "mlp for ODE states"),
    ({"name": "conv"}, {"name": "erm"}, (2,), "conv or fno"),
    ({"name": "mlp", "skip": 1}, {"name": "erm"}, (2,), "true or false"),
    ({"name": "mlp"}, {"name": "lowrank", "rnak": 2}, (2,), "rnak"),
    ({"name": "mlp"}, {"name": "lowrank", "adapted_layers": "skip"}, (2,), "model.skip=true"),
    ({"name": "mlp", "skip": True}, {"name": "lowrank", "adapted_layers": "last"}, (2,), "all, first or skip"),
    ({"name": "mlp"}, {"name": "leads", "lambda": -1.0}, (2,), "non-negative"),
])
def test_bad_configuration_is_a_user_error(backbone_cfg, method_cfg, shape, match) -> None:
    with pytest.raises(UserError, match=match):
        build_model(backbone_cfg, method_cfg, shape, 2)


@pytest.mark.parametrize("backbone", ["mlp", "conv"])
def test_skip_adds_a_linear_layer_of_the_state_to_the_stack(backbone: str) -> None:
    model = make("lowrank", f"{backbone}_skip")
    randomize_env_params(model)
    plain = make("lowrank", backbone)
    missing = plain.load_state_dict(model.state_dict(), strict=False)
    assert not missing.missing_keys and all(k.startswith("net.layers.3.") for k in missing.unexpected_keys)
    u, env = batch(backbone, [0, 1, 2, 1])
    skip = model.net.layers[3](u, Cond(env, model.contexts[env]))
    assert torch.allclose(model(u, env), plain(u, env) + skip, rtol=1e-12, atol=1e-14)
    # linear in the state: the skip's part of f(a u) - a f(u) is its bias's (1 - a) share only
    a = 2.5
    assert torch.allclose(model.net.layers[3](a * u, Cond(env, model.contexts[env])) - a * skip,
                          (1 - a) * model.net.layers[3](0 * u, Cond(env, model.contexts[env])), atol=1e-12)
    assert model.net.output_layers == [2, 3] and plain.net.output_layers == [2]


@pytest.mark.parametrize("backbone", ["mlp", "conv"])
def test_per_capita_multiplies_the_stack_by_the_state(backbone: str) -> None:
    model = make("lowrank", f"{backbone}_per_capita")
    randomize_env_params(model)
    plain = make("lowrank", backbone)
    plain.load_state_dict(model.state_dict())  # the same layers: only the output differs
    u, env = batch(backbone, [0, 1, 2, 1])
    assert torch.allclose(model(u, env), u * plain(u, env), rtol=1e-12, atol=1e-14)
    # a species at zero stays at zero, whatever the environment (the Kolmogorov form)
    u[:, 0] = 0
    assert torch.all(model(u, env)[:, 0] == 0) and torch.all(plain(u, env)[:, 0] != 0)


@pytest.mark.parametrize("backbone", ["mlp_skip", "conv_skip"])
def test_lowrank_adapting_the_skip_only_differs_between_environments_by_a_linear_map(backbone: str) -> None:
    model = make("lowrank", backbone, adapted_layers="skip")
    randomize_env_params(model)
    with torch.no_grad():  # the context's maps start at zero: move them so environments differ
        for p in model.net.layers[-1].parameters():
            p.add_(0.3 * torch.randn_like(p))
    u, _ = batch(backbone, [0, 0, 0])
    v, _ = batch(backbone, [0, 0, 0], seed=7)
    f = [model(x, torch.full((3,), e)) for x in (u, v, u + v) for e in (0, 1)]
    d_u, d_v, d_uv = f[0] - f[1], f[2] - f[3], f[4] - f[5]  # f_0 - f_1 at u, v and u + v
    d_0 = model(0 * u, torch.zeros(3, dtype=torch.long)) - model(0 * u, torch.ones(3, dtype=torch.long))
    assert d_u.abs().max() > 1e-3
    assert torch.allclose(d_uv - d_0, (d_u - d_0) + (d_v - d_0), atol=1e-12)  # affine in the state
    shared = {id(p) for p in model.shared_parameters()}
    assert all(id(p) in shared for layer in model.net.layers[:-1] for p in layer.parameters())


@pytest.mark.parametrize("backbone", ["mlp", "conv_skip"])
def test_lowrank_adapting_the_first_layer_only_shares_the_others(backbone: str) -> None:
    model = make("lowrank", backbone, adapted_layers="first")
    randomize_env_params(model)
    shared = {id(p) for p in model.shared_parameters()}
    assert all(id(p) in shared for layer in model.net.layers[1:] for p in layer.parameters())
    u, _ = batch(backbone, [0, 0])
    with torch.no_grad():  # environments differ, and only through the first layer's output
        for p in model.net.layers[0].parameters():
            p.add_(0.3 * torch.randn_like(p))
        h = [model.net.layers[0](u, Cond(torch.full((2,), e), model.contexts[[e, e]])) for e in (0, 1)]
    assert not torch.allclose(h[0], h[1])
    assert not torch.allclose(model(u, torch.zeros(2, dtype=torch.long)), model(u, torch.ones(2, dtype=torch.long)))


def test_model_keys_added_later_at_their_default_keep_run_ids() -> None:
    from leads.config.loading import load_config
    from leads.training.train import run_id_of

    cfg = load_config("lotka_volterra", "quick").to_dict()
    before = cfg | {"model": {k: v for k, v in cfg["model"].items() if k != "skip"}}
    assert cfg["model"]["skip"] is False and run_id_of(cfg) == run_id_of(before)
    assert run_id_of(load_config("lotka_volterra", "quick", ["model.skip=true"]).to_dict()) != run_id_of(cfg)
    lowrank = {k: v for k, v in cfg["methods"]["lowrank"].items() if k != "adapted_layers"}
    methods = {**cfg["methods"], "lowrank": lowrank}
    assert cfg["methods"]["lowrank"]["adapted_layers"] == "all"
    assert run_id_of(cfg) == run_id_of(cfg | {"methods": methods})
    train = {k: v for k, v in cfg["train"].items() if k != "ema"}
    assert cfg["train"]["ema"] is None and run_id_of(cfg) == run_id_of(cfg | {"train": train})
    assert run_id_of(load_config("lotka_volterra", "quick", ["train.ema=0.999"]).to_dict()) != run_id_of(cfg)
    skip_only = ["model.skip=true", "methods.lowrank.adapted_layers=skip"]
    assert run_id_of(load_config("lotka_volterra", "quick", skip_only).to_dict()) != run_id_of(cfg)


def test_keys_of_other_backbones_are_ignored() -> None:
    model = build_model({"name": "mlp", "width": 8, "modes": 12, "kernel_size": 3}, {"name": "erm"}, (2,), 1)
    assert model.net.layers[0].op.out_channels == 8


@pytest.mark.parametrize("u_shape,env,match", [
    ((4, 2, 8, 8), torch.tensor([0, 1, 2, 3]), r"\[0, 3\)"),
    ((4, 2, 8, 8), torch.tensor([0, 1, -1, 0]), r"\[0, 3\)"),
    ((4, 2, 8, 8), torch.tensor([0.0, 1.0, 2.0, 0.0]), "integer"),
    ((4, 2, 8, 8), torch.tensor([0, 1]), "one index"),
    ((4, 8, 8), torch.tensor([0, 1, 2, 0]), "expected"),
])
def test_bad_inputs_are_user_errors(u_shape, env, match) -> None:
    model = make("lowrank", "conv")
    with pytest.raises(UserError, match=match):
        model(torch.randn(*u_shape, dtype=torch.float64), env)

"""The ODE systems (Lotka-Volterra, glycolytic oscillator, pendulum) and the batched solvers.

Solutions are checked against scipy's DOP853 at tight tolerances, integrating right-hand
sides written again here in numpy straight from the equations, so a slip in the torch code
cannot hide in the reference.

Accuracy of the default solver steps (not a test; takes a few minutes):
    python -m tests.test_envs_odes [--per-env 32]
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from leads.envs.errors import UserError
from leads.envs.registry import get_system
from leads.envs.solvers import dopri5, rk4

SYSTEMS = ("lotka_volterra", "glycolytic_oscillator", "pendulum")


# ------------------------------------------------------------------ independent references
def lv_np(t, u, alpha, beta, gamma, delta):
    x, y = u
    return [alpha * x - beta * x * y, delta * x * y - gamma * y]


def glyco_np(t, s, k1, K1):
    J0, k2, k3, k4, k5, k6, q, N, A, kappa, psi, k = 2.5, 6, 16, 100, 1.28, 12, 4, 1, 4, 13, 0.1, 1.8
    s1, s2, s3, s4, s5, s6, s7 = s
    inhibited = k1 * s1 * s6 / (1 + (s6 / K1) ** q)
    return [
        J0 - inhibited,
        2 * inhibited - k2 * s2 * (N - s5) - k6 * s2 * s5,
        k2 * s2 * (N - s5) - k3 * s3 * (A - s6),
        k3 * s3 * (A - s6) - k4 * s4 * s5 - kappa * (s4 - s7),
        k2 * s2 * (N - s5) - k4 * s4 * s5 - k6 * s2 * s5,
        -2 * inhibited + 2 * k3 * s3 * (A - s6) - k5 * s6,
        psi * kappa * (s4 - s7) - k * s7,
    ]


def pendulum_np(t, u, alpha, omega0, omega_f, F):
    theta, v = u
    return [v, F * np.cos(omega_f * t) - alpha * v - omega0**2 * np.sin(theta)]


REFERENCE_RHS = {"lotka_volterra": lv_np, "glycolytic_oscillator": glyco_np, "pendulum": pendulum_np}


def reference(name: str, u0: torch.Tensor, params: torch.Tensor, t: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """DOP853 one trajectory at a time, ``(B, n_t, d)``."""
    f = REFERENCE_RHS[name]
    rows = []
    for u, p in zip(u0.tolist(), params.tolist()):
        sol = solve_ivp(f, (t[0], t[-1]), u, method="DOP853", t_eval=t, rtol=tol, atol=tol, args=tuple(p))
        assert sol.success, sol.message
        rows.append(sol.y.T)
    return np.stack(rows)


def rel_l2(y: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Relative L2 error of each trajectory over all its times and components."""
    n = len(ref)
    return np.linalg.norm((y - ref).reshape(n, -1), axis=1) / np.linalg.norm(ref.reshape(n, -1), axis=1)


def mixed_batch(system, per_env: int = 2, seed0: int = 0):
    """Two training environments and one of each held-out set, ``per_env`` trajectories each."""
    envs = system.train_envs[:2] + [system.heldout["interp"][0], system.heldout["extrap"][-1]]
    params = system.env_tensor(envs).repeat_interleave(per_env, 0)
    u0 = system.sample_initial_states(range(seed0, seed0 + len(params)))
    return u0, params


# ------------------------------------------------------------------ accuracy
@pytest.mark.parametrize("name", SYSTEMS)
def test_rk4_solve_matches_dop853(name):
    system = get_system(name)
    u0, params = mixed_batch(system)
    t = system.times(2 * system.horizon)
    y = system.solve(u0, params, t)
    assert y.shape == (len(u0), len(t), *system.state_shape) and y.dtype == torch.float64
    err = rel_l2(y.numpy(), reference(name, u0, params, t))
    assert err.max() <= 1e-5, err


@pytest.mark.parametrize("name", SYSTEMS)
def test_dopri5_matches_dop853(name):
    system = get_system(name)
    u0, params = mixed_batch(system)
    t = system.times(2 * system.horizon)
    y = dopri5(lambda s, u: system.rhs(s, u, params), u0, t, rtol=1e-10, atol=1e-12)
    err = rel_l2(y.numpy(), reference(name, u0, params, t))
    assert err.max() <= 1e-5, err


@pytest.mark.parametrize("name", SYSTEMS)
def test_comparison_detects_a_small_parameter_error(name):
    # The 1e-5 threshold above must be able to fail: a 0.1 % change of one parameter breaks it.
    system = get_system(name)
    u0, params = mixed_batch(system, per_env=1)
    t = system.times(system.horizon)
    wrong = params.clone()
    wrong[:, 1] *= 1.001
    err = rel_l2(system.solve(u0, wrong, t).numpy(), reference(name, u0, params, t))
    assert err.min() > 1e-5, err


@pytest.mark.parametrize(
    ("name", "t0", "substeps"),
    [("lotka_volterra", 0.0, (4, 8, 16)), ("pendulum", 3.7, (4, 8, 16)), ("glycolytic_oscillator", 0.0, (16, 32, 64))],
)
def test_rk4_converges_at_fourth_order(name, t0, substeps):
    # On the forced pendulum started at t0 != 0, wrong stage times would drop the order.
    system = get_system(name)
    envs = system.train_envs + system.heldout["extrap"]
    params = system.env_tensor(envs)
    u0 = system.sample_initial_states(range(len(envs)))
    t = t0 + system.times()
    ref = reference(name, u0, params, t, tol=1e-13)
    errors = []
    for n in substeps:
        y = rk4(lambda s, u: system.rhs(s, u, params), u0, t, substeps=n)
        errors.append(np.linalg.norm(y.numpy() - ref))
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    assert np.all((3.5 <= orders) & (orders <= 4.5)), (errors, orders)


def test_pendulum_uses_absolute_time():
    system = get_system("pendulum")
    params = system.env_tensor(system.train_envs[2:])  # the two forced environments
    u0 = system.sample_initial_states([11, 12])
    t = 5.0 + system.times()
    err = rel_l2(system.solve(u0, params, t).numpy(), reference("pendulum", u0, params, t))
    assert err.max() <= 1e-5, err
    # Restarting mid-trajectory from the computed state continues the same trajectory.
    full = system.solve(u0, params, t)
    rest = system.solve(full[:, 10], params, t[10:])
    torch.testing.assert_close(rest, full[:, 10:], rtol=1e-9, atol=1e-9)


def test_dopri5_error_follows_tolerance():
    system = get_system("glycolytic_oscillator")
    u0, params = mixed_batch(system, per_env=1)
    t = system.times()
    ref = reference("glycolytic_oscillator", u0, params, t, tol=1e-13)
    errs = [
        rel_l2(dopri5(lambda s, u: system.rhs(s, u, params), u0, t, rtol=tol, atol=tol).numpy(), ref).max()
        for tol in (1e-4, 1e-7, 1e-10)
    ]
    assert errs[0] > errs[1] > errs[2] and errs[1] < 1e-4, errs


# ------------------------------------------------------------------ batching, dtype, device
@pytest.mark.parametrize("name", SYSTEMS)
def test_batched_equals_one_at_a_time(name):
    system = get_system(name)
    u0, params = mixed_batch(system, per_env=1)
    t = system.times()
    batched = system.solve(u0, params, t)
    single = torch.cat([system.solve(u0[i : i + 1], params[i : i + 1], t) for i in range(len(u0))])
    torch.testing.assert_close(batched, single, rtol=1e-12, atol=1e-12)


def test_dopri5_batched_equals_one_at_a_time():
    # Each sample controls its own step, so batch-mates must not change its result.
    system = get_system("glycolytic_oscillator")
    u0, params = mixed_batch(system, per_env=1)
    t = system.times()

    def solve(i: slice) -> torch.Tensor:
        return dopri5(lambda s, u: system.rhs(s, u, params[i]), u0[i], t, rtol=1e-6, atol=1e-8)

    single = torch.cat([solve(slice(i, i + 1)) for i in range(len(u0))])
    torch.testing.assert_close(solve(slice(None)), single, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("solver", ["rk4", "dopri5"])
def test_solvers_keep_dtype_and_shape(solver):
    # Exponential decay with one rate per sample and a (B, 2, 3) state.
    rates = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float32)
    u0 = torch.ones(3, 2, 3, dtype=torch.float32)
    t = np.linspace(0.0, 1.0, 5)

    def f(s, u):
        return -rates.view(3, 1, 1) * u

    y = rk4(f, u0, t, substeps=8) if solver == "rk4" else dopri5(f, u0, t, rtol=1e-5, atol=1e-7)
    assert y.shape == (3, 5, 2, 3) and y.dtype == torch.float32
    exact = torch.exp(-rates.view(3, 1, 1, 1) * torch.tensor(t, dtype=torch.float32).view(1, 5, 1, 1))
    torch.testing.assert_close(y, exact.expand_as(y), rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", SYSTEMS)
def test_solve_on_cuda_matches_cpu(name):
    system = get_system(name)
    u0, params = mixed_batch(system, per_env=1)
    t = system.times()
    y = system.solve(u0.cuda(), params, t)
    assert y.device.type == "cuda" and y.dtype == torch.float64
    torch.testing.assert_close(y.cpu(), system.solve(u0, params, t), rtol=1e-10, atol=1e-10)


def test_solver_rejects_bad_times():
    f = lambda s, u: -u  # noqa: E731
    with pytest.raises(ValueError, match="increasing"):
        rk4(f, torch.ones(1, 1), [0.0, 1.0, 1.0], substeps=1)
    with pytest.raises(ValueError, match="substeps"):
        rk4(f, torch.ones(1, 1), [0.0, 1.0], substeps=0)


# ------------------------------------------------------------------ initial states
@pytest.mark.parametrize("name", SYSTEMS)
def test_initial_states_are_deterministic_per_seed(name):
    system = get_system(name)
    a = system.sample_initial_states([3, 7, 9])
    assert a.shape == (3, *system.state_shape) and a.dtype == torch.float64
    torch.testing.assert_close(a, system.sample_initial_states([3, 7, 9]), rtol=0, atol=0)
    # Independent of batch composition: seed 7 alone gives the same state as within a batch.
    torch.testing.assert_close(system.sample_initial_states([7])[0], a[1], rtol=0, atol=0)
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[1], a[2])
    with pytest.raises(UserError, match="seed"):
        system.sample_initial_states([-1])
    with pytest.raises(UserError, match="seed"):
        system.sample_initial_states([1.5])


@pytest.mark.parametrize("name", SYSTEMS)
def test_initial_states_fill_their_box(name):
    system = get_system(name)
    box = torch.tensor(system.config["ic_ranges"], dtype=torch.float64)
    u0 = system.sample_initial_states(range(2000))
    lo, hi = box[:, 0], box[:, 1]
    assert torch.all(u0 >= lo) and torch.all(u0 <= hi)
    # Uniform over the box: with 2000 draws each end is reached within 1 % of the width.
    assert torch.all(u0.min(0).values - lo < 0.01 * (hi - lo))
    assert torch.all(hi - u0.max(0).values < 0.01 * (hi - lo))


def test_published_initial_boxes():
    assert get_system("lotka_volterra").config["ic_ranges"] == [[1.0, 2.0], [1.0, 2.0]]
    assert get_system("pendulum").config["ic_ranges"] == [[0.0, 0.25], [0.0, 1.0]]
    go = get_system("glycolytic_oscillator").config["ic_ranges"]
    assert go[0] == [0.15, 1.60] and go[5] == [0.14, 2.67] and go[6] == [0.05, 0.10]


@pytest.mark.parametrize("name", SYSTEMS)
def test_all_environment_sets_stay_physical(name):
    system = get_system(name)
    envs = system.train_envs + [e for v in system.heldout.values() for e in v]
    params = system.env_tensor(envs).repeat_interleave(4, 0)
    y = system.solve(system.sample_initial_states(range(len(params))), params, system.times(2 * system.horizon))
    assert torch.isfinite(y).all()
    if name != "pendulum":  # concentrations and populations stay positive
        assert (y > 0).all()


# ------------------------------------------------------------------ configuration errors
@pytest.mark.parametrize(
    ("name", "env", "match"),
    [
        ("lotka_volterra", {"beta": -0.5, "delta": 0.5}, "outside its valid range"),
        ("lotka_volterra", {"beta": 0.0, "delta": 0.5}, "strictly positive"),
        ("lotka_volterra", {"beta": 0.5, "zeta": 0.5}, "exactly the parameters"),
        ("lotka_volterra", {"beta": 0.5, "delta": 0.5, "alpha": -0.5}, "outside its valid range"),
        ("lotka_volterra", {"beta": math.nan, "delta": 0.5}, "finite"),
        ("glycolytic_oscillator", {"k1": 100.0, "K1": -1.0}, "outside its valid range"),
        ("glycolytic_oscillator", {"k1": 100.0, "K1": 0.0}, "strictly positive"),
        ("glycolytic_oscillator", {"k1": -90.0, "K1": 1.0}, "outside its valid range"),
        ("pendulum", {"alpha": -0.1, "omega0": 0.5, "omega_f": 0.0, "F": 0.0}, "outside its valid range"),
        ("pendulum", {"alpha": 0.1, "omega0": -0.5, "omega_f": 0.0, "F": 0.0}, "outside its valid range"),
        ("pendulum", {"alpha": 0.1, "omega0": 0.5, "F": 0.0}, "exactly the parameters"),
    ],
)
def test_invalid_environments_are_rejected(name, env, match):
    system = get_system(name)
    with pytest.raises(UserError, match=match):
        system.check_env(env)
    with pytest.raises(UserError, match=match):
        get_system(name, train_envs=[env])
    with pytest.raises(UserError, match=match):
        get_system(name, heldout={"extrap": [env]})


@pytest.mark.parametrize(
    ("name", "overrides", "match"),
    [
        ("lotka_volterra", {"beta": 0.5}, "unknown key 'system.beta'"),
        ("lotka_volterra", {"param_defaults": {"alpha": -0.5, "beta": 0.5, "gamma": 0.5, "delta": 0.5}},
         "alpha=-0.5"),
        ("pendulum", {"omega": 1.0}, "unknown key 'system.omega'"),
        ("glycolytic_oscillator", {"substep": 10}, "unknown key 'system.substep'"),
        ("lotka_volterra", {"substeps": 0}, "substeps"),
        ("lotka_volterra", {"substeps": 2.5}, "substeps"),
        ("pendulum", {"substeps": True}, "substeps"),
        ("glycolytic_oscillator", {"kappa": 0}, "system.kappa"),
        ("lotka_volterra", {"ic_ranges": [[1.0, 2.0]]}, "ic_ranges"),
        ("pendulum", {"ic_ranges": [[0.3, 0.1], [0.0, 1.0]]}, "ic_ranges"),
        ("pendulum", {"dt": 0.3}, "multiple of dt"),
    ],
)
def test_invalid_config_is_rejected(name, overrides, match):
    with pytest.raises(UserError, match=match):
        get_system(name, **overrides)


@pytest.mark.parametrize("name", SYSTEMS)
def test_defaults_and_description(name):
    system = get_system(name)
    assert set(system.heldout) == {"interp", "extrap"}
    for key in ("train_envs", "heldout", "dt", "horizon", "substeps", "ic_ranges"):
        assert key in system.defaults
    n = system.config["substeps"]
    assert system.solver_description.startswith("rk4") and f"{n} substeps" in system.solver_description
    assert get_system(name, substeps=3).solver_description.count("3 substeps") == 1


def test_omitted_parameters_come_from_param_defaults():
    lv = get_system("lotka_volterra", param_defaults={"alpha": 1.0, "beta": 0.5, "gamma": 0.5, "delta": 0.5})
    u = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    p = lv.env_tensor([{"beta": 0.75, "delta": 0.25}])
    assert p.tolist() == [[1.0, 0.75, 0.5, 0.25]]
    torch.testing.assert_close(
        lv.rhs(0.0, u, p), torch.tensor([lv_np(0.0, [1.0, 2.0], 1.0, 0.75, 0.5, 0.25)], dtype=torch.float64)
    )
    # the LEADS protocol varies (alpha, gamma) instead
    p = lv.env_tensor([{"alpha": 0.25, "gamma": 1.0}])
    assert p.tolist() == [[0.25, 0.5, 1.0, 0.5]]


# ------------------------------------------------------------------ measurement (not a test)
def measure(per_env: int, candidates: dict[str, list[int]]) -> None:
    """Max relative L2 error vs DOP853 (rtol=atol=1e-12) over all environment sets, to 2x horizon."""
    for name in SYSTEMS:
        system = get_system(name)
        envs = system.train_envs + [e for v in system.heldout.values() for e in v]
        params = system.env_tensor(envs).repeat_interleave(per_env, 0)
        u0 = system.sample_initial_states(range(len(params)))
        t = system.times(2 * system.horizon)
        ref = reference(name, u0, params, t, tol=1e-12)
        default = system.config["substeps"]
        for n in sorted(set(candidates[name]) | {default}):
            err = rel_l2(get_system(name, substeps=n).solve(u0, params, t).numpy(), ref)
            mark = "  <- default" if n == default else ""
            print(
                f"{name:22s} substeps={n:4d} h={system.dt / n:<9.6g} trajectories={len(err):5d} "
                f"max rel L2={err.max():.2e} mean={err.mean():.2e}{mark}"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=measure.__doc__)
    parser.add_argument("--per-env", type=int, default=32)
    measure(
        parser.parse_args().per_env,
        {
            "lotka_volterra": [8, 12, 14],
            "glycolytic_oscillator": [50, 64, 80],
            "pendulum": [16, 25, 32],
        },
    )

"""The PDE systems (Gray-Scott, Navier-Stokes) and their batched solvers.

References are written again here in numpy straight from the equations (np.roll for the stencil,
full complex FFTs for the vorticity equation) and integrated one trajectory at a time by scipy's
DOP853 at rtol = atol = 1e-10, so a slip in the torch code cannot hide in the reference.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from leads.envs.errors import UserError
from leads.envs.gray_scott import GrayScott, laplacian_9pt, stencil_symbol
from leads.envs.navier_stokes import NavierStokes
from leads.envs.registry import get_system
from leads.envs.spectral import ETDRK4


# ------------------------------------------------------------------ independent references
def gs_laplacian_np(a: np.ndarray, dx: float = 1.0) -> np.ndarray:
    def r(sx: int, sy: int) -> np.ndarray:
        return np.roll(a, (sx, sy), (0, 1))

    edges = r(1, 0) + r(-1, 0) + r(0, 1) + r(0, -1)
    corners = r(1, 1) + r(1, -1) + r(-1, 1) + r(-1, -1)
    return (-3 * a + 0.5 * edges + 0.25 * corners) / dx**2


def gs_np(t, y, F, k, n=32, D_u=0.2097, D_v=0.105):
    u, v = y[: n * n].reshape(n, n), y[n * n :].reshape(n, n)
    uvv = u * v * v
    du = D_u * gs_laplacian_np(u) - uvv + F * (1 - u)
    dv = D_v * gs_laplacian_np(v) + uvv - (F + k) * v
    return np.concatenate((du.ravel(), dv.ravel()))


def ns_np(t, y, nu, n=32, amplitude=0.1):
    """Vorticity equation as in the FNO/LEADS code: full complex FFTs, ψ = w/(4π²|k|²), 2/3 rule."""
    w = y.reshape(n, n)
    k = np.fft.fftfreq(n, 1.0 / n)
    kx, ky = np.meshgrid(k, k, indexing="ij")
    lap = 4 * np.pi**2 * (kx**2 + ky**2)
    lap[0, 0] = 1.0
    w_h = np.fft.fft2(w)
    psi_h = w_h / lap
    ux = np.fft.ifft2(2j * np.pi * ky * psi_h).real
    uy = np.fft.ifft2(-2j * np.pi * kx * psi_h).real
    wx = np.fft.ifft2(2j * np.pi * kx * w_h).real
    wy = np.fft.ifft2(2j * np.pi * ky * w_h).real
    mask = (np.abs(kx) <= 2 / 3 * (n // 2)) & (np.abs(ky) <= 2 / 3 * (n // 2))
    adv_h = mask * np.fft.fft2(ux * wx + uy * wy)
    x = np.arange(n) / n
    s = 2 * np.pi * (x[:, None] + x[None, :])
    f = amplitude * (np.sin(s) + np.cos(s))
    return (np.fft.ifft2(-adv_h - nu * lap * w_h).real + f).ravel()


def dop853(f, u0: torch.Tensor, params: torch.Tensor, t: np.ndarray) -> np.ndarray:
    """One trajectory at a time, ``(B, n_t, *state)``."""
    rows = []
    for u, p in zip(u0.numpy(), params.tolist()):
        sol = solve_ivp(f, (t[0], t[-1]), u.ravel(), method="DOP853", t_eval=t, rtol=1e-10, atol=1e-10, args=tuple(p))
        assert sol.success, sol.message
        rows.append(sol.y.T.reshape(len(t), *u.shape))
    return np.stack(rows)


def rel_l2(y: torch.Tensor | np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Relative L2 error of each trajectory over its times after t=0 and all components."""
    y = y.numpy() if isinstance(y, torch.Tensor) else y
    d = (y[:, 1:] - ref[:, 1:]).reshape(len(ref), -1)
    return np.linalg.norm(d, axis=1) / np.linalg.norm(ref[:, 1:].reshape(len(ref), -1), axis=1)


def worst_snapshot(y: torch.Tensor, ref: np.ndarray) -> float:
    """Largest relative L2 error of any single snapshot after t=0."""
    n, n_t = ref.shape[:2]
    d = (y.numpy()[:, 1:] - ref[:, 1:]).reshape(n, n_t - 1, -1)
    r = ref[:, 1:].reshape(n, n_t - 1, -1)
    return float((np.linalg.norm(d, axis=-1) / np.linalg.norm(r, axis=-1)).max())


def mixed_batch(system, seed0: int = 0):
    """Two training environments and one of each held-out set, one trajectory each."""
    envs = system.train_envs[:2] + [system.heldout["interp"][0], system.heldout["extrap"][-1]]
    params = system.env_tensor(envs)
    return system.sample_initial_states(range(seed0, seed0 + len(params))), params


def order(errors: list[float]) -> list[float]:
    return [math.log2(a / b) for a, b in zip(errors[:-1], errors[1:])]


# ------------------------------------------------------------------ Gray-Scott
@pytest.fixture(scope="module")
def gs_reference():
    """Four trajectories over the test horizon [0, 400] (twice the protocol's training horizon)."""
    gs = GrayScott()
    u0, params = mixed_batch(gs)
    t = gs.times(2 * gs.horizon)
    return u0, params, t, dop853(gs_np, u0, params, t)


@pytest.mark.parametrize("solver", ["dopri5", "etdrk4"])
def test_gray_scott_matches_dop853_over_test_horizon(gs_reference, solver):
    u0, params, t, ref = gs_reference
    assert t[-1] == 400.0
    y = GrayScott(solver=solver).solve(u0, params, t)
    assert y.shape == (4, len(t), 2, 32, 32) and y.dtype == torch.float64
    assert rel_l2(y, ref).max() <= 1e-5
    assert worst_snapshot(y, ref) <= 1e-5


def test_gray_scott_dopri5_error_follows_tolerance(gs_reference):
    u0, params, t, ref = gs_reference
    t, ref = t[:11], ref[:, :11]
    errors = [rel_l2(GrayScott(rtol=tol, atol=tol).solve(u0, params, t), ref).max() for tol in (1e-5, 1e-7)]
    # Tolerance proportionality: 100x tighter tolerance, at least 20x smaller error.
    assert errors[1] < errors[0] / 20, errors


def test_gray_scott_etdrk4_is_fourth_order(gs_reference):
    u0, params, t, ref = gs_reference
    t, ref = t[:11], ref[:, :11]
    errors = [rel_l2(GrayScott(solver="etdrk4", solver_dt=h).solve(u0, params, t), ref).max() for h in (2.0, 1.0, 0.5)]
    assert all(3.5 < p < 4.6 for p in order(errors)), (errors, order(errors))


def test_gray_scott_stencil_symbol_is_the_np_roll_stencil():
    rng = np.random.default_rng(0)
    for n, dx in ((32, 1.0), (12, 0.5)):
        a = rng.standard_normal((n, n))
        ref = gs_laplacian_np(a, dx)
        spectral = torch.fft.irfft2(stencil_symbol(n, dx) * torch.fft.rfft2(torch.from_numpy(a)), s=(n, n))
        np.testing.assert_allclose(spectral.numpy(), ref, atol=1e-12)
        np.testing.assert_allclose(laplacian_9pt(torch.from_numpy(a), dx).numpy(), ref, atol=1e-12)


def test_gray_scott_rhs_matches_numpy():
    gs = GrayScott()
    u0, params = mixed_batch(gs)
    u = u0 + 0.1 * torch.rand(u0.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    got = gs.rhs(0.0, u, params).numpy()
    for i, (F, k) in enumerate(params.tolist()):
        np.testing.assert_allclose(got[i].ravel(), gs_np(0.0, u[i].numpy().ravel(), F, k), atol=1e-13)
    assert gs.rhs(0.0, u.float(), params).dtype == torch.float32


@pytest.mark.parametrize("solver", ["dopri5", "etdrk4"])
def test_gray_scott_batched_equals_one_at_a_time(solver):
    gs = GrayScott(solver=solver)
    u0, params = mixed_batch(gs, seed0=7)
    t = gs.times(50.0)
    batched = gs.solve(u0, params, t)
    for i in range(len(u0)):
        torch.testing.assert_close(
            batched[i : i + 1], gs.solve(u0[i : i + 1], params[i : i + 1], t), rtol=0, atol=1e-12
        )


def test_gray_scott_initial_states_are_determined_by_seed():
    gs = GrayScott()
    a, b = gs.sample_initial_states([3, 5]), gs.sample_initial_states([5, 3, 3])
    assert torch.equal(a[0], b[1]) and torch.equal(a[0], b[2]) and torch.equal(a[1], b[0])
    assert not torch.equal(a[0], a[1])
    u, v = a[:, 0], a[:, 1]
    assert set(u.unique().tolist()) == {0.0, 0.95} and set(v.unique().tolist()) == {0.05, 1.0}
    assert torch.equal(u == 0, v == 1)
    # Three 3x3 squares, possibly overlapping, never wrapping around the border.
    n_cells = (u == 0).sum(dim=(1, 2))
    assert ((9 <= n_cells) & (n_cells <= 27)).all()
    assert not (u[:, -1] == 0).any() and not (u[:, :, -1] == 0).any()


def test_gray_scott_protocol_and_registry():
    gs = get_system("gray_scott")
    assert gs.state_shape == (2, 32, 32) and gs.dt == 10.0 and gs.horizon == 200.0
    assert len(gs.train_envs) == 4 and len(gs.heldout["interp"]) == 4 and len(gs.heldout["extrap"]) == 4
    assert {(e["F"], e["k"]) for e in gs.heldout["extrap"]} == {
        (0.033, 0.057),
        (0.033, 0.060),
        (0.042, 0.057),
        (0.042, 0.060),
    }
    assert "dopri5" in gs.solver_description


@pytest.mark.parametrize(
    "overrides",
    [
        {"D_u": -0.1},
        {"D_v": 0.0},
        {"D_u": float("nan")},
        {"dx": 0},
        {"rtol": -1e-6},
        {"solver": "euler"},
        {"square_size": 32},
        {"train_envs": [{"F": -0.01, "k": 0.06}]},
        {"train_envs": [{"F": 0.03, "k": float("inf")}]},
        {"heldout": {"extrap": [{"F": 0.03}]}},
    ],
)
def test_gray_scott_bad_config_is_a_user_error(overrides):
    with pytest.raises(UserError):
        GrayScott(**overrides)


def test_gray_scott_bad_inputs_are_user_errors():
    gs = GrayScott()
    with pytest.raises(UserError):
        gs.sample_initial_states([-1])
    u0 = gs.sample_initial_states([0])
    with pytest.raises(UserError):
        gs.solve(u0[:, :1], torch.tensor([[0.03, 0.06]]), gs.times())
    with pytest.raises(UserError):
        gs.solve(u0, torch.tensor([[0.03, 0.06, 1.0]]), gs.times())


# ------------------------------------------------------------------ Navier-Stokes
@pytest.fixture(scope="module")
def ns_batch():
    ns = NavierStokes()
    u0, params = mixed_batch(ns)
    return ns, u0, params


def test_navier_stokes_matches_dop853(ns_batch):
    ns, u0, params = ns_batch
    t = ns.times()
    ref = dop853(ns_np, u0[:2], params[:2], t)
    assert rel_l2(ns.solve(u0[:2], params[:2], t), ref).max() <= 1e-4


def test_navier_stokes_matches_a_16x_smaller_step(ns_batch):
    ns, u0, params = ns_batch
    t = ns.times(2 * ns.horizon)
    fine = NavierStokes(solver_dt=ns.config["solver_dt"] / 16).solve(u0, params, t).numpy()
    assert rel_l2(ns.solve(u0, params, t), fine).max() <= 1e-4


def test_navier_stokes_etdrk4_is_fourth_order(ns_batch):
    _, u0, params = ns_batch
    t = np.arange(0.0, 6.0)
    fine = NavierStokes(solver_dt=0.1 / 64).solve(u0, params, t).numpy()
    errors = [rel_l2(NavierStokes(solver_dt=h).solve(u0, params, t), fine).max() for h in (0.1, 0.05, 0.025)]
    assert all(3.5 < p < 4.6 for p in order(errors)), (errors, order(errors))


def _modes(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.arange(n, dtype=torch.float64) / n
    return x[:, None].expand(n, n), x[None, :].expand(n, n)


def test_navier_stokes_exact_solution_with_forcing_and_advection():
    """w* = f / (8π² ν) is steady (one wavevector: u·∇w = 0), and a mode with a parallel
    wavevector on top of it decays at exp(−ν|2πk|² t) while advection stays exactly zero."""
    ns = NavierStokes(warmup=0.0)
    nu = torch.tensor([[0.7e-3], [1.3e-3]], dtype=torch.float64)
    x, y = _modes(32)
    steady = ns.forcing() / (8 * math.pi**2 * nu[:, :, None, None])
    bump = torch.sin(4 * math.pi * (x + y))
    t = np.arange(0.0, 21.0, 2.0)
    sol = ns.solve(steady + 0.5 * bump, nu, t)
    decay = torch.exp(-nu[:, 0, None] * 32 * math.pi**2 * torch.from_numpy(t))
    exact = steady[:, None] + 0.5 * decay[:, :, None, None, None] * bump
    torch.testing.assert_close(sol, exact, rtol=0, atol=1e-12)


def test_navier_stokes_single_mode_decays_without_forcing():
    ns = NavierStokes(forcing_amplitude=0.0, warmup=0.0)
    x, y = _modes(32)
    w0 = torch.cos(2 * math.pi * (3 * x - 2 * y))[None, None]
    nu = torch.tensor([[1e-3]], dtype=torch.float64)
    t = np.array([0.0, 5.0, 10.0])
    sol = ns.solve(w0, nu, t)
    exact = w0[:, None] * torch.exp(-1e-3 * 4 * math.pi**2 * 13 * torch.from_numpy(t))[None, :, None, None, None]
    torch.testing.assert_close(sol, exact, rtol=0, atol=1e-12)


def test_navier_stokes_rhs_advection_is_analytic():
    """w = a sin 2πx + b sin 4πy gives u·∇w = −1.5 a b cos 2πx cos 4πy (worked by hand)."""
    a, b, nu = 0.7, -1.3, 1e-3
    x, y = _modes(32)
    w = (a * torch.sin(2 * math.pi * x) + b * torch.sin(4 * math.pi * y))[None, None]
    ns = NavierStokes(warmup=0.0)
    expected = (
        1.5 * a * b * torch.cos(2 * math.pi * x) * torch.cos(4 * math.pi * y)
        - nu * (4 * math.pi**2 * a * torch.sin(2 * math.pi * x) + 16 * math.pi**2 * b * torch.sin(4 * math.pi * y))
        + ns.forcing()
    )
    p = torch.tensor([[nu]], dtype=torch.float64)
    torch.testing.assert_close(ns.rhs(0.0, w, p), expected[None, None], rtol=0, atol=1e-12)
    assert ns.rhs(0.0, w.float(), p).dtype == torch.float32


def test_navier_stokes_rhs_matches_numpy(ns_batch):
    ns, u0, params = ns_batch
    got = ns.rhs(0.0, u0, params).numpy()
    for i, (nu,) in enumerate(params.tolist()):
        np.testing.assert_allclose(got[i].ravel(), ns_np(0.0, u0[i].numpy().ravel(), nu), atol=1e-12)


def test_navier_stokes_batched_equals_one_at_a_time(ns_batch):
    ns, u0, params = ns_batch
    t = ns.times()
    batched = ns.solve(u0, params, t)
    for i in range(len(u0)):
        torch.testing.assert_close(
            batched[i : i + 1], ns.solve(u0[i : i + 1], params[i : i + 1], t), rtol=0, atol=1e-12
        )


def test_navier_stokes_initial_states_are_determined_by_seed_and_warmed_up_per_environment():
    ns = NavierStokes(warmup=2.0)
    nu = torch.tensor([[0.8e-3], [1.2e-3]], dtype=torch.float64)
    a, b = ns.initial_states([4, 9], nu), ns.initial_states([9, 4], nu.flip(0))
    torch.testing.assert_close(a, b.flip(0), rtol=0, atol=1e-13)
    assert not torch.allclose(a[0], a[1])
    assert a.shape == (2, 1, 32, 32) and a.dtype == torch.float64
    # The warm-up is the trajectory's own equation: one seed, two viscosities, two states.
    w = ns.random_field(4)[None]
    torch.testing.assert_close(a[:1], ns.solve(w, nu[:1], np.array([0.0, 2.0]))[:, -1])
    other = ns.initial_states([4], nu[1:])
    assert (other - a[:1]).abs().max() > 1e-6
    torch.testing.assert_close(ns.sample_initial_states([4]), w, rtol=0, atol=0)


def test_navier_stokes_random_field_has_the_reference_spectrum():
    """Pointwise variance of Re(ifft2(sqrt_eig · c)), c standard complex normal, is
    σ² Σ_{k≠0} (4π²|k|² + τ²)^(−α) with σ = τ^(α−1) (the FNO/LEADS normalisation)."""
    ns = NavierStokes(warmup=0.0)
    fields = torch.stack([ns.random_field(s) for s in range(200)])
    k = np.fft.fftfreq(32, 1 / 32)
    k2 = k[:, None] ** 2 + k[None, :] ** 2
    terms = (4 * np.pi**2 * k2 + 49.0) ** -2.5
    terms[0, 0] = 0.0
    variance = 7.0**3 * terms.sum()
    assert fields.mean(dim=(1, 2, 3)).abs().max() < 1e-12  # no mean mode
    assert abs(fields.var().item() / variance - 1) < 0.1


def test_navier_stokes_protocol_and_registry():
    ns = get_system("navier_stokes")
    assert ns.state_shape == (1, 32, 32) and ns.dt == 1.0 and ns.horizon == 10.0
    assert ns.config["warmup"] == 30.0
    assert [e["nu"] for e in ns.train_envs] == pytest.approx([0.8e-3, 0.9e-3, 1.0e-3, 1.1e-3, 1.2e-3])
    assert [e["nu"] for e in ns.heldout["interp"]] == pytest.approx([0.85e-3, 0.95e-3, 1.05e-3, 1.15e-3])


@pytest.mark.parametrize(
    "overrides",
    [
        {"train_envs": [{"nu": -1e-3}]},
        {"train_envs": [{"nu": 0.0}]},
        {"heldout": {"extrap": [{"nu": float("nan")}]}},
        {"ic_tau": -1.0},
        {"warmup": -1.0},
        {"solver_dt": 0.0},
        {"size": 31},
    ],
)
def test_navier_stokes_bad_config_is_a_user_error(overrides):
    with pytest.raises(UserError):
        NavierStokes(**overrides)


def test_navier_stokes_solve_rejects_non_positive_viscosity():
    ns = NavierStokes(warmup=0.0)
    w0 = ns.sample_initial_states([0])
    with pytest.raises(UserError):
        ns.solve(w0, torch.tensor([[-1e-3]], dtype=torch.float64), ns.times())


# ------------------------------------------------------------------ shared ETDRK4
def test_etdrk4_coefficients_match_closed_forms():
    """Away from hL = 0 the contour means equal the closed-form phi-function combinations."""
    h = 0.7
    L = torch.tensor([-30.0, -3.0, -0.5, 0.4], dtype=torch.float64)
    z = h * L
    s = ETDRK4(L, h)
    torch.testing.assert_close(s.Q, h * (torch.exp(z / 2) - 1) / z)
    torch.testing.assert_close(s.f1, h * (-4 - z + torch.exp(z) * (4 - 3 * z + z**2)) / z**3)
    torch.testing.assert_close(s.f2, h * (2 + z + torch.exp(z) * (z - 2)) / z**3)
    torch.testing.assert_close(s.f3, h * (-4 - 3 * z - z**2 + torch.exp(z) * (4 - z)) / z**3)
    # At L = 0 ETDRK4 is classical RK4: Q = h/2 and weights f1, 2 f2, f3 = h/6, h/3, h/6.
    zero = ETDRK4(torch.zeros(1, dtype=torch.float64), h)
    torch.testing.assert_close(
        torch.cat([zero.Q, zero.f1, zero.f2, zero.f3]), torch.tensor([h / 2, h / 6, h / 6, h / 6], dtype=torch.float64)
    )

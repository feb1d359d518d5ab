"""Kolmogorov flow (envs/kolmogorov.py): exact solutions, an independent numpy right-hand side
(also integrated by scipy's DOP853), the integrator's order, the cell average and the observations'
convergence in the solver grid, batching, initial states and warm-up, config errors.

Small grids throughout (observed 16 or 32, solved on 32 to 128): the properties tested do not
depend on the grid, and the whole file runs in seconds on one thread.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from leads.envs.errors import UserError
from leads.envs.kolmogorov import Kolmogorov, cell_average, energy_spectrum, lift
from leads.envs.registry import SYSTEMS, get_system


def small(**overrides) -> Kolmogorov:
    return Kolmogorov(**{"size": 16, "solver_size": 32, "warmup": 0.0, **overrides})


def params(*rows: tuple[float, float, float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def grid(n: int, domain: float) -> tuple[np.ndarray, np.ndarray]:
    """Physical coordinates x (axis −2) and y (axis −1) of an n x n grid on a side domain·π."""
    x = np.arange(n) * domain * np.pi / n
    return x[:, None] + 0 * x[None, :], 0 * x[:, None] + x[None, :]


def cell_average_cos(a: float, b: float, c: float, n: int, domain: float) -> np.ndarray:
    """Exact mean of cos(a x + b y + c) over the n x n cells centred on the grid points (side
    Δ = domain·π/n): cos(a x + b y + c) sinc(aΔ/2π) sinc(bΔ/2π), numpy's sinc(z) = sin πz / πz."""
    x, y = grid(n, domain)
    delta = domain * np.pi / n
    return np.cos(a * x + b * y + c) * np.sinc(a * delta / (2 * np.pi)) * np.sinc(b * delta / (2 * np.pi))


def kolmogorov_np(w: np.ndarray, nu: float, domain: float, F: float, drag: float = 0.1, periods: int = 2,
                  observed: bool = True) -> np.ndarray:
    """The right-hand side on an n x n field, from the equation: full complex FFTs, −Δψ = w,
    u = (ψ_y, −ψ_x), 2/3 rule on the product; the forcing's cell averages on an observed field,
    its point values on a solver field (``observed=False``)."""
    n = w.shape[-1]
    m = np.fft.fftfreq(n, 1.0 / n)
    mx, my = np.meshgrid(m, m, indexing="ij")
    kx, ky = 2 * mx / domain, 2 * my / domain  # 2π m / (domain π)
    k2 = kx**2 + ky**2
    w_h = np.fft.fft2(w)
    psi_h = np.divide(w_h, k2, out=np.zeros_like(w_h), where=k2 > 0)
    ux = np.fft.ifft2(1j * ky * psi_h).real
    uy = np.fft.ifft2(-1j * kx * psi_h).real
    wx = np.fft.ifft2(1j * kx * w_h).real
    wy = np.fft.ifft2(1j * ky * w_h).real
    mask = (np.abs(mx) <= 2 / 3 * (n // 2)) & (np.abs(my) <= 2 / 3 * (n // 2))
    advection = np.fft.ifft2(mask * np.fft.fft2(ux * wx + uy * wy)).real
    viscosity = np.fft.ifft2(-nu * k2 * w_h).real
    kf = 2 * np.pi * periods / (domain * np.pi)
    if observed:
        forcing = cell_average_cos(0.0, kf, -np.pi / 2, n, domain)  # cos(θ − π/2) = sin θ
    else:
        forcing = np.sin(kf * grid(n, domain)[1])
    return -advection + viscosity + F * (forcing - drag * w)


def rel_l2(y: torch.Tensor, ref: torch.Tensor) -> float:
    """Largest relative L2 error of any trajectory over its times after t = 0."""
    d = (y[:, 1:] - ref[:, 1:]).flatten(1).norm(dim=1)
    return float((d / ref[:, 1:].flatten(1).norm(dim=1)).max())


# ------------------------------------------------------------------ exact solutions
def test_taylor_green_vortex_decays_exactly():
    """F = 0: w = 2κ cos κx cos κy e^(−2νκ²t), κ = 2π m / L, is exact (ψ ∝ w, so u·∇w = 0);
    two domains and two viscosities in one batch, observed as cell averages."""
    k = small(solver_dt=0.05)  # nothing nonlinear: ETDRK4 is exact at any step
    rows = [(1e-3, 0.75, 0.0), (1e-3, 1.0, 0.0), (5e-3, 0.75, 0.0), (5e-3, 1.0, 0.0)]
    ms = [1, 2, 2, 3]
    observed, kappa = [], []
    for (_, domain, _), m in zip(rows, ms):
        kap = 2 * m / domain
        # 2 cos a cos b = cos(a + b) + cos(a − b)
        plus, minus = cell_average_cos(kap, kap, 0.0, 16, domain), cell_average_cos(kap, -kap, 0.0, 16, domain)
        observed.append(kap * (plus + minus))
        kappa.append(kap)
    w0 = torch.tensor(np.stack(observed))[:, None]
    p = params(*rows)
    t = np.array([0.0, 0.5, 1.0, 2.0])
    sol = k.solve(w0, p, t)
    decay = torch.exp(-2 * p[:, :1] * torch.tensor(kappa, dtype=torch.float64)[:, None] ** 2 * torch.from_numpy(t))
    torch.testing.assert_close(sol, w0[:, None] * decay[:, :, None, None, None], rtol=0, atol=1e-11)
    assert float(sol[:, -1].abs().max()) > 1.0  # still far from zero: the test can fail
    assert float(k.terms_rhs(("advection",), 0.0, w0, k.parameter_values(p)).abs().max()) < 1e-11


def test_laminar_kolmogorov_flow_is_steady_and_a_parallel_mode_decays():
    """w* = F sin(k_f y) / (ν k_f² + β F) is steady (a shear flow: u·∇w = 0); c cos(k' y) on top
    decays at exp(−(ν k'² + β F) t). Per trajectory (ν, domain, F), observed as cell averages."""
    k = small(solver_size=64, solver_dt=0.05)  # nothing nonlinear: ETDRK4 is exact at any step
    p = params((1e-3, 0.75, 1.0), (1e-4, 1.0, 0.5), (2e-3, 0.5, 2.0))
    t = np.array([0.0, 1.0, 2.5])
    exact, steady = [], []
    for nu, domain, F in p.tolist():
        kf, k3 = 4 / domain, 6 / domain  # 2 and 3 periods on the side domain·π
        steady.append(F / (nu * kf**2 + 0.1 * F) * cell_average_cos(0.0, kf, -np.pi / 2, 16, domain))
        bump = 0.7 * cell_average_cos(0.0, k3, 0.0, 16, domain)
        rate = nu * k3**2 + 0.1 * F
        exact.append([steady[-1] + bump * math.exp(-rate * s) for s in t])
    exact = torch.tensor(np.array(exact))[:, :, None]
    sol = k.solve(exact[:, 0], p, t)
    torch.testing.assert_close(sol, exact, rtol=0, atol=1e-11)
    assert float((sol[:, -1] - sol[:, 0]).abs().max()) > 0.1  # the bump has decayed visibly
    # On the observed grid the right-hand side of the steady part vanishes too.
    steady = torch.tensor(np.array(steady))[:, None]
    assert float(steady.abs().max()) > 1.0
    assert float(k.rhs(0.0, steady, p).abs().max()) < 1e-11


# ------------------------------------------------------------------ right-hand side
def test_rhs_matches_numpy_reference():
    k = Kolmogorov(size=32, solver_size=64)
    p = params((1e-3, 0.75, 0.0), (1e-4, 1.0, 1.0), (5e-4, 0.875, 1.0), (2e-3, 0.5, 0.3))
    w = torch.cat([k.sample_initial_states([i], domain=d) for i, d in enumerate(p[:, 1].tolist())])
    w = w + 0.5 * torch.randn(w.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    got = k.rhs(0.0, w, p).numpy()
    for i, (nu, domain, F) in enumerate(p.tolist()):
        ref = kolmogorov_np(w[i, 0].numpy(), nu, domain, F)
        np.testing.assert_allclose(got[i, 0], ref, rtol=0, atol=1e-11 * np.abs(ref).max())
    assert k.rhs(0.0, w.float(), p).dtype == torch.float32


# ------------------------------------------------------------------ time integrator
def test_solver_matches_dop853_on_the_numpy_equation():
    """The fine solve against scipy's DOP853 (rtol = atol = 1e-10) on the numpy right-hand side at
    the solver grid's points, observed by the cell averages written again in numpy."""
    from scipy.integrate import solve_ivp

    k = small(ic_k0=4.0, solver_dt=0.0025)
    p = params((1e-3, 1.0, 1.0), (1e-2, 0.75, 0.5))
    w0 = k.fine_initial_states([0, 1], p)
    t = np.array([0.0, 0.1, 0.2, 0.3])
    got = k.solve_fine(w0, p, t)
    m = np.fft.fftfreq(32, 1 / 32)
    box = np.outer(np.sinc(m / 16), np.sinc(m / 16))
    for i, (nu, domain, F) in enumerate(p.tolist()):
        def f(_, y, nu=nu, domain=domain, F=F):
            return kolmogorov_np(y.reshape(32, 32), nu, domain, F, observed=False).ravel()

        sol = solve_ivp(f, (0.0, 0.3), w0[i, 0].numpy().ravel(), method="DOP853", t_eval=t, rtol=1e-10, atol=1e-10)
        ref = np.stack([np.fft.ifft2(box * np.fft.fft2(y.reshape(32, 32))).real[::2, ::2] for y in sol.y.T])
        assert np.abs(ref[-1] - ref[0]).max() > 0.1 * np.abs(ref[0]).max()  # it moved
        np.testing.assert_allclose(got[i, :, 0].numpy(), ref, rtol=0, atol=1e-8 * np.abs(ref).max())


def test_etdrk4_is_fourth_order_on_the_nonlinear_flow():
    k = small(size=16, solver_size=64)
    p = params((1e-3, 1.0, 1.0), (1e-4, 0.75, 0.0))
    w0 = k.fine_initial_states([3, 4], p)
    t = np.array([0.0, 0.1, 0.2])
    ref = small(solver_size=64, solver_dt=0.02 / 64).solve_fine(w0, p, t)
    errors = [rel_l2(small(solver_size=64, solver_dt=h).solve_fine(w0, p, t), ref) for h in (0.02, 0.01, 0.005)]
    orders = [math.log2(a / b) for a, b in zip(errors[:-1], errors[1:])]
    assert all(3.5 < q < 4.6 for q in orders), (errors, orders)


# ------------------------------------------------------------------ grids and filter
def test_cell_average_is_exact_and_lift_is_its_inverse():
    # Exact on a sum of modes, against the closed form.
    x, y = grid(32, 0.75)
    modes = [(2 / 0.75 * a, 2 / 0.75 * b, c) for a, b, c in ((1, 0, 0.3), (3, -5, 1.0), (7, 2, -0.4), (15, 15, 0.0))]
    field = sum(np.cos(a * x + b * y + c) for a, b, c in modes)
    expected = sum(cell_average_cos(a, b, c, 8, 0.75) for a, b, c in modes)
    torch.testing.assert_close(cell_average(torch.tensor(field), 8), torch.tensor(expected), rtol=0, atol=1e-13)
    # A smooth field that is no sum of few modes, against adaptive quadrature of each cell
    # (separable, so two 1-D integrals): exp(sin x) cos 2y on the side 2π, 8 cells per side.
    from scipy.integrate import quad

    x, y = grid(64, 2.0)
    got = cell_average(torch.tensor(np.exp(np.sin(x)) * np.cos(2 * y)), 8).numpy()
    delta = 2 * np.pi / 8
    cells = np.arange(8) * delta
    ax = [quad(lambda s: np.exp(np.sin(s)), c - delta / 2, c + delta / 2, epsabs=1e-14)[0] / delta for c in cells]
    ay = [quad(lambda s: np.cos(2 * s), c - delta / 2, c + delta / 2, epsabs=1e-14)[0] / delta for c in cells]
    np.testing.assert_allclose(got, np.outer(ax, ay), rtol=0, atol=1e-12)
    # lift: the band-limited field whose cell averages are given, on any multiple of the grid.
    w = torch.randn(2, 1, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for n_fine in (8, 16, 32, 64):
        up = lift(w, n_fine)
        assert up.shape == (2, 1, n_fine, n_fine) and up.dtype == torch.float64
        torch.testing.assert_close(cell_average(up, 8), w, rtol=0, atol=1e-13)
    x, y = grid(32, 1.0)
    smooth = torch.tensor(np.sin(2 * x) * np.cos(6 * y) + np.cos(4 * x + 2 * y))  # modes |m| < 4
    torch.testing.assert_close(lift(cell_average(smooth, 8), 32), smooth, rtol=0, atol=1e-13)


def test_filtered_observations_converge_in_the_solver_grid():
    """The same random field solved on 32, 64 and 128 points per side, observed on 16: the
    observations converge spectrally in the solver grid. Measured (k0 = 4, ν = 1e-3, t <= 0.5):
    1.5e-2 (32), 5.0e-4 (64), 7.4e-6 (128) relative L2 against 256. The discrete block mean
    of GEPS would not converge: its cells move by half a solver cell with the grid (9% between
    128 and 256 points at k0 = 10)."""
    p = params((1e-3, 1.0, 1.0), (1e-3, 0.75, 0.0))
    t = np.arange(0.0, 0.51, 0.1)
    out = {n: small(solver_size=n, solver_dt=0.005, ic_k0=4.0).generate([0, 1], p, t) for n in (32, 64, 128)}
    moved = (out[128][:, -1] - out[128][:, 0]).flatten(1).norm(dim=1) / out[128][:, 0].flatten(1).norm(dim=1)
    assert float(moved.min()) > 0.1
    coarse, fine = rel_l2(out[32], out[128]), rel_l2(out[64], out[128])
    assert fine < 2e-3 and fine < coarse / 10, (coarse, fine)


# ------------------------------------------------------------------ batching, initial states
def test_batched_equals_one_at_a_time():
    k = small()
    p = params((1e-3, 0.75, 0.0), (1e-4, 1.0, 1.0), (2e-3, 0.5, 1.0))
    w0 = torch.cat([k.sample_initial_states([i], domain=d) for i, d in enumerate(p[:, 1].tolist())])
    t = np.array([0.0, 0.05, 0.1])
    batched = k.solve(w0, p, t)
    assert batched.shape == (3, 3, 1, 16, 16) and batched.dtype == torch.float64
    torch.testing.assert_close(batched[:, 0], w0, rtol=0, atol=1e-12)  # solve starts at its state
    for i in range(3):
        torch.testing.assert_close(batched[i : i + 1], k.solve(w0[i : i + 1], p[i : i + 1], t), rtol=0, atol=1e-12)
    gen = k.generate([5, 6, 7], p, t)
    for i, s in enumerate((5, 6, 7)):
        torch.testing.assert_close(gen[i : i + 1], k.generate([s], p[i : i + 1], t), rtol=0, atol=1e-12)


def test_random_field_has_the_geps_spectrum_and_does_not_depend_on_the_grid():
    k = Kolmogorov(size=16, solver_size=128)
    for domain in (0.75, 1.0):
        w = k.random_field(3, domain)
        assert w.shape == (1, 128, 128) and abs(float(w.mean())) < 1e-12
        m = torch.fft.fftfreq(128, 1 / 128, dtype=torch.float64)
        kk = 2 / domain * torch.sqrt(m[:, None] ** 2 + m[None, :65] ** 2)
        amplitude = torch.sqrt(kk * energy_spectrum(kk, 10.0) / math.pi)
        amplitude[64], amplitude[:, 64] = 0.0, 0.0  # Nyquist modes dropped
        torch.testing.assert_close(torch.fft.rfft2(w[0]).abs() / 128**2, amplitude, rtol=0, atol=1e-12)
        # Same seed, finer grid (both hold every mode above 1e-15 of the peak): the same field.
        fine = Kolmogorov(size=16, solver_size=256).random_field(3, domain)
        torch.testing.assert_close(fine[:, ::2, ::2], w, rtol=0, atol=1e-12)
    assert not torch.allclose(k.random_field(3, 1.0), k.random_field(4, 1.0))
    # GEPS' normalisation: the variance is the sum of squared mode amplitudes, ≈ 62.5 at domain 1.
    assert 60 < float(Kolmogorov(size=16, solver_size=128).random_field(0, 1.0).var()) < 64


def test_initial_states_are_determined_by_seed_and_warmed_up_per_environment():
    k = small(warmup=0.1)
    p = params((1e-3, 0.75, 0.0), (1e-4, 1.0, 1.0))
    a, b = k.initial_states([4, 9], p), k.initial_states([9, 4], p.flip(0))
    torch.testing.assert_close(a, b.flip(0), rtol=0, atol=1e-13)
    assert a.shape == (2, 1, 16, 16) and a.dtype == torch.float64 and not torch.allclose(a[0], a[1])
    # The warm-up is the fine solve of the trajectory's own equation from its fine random field.
    fine = k.random_field(4, 0.75)[None]
    torch.testing.assert_close(a[:1], k.solve_fine(fine, p[:1], np.array([0.0, 0.1]))[:, -1], rtol=0, atol=1e-13)
    # One seed, another environment (same domain, other ν and F): another state.
    other = k.initial_states([4], params((1e-4, 0.75, 1.0)))
    assert float((other - a[:1]).abs().max()) > 1e-3
    # generate starts where initial_states ends, and continues the fine solve.
    t = np.array([0.0, 0.05, 0.1])
    gen = k.generate([4, 9], p, t)
    torch.testing.assert_close(gen[:, 0], a, rtol=0, atol=1e-13)
    continued = k.solve_fine(fine, p[:1], np.array([-0.1, 0.0, 0.05, 0.1]))[:, 1:]
    torch.testing.assert_close(gen[:1], continued, rtol=0, atol=1e-13)
    # Without warm-up, the initial states are the block means of the random fields.
    cold = small()
    torch.testing.assert_close(cold.initial_states([4], p[:1]), cold.sample_initial_states([4], domain=0.75),
                               rtol=0, atol=1e-13)
    torch.testing.assert_close(cold.sample_initial_states([4], domain=0.75), cell_average(fine, 16), rtol=0, atol=0)


# ------------------------------------------------------------------ config, registry
@pytest.mark.parametrize(
    "overrides",
    [
        {"solver_size": 40},
        {"solver_size": 8},
        {"size": 15},
        {"size": True},
        {"train_envs": [{"nu": -1e-3, "domain": 1.0, "F": 1.0}]},
        {"train_envs": [{"nu": 1e-3, "domain": 0.0, "F": 1.0}]},
        {"train_envs": [{"nu": 1e-3, "domain": 1.0, "F": -1.0}]},
        {"train_envs": [{"nu": 1e-3, "domain": 1.0}]},
        {"heldout": {"extrap": [{"nu": float("nan"), "domain": 1.0, "F": 0.0}]}},
        {"drag": -0.1},
        {"warmup": -1.0},
        {"solver_dt": 0.0},
        {"ic_k0": 0.0},
        {"forcing_periods": 0},
        {"forcing_periods": 1.5},
        {"forcing_periods": 8},
    ],
)
def test_bad_config_is_a_one_line_user_error(overrides):
    with pytest.raises(UserError) as e:
        small(**overrides)
    assert "\n" not in str(e.value)


def test_bad_inputs_are_user_errors():
    k = small()
    w0 = k.sample_initial_states([0])
    with pytest.raises(UserError):
        k.sample_initial_states([-1])
    with pytest.raises(UserError, match="nu > 0"):
        k.solve(w0, params((-1e-3, 1.0, 0.0)), k.times())
    with pytest.raises(UserError, match="nu > 0"):
        k.solve(w0, params((1e-3, 1.0, -1.0)), k.times())
    with pytest.raises(UserError):
        k.solve(w0[:, :, :8], params((1e-3, 1.0, 0.0)), k.times())
    with pytest.raises(UserError):
        k.solve(w0, torch.tensor([[1e-3, 1.0]], dtype=torch.float64), k.times())


def test_protocol_defaults_and_registry():
    assert SYSTEMS["kolmogorov"] is Kolmogorov
    k = get_system("kolmogorov")
    assert k.state_shape == (1, 64, 64) and k.config["solver_size"] == 256
    assert k.dt == 0.05 and k.horizon == 1.0 and k.config["warmup"] == 0.4
    assert len(k.times()) == 21 and len(k.times(2 * k.horizon)) == 41
    assert {(e["nu"], e["domain"], e["F"]) for e in k.train_envs} == {
        (nu, d, F) for nu in (1e-3, 1e-4) for d in (0.75, 1.0) for F in (0.0, 1.0)
    }
    assert set(k.heldout) == {"interp", "extrap"}
    assert all(len(envs) == 4 for envs in k.heldout.values())
    assert "ETDRK4" in k.solver_description and "256" in k.solver_description
    assert k.terms == {
        "advection": ("domain",), "viscosity": ("nu", "domain"), "forcing": ("F",), "drag": ("F", "drag")
    }

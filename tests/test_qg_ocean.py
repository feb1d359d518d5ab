"""The two-layer QG ocean (envs/qg.py, envs/qg_ocean.py): pyqg's trajectories (pyqg-jax, where it
installs), the inviscid invariants and the dissipation of drag and filter, the benchmark's
coarse-graining, the spin-up criterion, the sea-surface-height observation, the known terms and
the one-line errors. Grids of 8 to 32 points: each test runs in seconds on one thread.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from leads.envs.errors import UserError
from leads.envs.qg import QGModel, filter_exponent, grid, mean_square
from leads.envs.qg_ocean import EDDY, JET, QGOcean, coarsen_hat
from leads.envs.registry import get_system
from leads.envs.spinup import StationaryEnergy

L = 1.0e6
PYQG = {"rd": 15000.0, "U1": 0.025, "U2": 0.0}


def params(env: dict, **changes: float) -> dict:
    return {**PYQG, **env, **changes}


def band_limited(n: int, seed: int, cutoff: int, amplitude: float = 1e-5) -> torch.Tensor:
    """Random PV of both layers with modes |m| <= cutoff only, ``(1, 2, n, n)``."""
    g = torch.Generator().manual_seed(seed)
    qh = torch.fft.rfft2(torch.randn(1, 2, n, n, generator=g, dtype=torch.float64))
    m = torch.fft.fftfreq(n, 1.0 / n, dtype=torch.float64).abs().reshape(-1, 1)
    k = torch.fft.rfftfreq(n, 1.0 / n, dtype=torch.float64).reshape(1, -1)
    qh = qh * ((m <= cutoff) & (k <= cutoff))
    qh[..., 0, 0] = 0
    q = torch.fft.irfft2(qh, s=(n, n))
    return amplitude * q / q.std()


def small(**overrides) -> QGOcean:
    """8^2 observations of a 16^2 solve: too coarse for baroclinic instability, so its flows decay
    slowly and no growth is asked of the spin-up."""
    return QGOcean(**{"size": 8, "solver_size": 16, "spinup_window": 20 * 86400.0, "spinup_growth": 0.0, **overrides})


# ----------------------------------------------------------------- pyqg's model
@pytest.mark.slow  # importing jax and compiling its step: ~6 CPU s, more on a loaded machine
def test_trajectory_matches_pyqg_jax_with_its_time_scheme():
    jax = pytest.importorskip("jax", reason="pyqg-jax comparison needs jax (pip install jax jaxlib pyqg-jax)")
    pyqg_jax = pytest.importorskip("pyqg_jax", reason="pyqg-jax not installed (pip install pyqg-jax)")
    jax.config.update("jax_enable_x64", True)
    n, steps = 32, 300
    for env in (EDDY, JET):
        model = pyqg_jax.qg_model.QGModel(nx=n, precision=pyqg_jax.state.Precision.DOUBLE, **env)
        stepped = pyqg_jax.steppers.SteppedModel(model=model, stepper=pyqg_jax.steppers.AB3Stepper(dt=3600.0))
        state = stepped.create_initial_state(jax.random.key(3))
        q0 = torch.tensor(np.asarray(state.state.q))
        state = jax.lax.fori_loop(0, steps, lambda i, s, m=stepped: m.step_model(s), state)
        theirs = torch.tensor(np.asarray(state.state.q))
        ours = QGModel(n, L, params(env))
        qh, history = torch.fft.rfft2(q0[None]), []
        for _ in range(steps):
            qh = ours.step(qh, history, 3600.0)
        q = torch.fft.irfft2(qh, s=(n, n))[0]
        assert float((q - theirs).norm() / theirs.norm()) < 1e-12


def test_batched_parameters_give_each_row_its_own_trajectory():
    q0 = torch.cat([band_limited(16, s, 6) for s in (0, 1)])
    rows = [params(EDDY), params(JET)]
    batched = QGModel(16, L, {k: torch.tensor([r[k] for r in rows], dtype=torch.float64) for k in rows[0]})
    qh, history = torch.fft.rfft2(q0), []
    for _ in range(20):
        qh = batched.step(qh, history, 3600.0)
    for i, row in enumerate(rows):
        one, h1 = torch.fft.rfft2(q0[i:i + 1]), []
        single = QGModel(16, L, row)
        for _ in range(20):
            one = single.step(one, h1, 3600.0)
        torch.testing.assert_close(qh[i:i + 1], one, rtol=0, atol=0)


# ----------------------------------------------------------------- invariants and dissipation
def energy_rate(model: QGModel, qh: torch.Tensor) -> torch.Tensor:
    """dE/dt = −Σ_i (H_i/H) <ψ_i ∂t q_i> of the tendency (E = −½ Σ_i (H_i/H) <ψ_i q_i>)."""
    psih, rate = model.invert(qh), model.tendency(qh)
    h1 = float(model.delta / (1 + model.delta))
    weights = torch.tensor([h1, 1 - h1], dtype=torch.float64)
    cross = (psih.conj() * rate).real
    col = torch.full((qh.shape[-1],), 2.0, dtype=torch.float64)
    col[0] = col[-1] = 1.0
    n = qh.shape[-2]
    return -(weights * (cross * col).sum((-2, -1)) / n**4).sum(1)


def enstrophy_rate(model: QGModel, qh: torch.Tensor) -> torch.Tensor:
    h1 = float(model.delta / (1 + model.delta))
    weights = torch.tensor([h1, 1 - h1], dtype=torch.float64)
    col = torch.full((qh.shape[-1],), 2.0, dtype=torch.float64)
    col[0] = col[-1] = 1.0
    n = qh.shape[-2]
    return (weights * ((qh.conj() * model.tendency(qh)).real * col).sum((-2, -1)) / n**4).sum(1)


def test_inviscid_model_conserves_energy_and_enstrophy():
    """Without mean shear, drag or filter the model conserves E and Z; on fields whose modes lie
    below n/4 the products are alias-free, so the discrete rates vanish to rounding."""
    n = 32
    model = QGModel(n, L, params(EDDY, rek=0.0, U1=0.0), filterfac=None)
    qh = torch.fft.rfft2(band_limited(n, 0, n // 4 - 1))
    E, Z = model.energy(qh), model.enstrophy(qh)
    scale_e = float(model.energy(model.tendency(qh)).sqrt() * E.sqrt())  # |dE/dt| of a typical size
    assert abs(float(energy_rate(model, qh))) < 1e-12 * scale_e
    assert abs(float(enstrophy_rate(model, qh))) < 1e-12 * float(Z) * 1e-5
    # In time the drift of pyqg's scheme falls at second order with the step (its Euler and AB2
    # start steps set the order; measured: 1.9e-5, 4.7e-6, 1.2e-6 over 20 h at 1 h, 30 min, 15 min).
    qh = qh / 10  # eddy turnover times of days, as in the spun-up flows
    E = model.energy(qh)
    drifts = []
    for dt in (3600.0, 1800.0):
        state, history = qh.clone(), []
        for _ in range(int(20 * 3600 / dt)):
            state = model.step(state, history, dt)
        drifts.append(abs(float(model.energy(state) / E) - 1))
    assert drifts[0] < 5e-5 and 3.5 < drifts[0] / drifts[1] < 4.5


def test_drag_and_filter_dissipate_as_stated():
    n = 32
    model = QGModel(n, L, params(EDDY, U1=0.0), filterfac=None)
    qh = torch.fft.rfft2(band_limited(n, 1, n // 4 - 1))
    psih = model.invert(qh)
    h2 = 1 / (1 + EDDY["delta"])
    expected = -EDDY["rek"] * h2 * float(mean_square(torch.sqrt(model.grid.kappa2) * psih[:, 1:], n))
    assert math.isclose(float(energy_rate(model, qh)), expected, rel_tol=1e-9)
    # The filter multiplies both layers' modes by the same factor <= 1: it removes energy.
    rough = torch.fft.rfft2(band_limited(n, 2, n // 2))
    filtered = rough * torch.exp(filter_exponent(n, 23.6))
    with_filter = QGModel(n, L, params(EDDY))
    assert float(with_filter.energy(filtered)) < 0.999 * float(with_filter.energy(rough))


# ----------------------------------------------------------------- coarse-graining
def cosines(n: int, modes: list[tuple[int, int, float]]) -> torch.Tensor:
    y, x = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
    return sum(a * torch.cos(2 * math.pi * (kx * x + ky * y) / n + 0.3) for kx, ky, a in modes)


def test_coarse_graining_is_the_benchmarks_truncation_and_filter():
    N, n = 64, 16
    low = [(1, 2, 1.0), (3, -1, 0.5)]  # κ dx < 0.65π on the coarse grid: kept as they are
    high = [(12, 0, 0.7), (0, 20, 0.2)]  # beyond the coarse Nyquist: removed
    fine = cosines(N, low + high)[None, None]
    coarse = coarsen_hat(torch.fft.rfft2(fine), n, L)
    torch.testing.assert_close(coarse[0, 0], cosines(n, low), rtol=0, atol=1e-12)
    # a mode inside the filter band is damped by exactly the coarse filter (sharp) or the Gaussian
    mode = (6, 0, 1.0)
    fine = cosines(N, [mode])[None, None]
    sharp = coarsen_hat(torch.fft.rfft2(fine), n, L, "sharp")
    gauss = coarsen_hat(torch.fft.rfft2(fine), n, L, "gaussian")
    kdx = 2 * math.pi * 6 / n
    assert math.isclose(float(sharp.std() / cosines(n, [mode]).std()), math.exp(-23.6 * (kdx - 0.65 * math.pi) ** 4),
                        rel_tol=1e-9)
    assert math.isclose(float(gauss.std() / cosines(n, [mode]).std()), math.exp(-(kdx * 2) ** 2 / 24), rel_tol=1e-9)


def test_sea_surface_height_of_coarse_pv_is_the_coarse_streamfunction():
    system = small(size=16, solver_size=64)
    env = system.env_tensor([EDDY, JET])
    q = torch.cat([band_limited(64, s, 30) for s in (0, 1)])
    qh = torch.fft.rfft2(q)
    model = QGModel(64, L, system.physical(env))
    psi1_hat = model.invert(qh)[:, :1]
    expected = system.coarsen(psi1_hat)
    ssh = system.observe(system.coarsen(qh), env, "ssh")
    torch.testing.assert_close(ssh, expected, rtol=1e-10, atol=1e-10 * float(expected.abs().max()))
    series = system.observe(torch.stack([system.coarsen(qh)] * 3, dim=1), env, "ssh")
    assert series.shape == (2, 3, 1, 16, 16) and torch.equal(series[:, 1], ssh)


# ----------------------------------------------------------------- spin-up
def test_stationarity_criterion_on_known_series():
    days = 200
    t = torch.arange(days, dtype=torch.float64)
    growth = 1e-8 * torch.exp(t / 10)
    steady = 1.0 + 0.05 * torch.sin(t / 3)
    overshoot = 1.0 + 2.0 * torch.exp(-((t - 50) / 15) ** 2)
    quiet_then_unstable = 1e-3 * (1 + 0.01 * torch.sin(t)) + torch.sigmoid((t - 100) / 5)  # flat, then grows
    series = torch.stack([growth, steady, overshoot, quiet_then_unstable], dim=1)
    crit = StationaryEnergy(4, samples_per_window=20, windows=3, tol=0.15, growth=10.0)
    when = torch.full((4,), -1)
    for day in range(days):
        now = crit.add(series[day])
        when[now] = day
    assert when[0] == -1  # growing: never
    assert when[1] == -1  # steady from the start: it never grew, so it never left its initial state
    assert when[2] == -1  # likewise (an overshoot of a flow that did not grow)
    assert when[3] >= 159  # the quiet start passes the spread test but not the growth: after the rise
    crit = StationaryEnergy(3, samples_per_window=20, windows=3, tol=0.15)  # no growth asked
    when = torch.full((3,), -1)
    for day in range(days):
        when[crit.add(series[day, :3])] = day
    assert when[0] == -1 and when[1] == 59  # steady: at the end of the third window
    assert when[2] >= 99  # the bump is straddled by windows 2-4: only stationary once past it


def test_spin_up_ends_when_energy_is_stationary_and_not_by_batch():
    system = small(spinup_window=10 * 86400.0)
    env = system.env_tensor([EDDY, EDDY, JET])
    batch = system.initial_states([0, 1, 2], env)
    alone = system.initial_states([1], env[1:2])
    torch.testing.assert_close(batch[1:2], alone, rtol=0, atol=0)
    assert not torch.equal(batch[0], batch[1])
    assert torch.isfinite(batch).all() and float(batch.abs().max()) > 0


def test_a_flow_that_never_settles_is_a_one_line_error():
    system = small(spinup_max=30 * 86400.0, spinup_tol=1e-6)
    with pytest.raises(UserError) as e:
        system.initial_states([0], system.env_tensor([EDDY]))
    assert "\n" not in str(e.value) and "spinup_max" in str(e.value)


# ----------------------------------------------------------------- errors
@pytest.mark.parametrize("override, key", [({"rd": 0.0}, "rd"), ({"rd": -1.0}, "rd"), ({"solver_dt": 0.0}, "solver_dt"),
                                           ({"dt": 5000.0}, "dt"), ({"coarse_filter": "box"}, "coarse_filter"),
                                           ({"size": 12, "solver_size": 16}, "solver_size")])
def test_bad_config_is_a_one_line_error(override, key):
    with pytest.raises(UserError) as e:
        small(**override)
    assert "\n" not in str(e.value) and key in str(e.value)


def test_bad_environment_is_a_one_line_error():
    system = small()
    for env in ({"beta": 1e-11, "rek": 1e-7, "delta": 0.0}, {"beta": 1e-11, "rek": 1e-7, "delta": -0.1},
                {"beta": 1e-11, "rek": -1e-7, "delta": 0.1}):
        with pytest.raises(UserError) as e:
            system.env_tensor([env])
        assert "\n" not in str(e.value)


def test_unstable_time_step_is_a_one_line_error():
    """Eddies of ~0.5 m/s on a 62 km grid: a 1-day step is beyond AB3's advective limit."""
    system = small(size=16, solver_dt=86400.0, dt=86400.0, horizon=30 * 86400.0, spinup_sample=86400.0)
    with pytest.raises(UserError) as e:
        system.coarse_model(band_limited(16, 0, 7, amplitude=2e-5), system.env_tensor([EDDY]), system.times())
    assert "\n" not in str(e.value) and "solver_dt" in str(e.value)


# ----------------------------------------------------------------- terms and the coarse model
def test_terms_are_pyqg_tendency_on_the_observed_grid():
    system = small(size=16)
    env = system.env_tensor([EDDY, JET])
    u = torch.cat([band_limited(16, s, 7) for s in (3, 4)])
    values = system.parameter_values(env)
    total = system.terms_rhs(("advection", "background_flow", "beta", "drag"), 0.0, u, values)
    model = QGModel(16, L, system.physical(env))
    expected = torch.fft.irfft2(model.tendency(torch.fft.rfft2(u)), s=(16, 16))
    torch.testing.assert_close(total, expected, rtol=1e-12, atol=1e-12 * float(expected.abs().max()))
    # the filter term is the filter as a rate: over one solver step, exp(rate dt) is the filter
    rate = system.linear_symbol(("filter",), values)
    torch.testing.assert_close(torch.exp(rate * system.config["solver_dt"])[:, :1], model.filter)


def test_coarse_model_is_pyqg_at_the_observed_resolution():
    system = small(size=16)
    env = system.env_tensor([EDDY])
    u0 = band_limited(16, 5, 6)
    t = system.times()
    out = system.coarse_model(u0, env, t)
    model, history = QGModel(16, L, system.physical(env)), []
    qh = torch.fft.rfft2(u0)
    for _ in range(int(round(t[-1] / 3600.0))):
        qh = model.step(qh, history, 3600.0)
    torch.testing.assert_close(out[:, -1], torch.fft.irfft2(qh, s=(16, 16)), rtol=1e-13, atol=0)
    assert out.shape == (1, len(t), 2, 16, 16)
    torch.testing.assert_close(out[:, 0], u0, rtol=1e-13, atol=1e-13 * float(u0.abs().max()))


def test_registered_with_quick_scale_defaults():
    system = get_system("qg_ocean")
    assert system.state_shape == (2, 16, 16) and JET in system.heldout["extrap"]
    assert grid(16, L).kappa2.shape == (1, 1, 16, 9)


def test_coarse_forecast_from_ssh_takes_the_lower_layer_at_rest():
    """From the sea surface height the coarse model starts with ψ2 = 0: for a state whose lower layer
    is at rest it is the coarse model's forecast of the whole state, observed."""
    system = small(size=16)
    env = system.env_tensor([EDDY, JET])
    model = QGModel(16, L, system.physical(env))
    psi = torch.fft.rfft2(band_limited(16, 6, 6)[:, :1].repeat(2, 1, 1, 1) * 1e8)  # ψ1 (m²/s), ψ2 = 0
    psi = torch.cat((psi, torch.zeros_like(psi)), dim=1)
    g = model.grid
    q = torch.fft.irfft2(torch.cat((-g.kappa2 * psi[:, :1] + model.F1 * (psi[:, 1:] - psi[:, :1]),
                                    -g.kappa2 * psi[:, 1:] + model.F2 * (psi[:, :1] - psi[:, 1:])), dim=1), s=(16, 16))
    t = system.times()[:3]
    ssh = system.observe(q, env, "ssh")
    expected = system.observe(system.coarse_model(q, env, t), env, "ssh")
    torch.testing.assert_close(system.coarse_forecast(ssh, env, t, "ssh"), expected, rtol=1e-9,
                               atol=1e-9 * float(expected.abs().max()))
    torch.testing.assert_close(system.coarse_forecast(q, env, t), system.coarse_model(q, env, t))

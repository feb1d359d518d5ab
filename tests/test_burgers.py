"""Burgers: the solver against the Cole-Hopf exact solution, its convergence order, the forcing's
exact mass balance, the observation filter, and the named terms against hand-worked values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from leads.envs.burgers import Burgers, block_mean, weno5_flux_divergence
from leads.envs.errors import UserError
from leads.envs.registry import get_system


def cole_hopf_cell_averages(b: Burgers, seed: int, mu: float, t: float, size: int, ny: int) -> torch.Tensor:
    """Exact cell averages on ``size`` cells of unforced viscous Burgers from seed's initial field.

    u = −2μ (log θ)_x with θ the heat flow of exp(−U0/(2μ)), U0' = u0; so a cell average is
    −2μ [log θ] between the cell's edges / dx, and log θ at a point is a log-sum-exp over the
    heat kernel against exp(−U0/(2μ)) (periodic U0: the kernel sums over the images y ± L).
    """
    L = b.config["length"]
    a = b.random_modes(seed)
    k = 2 * math.pi / L * torch.arange(1, a.shape[0] + 1, dtype=torch.float64)
    y = torch.arange(ny, dtype=torch.float64) * (L / ny)
    U0 = (2 * (a * (torch.exp(1j * k * y[:, None]) - 1) / (1j * k)).real).sum(1)
    ys, Us = torch.cat([y - L, y, y + L]), U0.repeat(3)
    edges = torch.arange(size + 1, dtype=torch.float64) * (L / size)
    log_theta = torch.logsumexp(-((edges[:, None] - ys) ** 2 / (2 * t) + Us) / (2 * mu), dim=1)
    return -2 * mu * (log_theta[1:] - log_theta[:-1]) / (L / size)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def unforced(mus: list[float]) -> torch.Tensor:
    return torch.tensor([[mu, 0.0, 1.5] for mu in mus], dtype=torch.float64)


def test_unforced_solution_matches_cole_hopf():
    """Measured at 1024 solver cells, 256 observed: 2e-8 (mu=0.5), 2.6e-6 (0.05); 5e-3 before the
    shocks form (t = 0.05) 4.8e-5. Bounds are those, rounded up."""
    b = Burgers(solver_size=1024, size=256)
    mus = [0.5, 0.05, 5e-3]
    t = b.times(0.1)
    y = b.generate([3, 3, 3], unforced(mus), t)
    for i, (mu, bound) in enumerate(zip(mus, (1e-7, 1e-5, 1e-4))):
        for j in (25, 50) if mu == 5e-3 else (50, 100):
            exact = cole_hopf_cell_averages(b, 3, mu, float(t[j]), 256, ny=16384)
            assert rel(y[i, j, 0], exact) < bound, (mu, t[j])


def test_shocks_converge_to_cole_hopf_with_the_grid():
    """mu = 5e-4 after shocks form (t = 0.1): the filtered data converge (first order, as a shock-
    capturing scheme must): measured 1.7e-2 at 1024 cells, 7.7e-3 at 2048."""
    exact = cole_hopf_cell_averages(Burgers(), 5, 5e-4, 0.1, 256, ny=65536)
    errors = []
    for n in (1024, 2048):
        b = Burgers(solver_size=n, size=256)
        y = b.generate([5], unforced([5e-4]), np.array([0.0, 0.05, 0.1]))
        errors.append(rel(y[0, -1, 0], exact))
    assert errors[0] < 3e-2 and errors[1] < errors[0] / 1.8


def test_smooth_solution_converges_at_high_order():
    """mu = 0.05 (no shock): the CFL step shrinks with the cells, so this is the combined space-time
    order; WENO5 + ETDRK4 give about 5 (benchmarks/burgers_accuracy.py: 7.0e-7, 2.2e-8 at 1024,
    2048 cells on 256 observed; here 256 and 512 cells on 128, for speed)."""
    t = np.array([0.0, 0.05])
    errors = []
    for n in (256, 512):
        b = Burgers(solver_size=n, size=128)
        exact = cole_hopf_cell_averages(b, 1, 0.05, 0.05, 128, ny=16384)
        errors.append(rel(b.generate([1], unforced([0.05]), t)[0, -1, 0], exact))
    assert math.log2(errors[0] / errors[1]) > 4.0, errors


def test_forcing_adds_exactly_its_mass():
    """Flux divergence and viscosity conserve the mean, so mean(u) grows by F t <g_w>, with
    <g_w> = sqrt(π/w) / L (the periodic bump's integral over the period)."""
    b = Burgers(solver_size=512, size=64)
    p = torch.tensor([[0.05, 5.0, 1.5], [5e-3, 2.0, 3.0]], dtype=torch.float64)
    t = np.array([0.0, 0.03, 0.06])
    y = b.generate([0, 1], p, t)
    gain = y[:, :, 0].mean(-1) - y[:, :1, 0].mean(-1)
    expected = p[:, 1:2] * torch.from_numpy(t) * torch.sqrt(math.pi / p[:, 2:3]) / b.config["length"]
    torch.testing.assert_close(gain, expected, rtol=1e-10, atol=1e-12)
    # and the exact cell averages of the bump integrate to the same
    g = b.bump_cell_averages(torch.tensor([[1.5]], dtype=torch.float64), 64)
    assert abs(g.mean().item() - math.sqrt(math.pi / 1.5) / b.config["length"]) < 1e-12


def test_weno_flux_is_conservative_and_exact_on_a_smooth_wave():
    x = (torch.arange(2048, dtype=torch.float64) + 0.5) * (2 * math.pi / 2048)
    u = torch.sin(x)[None]
    div = weno5_flux_divergence(u, 2 * math.pi / 2048)
    assert abs(div.sum().item()) < 1e-10
    torch.testing.assert_close(div, (torch.sin(x) * torch.cos(x))[None], rtol=0, atol=1e-9)


def test_observation_is_the_block_mean_and_converges_in_the_solver_grid():
    u = torch.arange(12, dtype=torch.float64).reshape(1, 12)
    torch.testing.assert_close(block_mean(u, 3), torch.tensor([[1.5, 5.5, 9.5]], dtype=torch.float64))
    t = np.array([0.0, 0.05])
    coarser, coarse, fine = (Burgers(solver_size=n, size=128).generate([2], unforced([0.05]), t)
                             for n in (512, 1024, 2048))
    # Smooth flow (no shock by t = 0.05 at this viscosity): WENO5's fifth order, measured 30x per
    # doubling; at least fourth order, with the 2048-cell solve as reference.
    assert rel(coarser[0, -1], fine[0, -1]) / rel(coarse[0, -1], fine[0, -1]) > 16
    torch.testing.assert_close(coarse[:, 0], Burgers(solver_size=1024, size=128).sample_initial_states([2]))


def test_terms_on_the_observed_grid_are_hand_worked():
    """u = sin x: −(u²/2)_x = −sin x cos x, μ u_xx = −μ sin x, forcing F g_w cell averages."""
    b = Burgers(size=64)
    x = b.cell_centres(64)
    u = torch.sin(x).expand(2, 1, 64).clone()
    p = torch.tensor([[0.3, 2.0, 1.5], [0.01, 0.0, 3.0]], dtype=torch.float64)
    values = b.parameter_values(p)
    advection = b.terms_rhs(["advection"], 0.0, u, values)
    torch.testing.assert_close(advection, -(torch.sin(x) * torch.cos(x)).expand(2, 1, 64))
    torch.testing.assert_close(b.terms_rhs(["viscosity"], 0.0, u, values), -p[:, :1, None] * torch.sin(x))
    forcing = b.terms_rhs(["forcing"], 0.0, u, values)
    torch.testing.assert_close(forcing[0, 0], 2.0 * b.bump_cell_averages(torch.tensor([[1.5]]), 64)[0])
    assert forcing[1].abs().max() == 0


def test_batched_equals_one_at_a_time_and_seeds_decide():
    b = Burgers(solver_size=512, size=64)
    p = torch.tensor([[0.5, 0.0, 1.5], [5e-3, 5.0, 3.0], [0.05, 5.0, 1.5]], dtype=torch.float64)
    t = b.times()
    batched = b.generate([4, 7, 9], p, t)
    for i, s in enumerate([4, 7, 9]):
        # the step depends on the batch's max|u| bound, so rows agree to the solver's accuracy
        assert rel(batched[i], b.generate([s], p[i:i + 1], t)[0]) < 1e-6
    a = b.sample_initial_states([4, 7])
    torch.testing.assert_close(a.flip(0), b.sample_initial_states([7, 4]), rtol=0, atol=0)
    assert a.shape == (2, 1, 64) and a.dtype == torch.float64 and not torch.allclose(a[0], a[1])
    solved = b.solve(a, p[:2], t)
    assert solved.shape == (2, len(t), 1, 64) and torch.isfinite(solved).all()


def test_protocol_defaults_and_registry():
    b = get_system("burgers")
    assert b.state_shape == (1, 256) and b.dt == 1e-3 and b.horizon == 0.05
    assert b.config["solver_size"] == 16384  # GEPS' fine grid
    assert len(b.train_envs) == 6 and {e["mu"] for e in b.train_envs} == {0.5, 0.05, 5e-4}
    assert {(e["mu"], e["w"]) for e in b.heldout["extrap"]} == {(1.0, 1.5), (5e-5, 1.5), (1.0, 3.0), (5e-5, 3.0)}


@pytest.mark.parametrize("overrides", [
    {"train_envs": [{"mu": 0.0, "F": 0.0, "w": 1.5}]},
    {"train_envs": [{"mu": 0.1, "F": -1.0, "w": 1.5}]},
    {"heldout": {"x": [{"mu": 0.1, "F": 1.0, "w": 0.0}]}},
    {"size": 100, "solver_size": 1024},
    {"size": 7},
    {"cfl": 0.0},
])
def test_bad_config_is_a_user_error(overrides):
    with pytest.raises(UserError):
        Burgers(**overrides)

"""Data-generation speed and accuracy: our batched solvers against the reference codes' approach.

    python benchmarks/datagen.py [--batch 128] [--n-ref 8] [--repeat 2] [--systems gray_scott navier_stokes ...]

For each system, at its protocol (training environments, train horizon T and test horizon 2T):
- ours: ``system.generate`` (initial states, then one batched solve) on ``--batch`` trajectories;
- reference: what the LEADS/CoDA/GEPS code does. For Gray-Scott and the ODEs: scipy ``solve_ivp``
  RK45 at default tolerances, one trajectory at a time, on a numpy right-hand side. For
  Navier-Stokes: their batched torch scheme (Crank-Nicolson diffusion, forward-Euler advection,
  dt = 1e-3, 30 time units of warm-up) on the same batch; its speed is timed on a slice of its
  steps and scaled to the full count (every step costs the same). For Kolmogorov: GEPS' scheme
  (Arakawa finite-difference Jacobian, FFT Poisson solve, 5-point Laplacian, RK4 at dt = 0.005)
  on our equation (our periodic forcing, the physical sign of advection), float64, one trajectory
  at a time on our 256² solver grid, warm-up included; timed on a slice of one trajectory's steps,
  scaled to warm-up + horizon steps x the batch (``min(--batch, 8)``). For Burgers: GEPS'
  finite-volume scheme under scipy RK45, one trajectory at a time, on the same 16384 cells
  (``min(--batch, 12)`` trajectories of its unforced training environments); at mu = 0.5 and 0.05
  it is stiff, so its time is that of its first 1e-4 time units scaled to the horizon.
- error: relative L2 over each trajectory (t > 0, all components) against scipy DOP853 at
  rtol = atol = 1e-10 on the independent numpy right-hand sides of the tests, on the first
  ``--n-ref`` trajectories, worst case reported. For Kolmogorov: against ours on 512² at a
  quarter of its step, from the same warmed-up fine fields, both observed as 64² cell averages,
  on the first ``min(--n-ref, 2)`` trajectories. For Burgers: against the Cole-Hopf solution
  (exact cell averages, every 10th observation); the reference's error at mu = 5e-4 only (where
  it is affordable).

Prints a table and writes ``benchmarks/out/datagen.json``. Threads: torch's default. Timings are
the fastest of ``--repeat`` runs; run on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from scipy.integrate import solve_ivp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from leads.envs.registry import get_system  # noqa: E402
from tests.test_envs_pdes import dop853, gs_np, ns_np, rel_l2  # noqa: E402

OUT = ROOT / "benchmarks" / "out" / "datagen.json"


def batch(system, n: int) -> tuple[list[int], torch.Tensor]:
    """Seeds 0..n-1 and parameter rows cycling through the training environments."""
    envs = system.train_envs
    return list(range(n)), system.env_tensor([envs[i % len(envs)] for i in range(n)])


def best_of(repeat: int, fn):
    """``fn()``'s result and its fastest wall time over ``repeat`` runs."""
    best, out = math.inf, None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def generate(system, seeds: list[int], params: torch.Tensor, t: np.ndarray) -> torch.Tensor:
    """What dataset generation does: ``system.generate`` (initial states, then one batched solve)."""
    return system.generate(seeds, params, t)


def scipy_one_at_a_time(f, u0: torch.Tensor, params: torch.Tensor, t: np.ndarray, **kw) -> np.ndarray:
    rows = []
    for u, p in zip(u0.numpy(), params.tolist()):
        sol = solve_ivp(f, (t[0], t[-1]), u.ravel(), t_eval=t, args=tuple(p), **kw)
        rows.append(sol.y.T.reshape(len(t), *u.shape))
    return np.stack(rows)


def row(system: str, horizon: float, ours: dict, ref: dict, solver: str, ref_solver: str) -> dict:
    return {
        "system": system,
        "horizon": horizon,
        "ours": {"solver": solver, **ours},
        "reference": {"solver": ref_solver, **ref},
        "speedup": ours["traj_per_s"] / ref["traj_per_s"],
    }


# ------------------------------------------------------------------ Gray-Scott and the ODEs
def bench_scipy_reference(
    name: str, rhs_np, n_batch: int, n_ref: int, repeat: int, variants: dict | None = None
) -> list[dict]:
    """Ours (batched ``solve``) against scipy RK45 one at a time, at T and 2T. ``variants``:
    extra configs of ours, timed on a quarter of the batch."""
    system = get_system(name)
    ref_solver = "scipy RK45 (rtol=1e-3, atol=1e-6), one trajectory at a time"
    rows = []
    for horizon in (system.horizon, 2 * system.horizon):
        t = system.times(horizon)
        seeds, params = batch(system, n_batch)
        u0_ref = system.initial_states(seeds[:n_ref], params[:n_ref])
        truth = dop853(rhs_np, u0_ref, params[:n_ref], t)
        y_ref, secs = best_of(repeat, partial(scipy_one_at_a_time, rhs_np, u0_ref, params[:n_ref], t, method="RK45"))
        ref = stats(n_ref, secs, y_ref, truth)
        for label, overrides in {"": {}, **(variants or {})}.items():
            ours_system = get_system(name, **overrides)
            n = n_batch if not label else max(n_ref, n_batch // 4)
            y, secs = best_of(repeat, partial(generate, ours_system, seeds[:n], params[:n], t))
            ours = stats(n, secs, y[:n_ref], truth)
            label = f"{name} [{label}]" if label else name
            rows.append(row(label, horizon, ours, ref, ours_system.solver_description, ref_solver))
    return rows


def stats(n: int, seconds: float, y: torch.Tensor | np.ndarray, truth: np.ndarray) -> dict:
    return {"n_traj": n, "seconds": seconds, "traj_per_s": n / seconds, "max_rel_l2": float(rel_l2(y, truth).max())}


# ------------------------------------------------------------------ Navier-Stokes
def reference_ns_scheme(
    w0: torch.Tensor,
    nu: torch.Tensor,
    forcing: torch.Tensor,
    T: float,
    dt: float = 1e-3,
    record_every: int = 1000,
    max_steps: int | None = None,
) -> torch.Tensor:
    """The FNO/LEADS scheme: Crank-Nicolson viscosity, explicit Euler advection and forcing,
    2/3 dealiasing, full complex FFTs; batched, float64. Records every ``record_every`` steps."""
    n = w0.shape[-1]
    k = torch.fft.fftfreq(n, 1.0 / n, dtype=torch.float64)
    kx, ky = k[:, None], k[None, :]
    lap = 4 * math.pi**2 * (kx**2 + ky**2)
    lap[0, 0] = 1.0
    dealias = ((kx.abs() <= 2 / 3 * (n // 2)) & (ky.abs() <= 2 / 3 * (n // 2))).to(torch.float64)
    nu = nu.view(-1, 1, 1)
    w_h = torch.fft.fft2(w0[:, 0])
    f_h = torch.fft.fft2(forcing)
    steps = math.ceil(T / dt - 1e-9) if max_steps is None else max_steps
    out = [w0[:, 0]]
    for j in range(steps):
        psi_h = w_h / lap
        q = torch.fft.ifft2(2j * math.pi * ky * psi_h).real
        v = torch.fft.ifft2(-2j * math.pi * kx * psi_h).real
        w_x = torch.fft.ifft2(2j * math.pi * kx * w_h).real
        w_y = torch.fft.ifft2(2j * math.pi * ky * w_h).real
        F_h = dealias * torch.fft.fft2(q * w_x + v * w_y)
        w_h = (-dt * F_h + dt * f_h + (1.0 - 0.5 * dt * nu * lap) * w_h) / (1.0 + 0.5 * dt * nu * lap)
        if (j + 1) % record_every == 0:
            out.append(torch.fft.ifft2(w_h).real)
    return torch.stack(out, dim=1).unsqueeze(2)


def bench_navier_stokes(n_batch: int, n_ref: int, repeat: int) -> list[dict]:
    ns = get_system("navier_stokes")
    warm = float(ns.config["warmup"])
    ref_solver = "CN diffusion + Euler advection, dt=1e-3, batched torch (FNO/LEADS code), incl. warm-up"
    rows = []
    for horizon in (ns.horizon, 2 * ns.horizon):
        t = ns.times(horizon)
        seeds, params = batch(ns, n_batch)
        # Speed: the whole pipeline (random field, warm-up, trajectory).
        y, ours_seconds = best_of(repeat, partial(generate, ns, seeds, params, t))
        # The reference scheme: time a slice of its steps on the same batch, scale to warm-up + T.
        w0 = torch.stack([ns.random_field(s) for s in seeds])
        n_slice = 1000
        _, secs = best_of(repeat, partial(reference_ns_scheme, w0, params[:, 0], ns.forcing(), 0.0, max_steps=n_slice))
        ref_seconds = secs * round((warm + horizon) / 1e-3) / n_slice
        # Accuracy from common (warmed-up) initial states, against DOP853 on the numpy RHS.
        u0 = y[:n_ref, 0]
        truth = dop853(ns_np, u0, params[:n_ref], t)
        every = round(ns.dt / 1e-3)
        y_ref = reference_ns_scheme(u0, params[:n_ref, 0], ns.forcing(), horizon, record_every=every)
        ours = stats(n_batch, ours_seconds, y[:n_ref], truth)
        ref = {**stats(n_batch, ref_seconds, y_ref.numpy(), truth), "timed_steps": n_slice}
        rows.append(row("navier_stokes", horizon, ours, ref, ns.solver_description, ref_solver))
    return rows


# ------------------------------------------------------------------ Burgers
def geps_burgers_rhs(mu: float, n: int, length: float = 2 * math.pi):
    """The right-hand side of GEPS' Burgers code (``geps/datasets/burgers.py``, unforced), in numpy:
    a centred flux with 2nd/4th-difference artificial dissipation switched by a curvature sensor.
    Its flux difference has the opposite sign to the usual one, so it solves u_t = u u_x + mu u_xx,
    Burgers mirrored in x (measured: from a mirrored initial field, mirrored back, it is within
    1.6e-4 of Cole-Hopf at 2048 cells, t = 0.05, mu = 5e-4; without the mirror 0.59)."""
    dx = length / n

    def d1(a):
        return np.roll(a, 1) - a

    def mean(a):
        return (np.roll(a, 1) + a) / 2

    def flux(a):
        lap = -2 * a + np.roll(a, 1) + np.roll(a, -1)
        lap_abs = 2 * a + np.roll(a, 1) + np.roll(a, -1)
        phi = np.abs(lap) / np.abs(lap_abs)
        eps2 = np.maximum(phi, np.roll(phi, 1))
        eps4 = np.maximum(0.0, 1 / 60 - eps2 / 5)
        f = mean(0.5 * a * a)
        return (f - d1(d1(f)) / 6 + d1(d1(d1(d1(f)))) / 30
                - np.abs(mean(a)) * (eps2 * d1(a) + eps4 * d1(d1(d1(d1(d1(a)))))))

    def rhs(t, u):
        lap = (-2 * u + np.roll(u, 1) + np.roll(u, -1)) / dx**2
        return -(flux(u) - flux(np.roll(u, -1))) / dx + mu * lap

    return rhs


def bench_burgers(n_batch: int, n_ref: int, repeat: int) -> list[dict]:
    """Ours (ETDRK4 + WENO5, batched) against GEPS' scheme under scipy RK45 one trajectory at a
    time, both on 16384 cells observed on 256, from the same initial fields, unforced (the code's
    effective training environments), so both are scored against the Cole-Hopf solution. The
    reference at mu = 0.5 and 0.05 is stiff (RK45 steps of ~1e-7): its time is that of its first
    1e-4 time units scaled to the horizon, and its error is measured at mu = 5e-4 only."""
    from leads.envs.burgers import block_mean
    from tests.test_burgers import cole_hopf_cell_averages

    system = get_system("burgers", train_envs=[{"mu": mu, "F": 0.0, "w": 1.5} for mu in (0.5, 0.05, 5e-4)])
    n, size = system.config["solver_size"], system.config["size"]
    ref_solver = "GEPS' finite-volume scheme, scipy RK45 (rtol=1e-3, atol=1e-6), one trajectory at a time"
    rows = []
    for horizon in (system.horizon, 2 * system.horizon):
        t = system.times(horizon)
        seeds, params = batch(system, n_batch)
        y, ours_seconds = best_of(repeat, partial(generate, system, seeds, params, t))

        # the first n_ref trajectories and the mu = 5e-4 one (index 2), the one the reference finishes
        checked = sorted({*range(min(n_ref, n_batch)), 2})
        # Cole-Hopf cell averages every 10th observation (each costs seconds); t = 0 (the stored
        # state) is excluded from the errors.
        scored = slice(None, None, 10)
        truths = {i: torch.stack([y[i, 0, 0]] + [
            cole_hopf_cell_averages(system, seeds[i], float(params[i, 0]), float(tj), size, ny=65536)
            for tj in t[scored][1:]])[:, None].numpy() for i in checked}
        ours_rows = rel_l2(y[checked, scored], np.stack([truths[i] for i in checked]))
        # Reference speed: per training environment, RK45 over a slice, scaled to the horizon.
        # GEPS' equation is Burgers mirrored in x: give it the mirrored fields, mirror its output back.
        fine0 = system.fine_initial_states(seeds[:3]).flip(-1).numpy()
        slice_t = 1e-4
        per_traj = []
        for i in range(3):
            rhs = geps_burgers_rhs(float(params[i, 0]), n)
            _, secs = best_of(1, partial(solve_ivp, rhs, (0.0, slice_t), fine0[i], method="RK45"))
            per_traj.append(secs * horizon / slice_t)
        ref_seconds = float(np.mean(per_traj)) * n_batch
        # Reference accuracy where it is affordable: the mu = 5e-4 trajectory, to the horizon.
        i = 2
        sol = solve_ivp(geps_burgers_rhs(5e-4, n), (t[0], t[-1]), fine0[i], method="RK45", t_eval=t)
        y_ref = block_mean(torch.from_numpy(sol.y.T).flip(-1), size)[scored, None].numpy()
        ref_err = rel_l2(y_ref[None], truths[i][None])[0]
        ours = {"n_traj": n_batch, "seconds": ours_seconds, "traj_per_s": n_batch / ours_seconds,
                "max_rel_l2": float(ours_rows.max()), "rel_l2_at_mu=5e-4": float(ours_rows[checked.index(2)])}
        ref = {"n_traj": n_batch, "seconds": ref_seconds, "traj_per_s": n_batch / ref_seconds,
               "max_rel_l2": float(ref_err), "error_at": "mu=5e-4", "timed_slice": slice_t}
        rows.append(row("burgers", horizon, ours, ref, system.solver_description, ref_solver))
    return rows


# ------------------------------------------------------------------ Kolmogorov
def reference_kolmogorov_scheme(
    w0: torch.Tensor,
    nu: float,
    domain: float,
    F: float,
    pattern: torch.Tensor,
    drag: float,
    steps: int,
    record_every: int,
    observe=None,
    dt: float = 0.005,
) -> torch.Tensor:
    """GEPS' scheme (``geps/datasets/kolmo.py``) on our equation, ONE trajectory per call, float64.

    GEPS' finite differences on an ``N x N`` periodic grid of spacing dx = domain·π / N: the
    Arakawa Jacobian (J1 + J2 + J3) / 3 (each a transcription of GEPS' expression), the stream
    function by its FFT Poisson solve (full complex FFTs, −Δψ = w with the spectral |k|²), the
    5-point Laplacian, stepped by torchdiffeq's ``rk4`` (the 3/8 rule) at ``dt`` = 0.005. It is
    applied to OUR equation: the forcing F (sin(k_f y) − drag·w) on our periodic grid (``pattern``
    = sin(k_f y) at the grid points; GEPS multiplies sin(4y) by x, on a ``linspace(0, L, N)`` grid
    that repeats the endpoint, and pads ψ's FFT to N+1 points accordingly), and the physical sign
    of advection, w_t = +(J1 + J2 + J3) / 3 + ... with x along axis −2 (GEPS returns −(J1+J2+J3)/3,
    advecting w by −u). GEPS runs it in float32 on a GPU; here float64, as ours.

    ``w0``: ``(N, N)``. Returns ``observe(w)`` (default: ``w``) at step 0 and every ``record_every``
    of ``steps`` steps, stacked on dim 0.
    """
    n = w0.shape[-1]
    dx = math.pi * domain / n
    k = 2 * math.pi * torch.fft.fftfreq(n, dx, dtype=torch.float64)
    k_sq = k[:, None] ** 2 + k[None, :] ** 2
    k_sq[0, 0] = 1.0  # ψ has zero mean (GEPS: uf[0, 0] = 0)
    forcing = F * pattern.to(torch.float64)
    observe = observe or (lambda w: w)

    def r(a, shift, axis):  # GEPS' torch.roll(a, shift, dims=0 / 1) is axis -2 / -1 here
        return torch.roll(a, shift, dims=axis)

    def d_x(a):  # GEPS' derive_y (rolls dims=0, its x: meshgrid "ij")
        return r(a, -1, -2) - r(a, 1, -2)

    def d_y(a):  # GEPS' derive_x (rolls dims=1, its y)
        return r(a, -1, -1) - r(a, 1, -1)

    def rhs(w):
        psi_h = torch.fft.fft2(w) / k_sq
        psi_h[0, 0] = 0.0
        psi = torch.fft.ifft2(psi_h).real
        J1 = (d_x(psi) * d_y(w) - d_y(psi) * d_x(w)) / (4 * dx**2)
        J2 = (r(w, -1, -1) * d_x(r(psi, -1, -1)) - r(w, 1, -1) * d_x(r(psi, 1, -1))
              - r(w, -1, -2) * d_y(r(psi, -1, -2)) + r(w, 1, -2) * d_y(r(psi, 1, -2))) / (4 * dx**2)
        J3 = (r(r(w, -1, -1), -1, -2) * (r(psi, -1, -2) - r(psi, -1, -1))
              - r(r(w, 1, -1), 1, -2) * (r(psi, 1, -1) - r(psi, 1, -2))
              - r(r(w, 1, -1), -1, -2) * (r(psi, -1, -2) - r(psi, 1, -1))
              + r(r(w, -1, -1), 1, -2) * (r(psi, -1, -1) - r(psi, 1, -2))) / (4 * dx**2)
        lap = (-4 * w + r(w, 1, -2) + r(w, -1, -2) + r(w, 1, -1) + r(w, -1, -1)) / dx**2
        return (J1 + J2 + J3) / 3 + nu * lap + forcing - F * drag * w

    w = w0.to(torch.float64)
    out = [observe(w)]
    for j in range(steps):
        # torchdiffeq's rk4: rk4_alt_step_func, the 3/8 rule
        s1 = rhs(w)
        s2 = rhs(w + dt * s1 / 3)
        s3 = rhs(w + dt * (s2 - s1 / 3))
        s4 = rhs(w + dt * (s1 - s2 + s3))
        w = w + dt * (s1 + 3 * (s2 + s3) + s4) / 8
        if (j + 1) % record_every == 0:
            out.append(observe(w))
    return torch.stack(out)


def warmed_fine_fields(system, seeds: list[int], params: torch.Tensor) -> torch.Tensor:
    """The fine vorticities ``(B, 1, N, N)`` that ``system.generate`` reaches at t = 0: its random
    fields after ``warmup`` time units of the same ETDRK4 steps (``solve_fine``'s set-up, keeping
    the fine field instead of observing it)."""
    from leads.envs.navier_stokes import VorticityOperators
    from leads.envs.spectral import integrate

    N = system.config["solver_size"]
    nu, domain, F = (params[:, i, None, None, None] for i in range(3))
    ops = VorticityOperators(N, "cpu", torch.float64, length=math.pi * domain)
    L = -nu * ops.k2 - float(system.config["drag"]) * F
    f_hat = F * torch.fft.rfft2(system.forcing_pattern(N))
    w0 = system.fine_initial_states(seeds, params)
    warm = float(system.config["warmup"])
    wh = integrate(torch.fft.rfft2(w0), L, lambda v: ops.advection_hat(v) + f_hat, [0.0, warm],
                   system.config["solver_dt"], lambda v: v)[:, -1]
    return torch.fft.irfft2(wh, s=(N, N))


def refine(w: torch.Tensor, n_fine: int) -> torch.Tensor:
    """The same band-limited fields ``(..., N, N)`` on ``n_fine`` points per side (zero-padded
    spectra; our fields carry no Nyquist modes, the advection being dealiased)."""
    n = w.shape[-1]
    wh = torch.fft.rfft2(w)
    big = torch.zeros(*wh.shape[:-2], n_fine, n_fine // 2 + 1, dtype=wh.dtype)
    big[..., : n // 2, : n // 2 + 1] = wh[..., : n // 2, :]
    big[..., n_fine - n // 2:, : n // 2 + 1] = wh[..., n // 2:, :]
    return torch.fft.irfft2(big * (n_fine / n) ** 2, s=(n_fine, n_fine))


def bench_kolmogorov(n_batch: int, n_ref: int, repeat: int, system=None) -> list[dict]:
    """Ours (``generate``: random fields, warm-up and trajectory in one batched ETDRK4 solve) against
    GEPS' scheme on our equation (``reference_kolmogorov_scheme``: finite differences, RK4 at
    dt = 0.005, one trajectory at a time, float64), both on the solver grid, observed as cell
    averages, warm-up included in both. The reference's time is that of ``n_slice`` steps of one
    trajectory, scaled to (warm-up + horizon) / dt steps x ``n_batch`` (every step costs the same).

    Errors, on the first ``n_ref`` trajectories, start from the same fine fields (``generate``'s,
    at t = 0 after its warm-up, on the solver grid N²). The truth is ours on (2N)² (those fields
    zero-padded) at solver_dt / 4, to 2T (sliced for T), observed the same way: 4^4 = 256x below
    our time error, and spectrally converged in space where the checked flows are resolved. The
    defaults check the first two training environments (ν = 1e-3, domain 0.75, F = 0 and 1), where
    256² is within 2e-6 of 512² over T (measured); at ν = 1e-4, 256² is ~5% from 512² (see
    ``leads/envs/kolmogorov.py``), which such a truth would count as our error."""
    from leads.envs.kolmogorov import cell_average

    system = system or get_system("kolmogorov")
    c = system.config
    N, size, warm, drag = c["solver_size"], c["size"], float(c["warmup"]), float(c["drag"])
    ref_dt, n_slice = 0.005, 40
    ref_solver = (f"GEPS' Arakawa finite differences + FFT Poisson, RK4 (3/8 rule), dt={ref_dt}, one trajectory "
                  f"at a time, float64, on {N}^2 with our forcing and sign, observed as {size}^2 cell averages, "
                  "incl. warm-up")
    truth_system = get_system("kolmogorov", **{**c, "solver_size": 2 * N, "solver_dt": c["solver_dt"] / 4})
    pattern = system.forcing_pattern(N)

    # Accuracy, once to the test horizon 2T (T is its prefix): truth, reference from the same fine fields.
    t2 = system.times(2 * system.horizon)
    every = round(system.dt / ref_dt)
    if not math.isclose(every * ref_dt, system.dt):
        raise ValueError(f"observation step {system.dt} is not a multiple of the reference's dt {ref_dt}")
    seeds, params = batch(system, n_batch)
    checked = list(range(min(n_ref, n_batch)))
    w_fine = warmed_fine_fields(system, seeds[: len(checked)], params[: len(checked)])
    truth = truth_system.solve_fine(refine(w_fine, 2 * N), params[: len(checked)], t2).numpy()
    y_ref = np.stack([
        reference_kolmogorov_scheme(w_fine[i, 0], *params[i].tolist(), pattern, drag, steps=(len(t2) - 1) * every,
                                    record_every=every, observe=lambda w: cell_average(w, size))[:, None].numpy()
        for i in checked])

    rows = []
    for horizon in (system.horizon, 2 * system.horizon):
        t = system.times(horizon)
        y, ours_seconds = best_of(repeat, partial(generate, system, seeds, params, t))
        if not np.allclose(y[checked, 0].numpy(), truth[:, 0], rtol=0, atol=1e-9 * np.abs(truth[:, 0]).max()):
            raise RuntimeError("the warmed-up fine fields do not observe as generate's first states")
        # Reference speed: a slice of its steps on one trajectory from a random (pre-warm-up) field.
        w0 = system.fine_initial_states(seeds[:1], params[:1])[0, 0]
        _, secs = best_of(repeat, partial(reference_kolmogorov_scheme, w0, *params[0].tolist(), pattern, drag,
                                          steps=n_slice, record_every=n_slice + 1))
        ref_seconds = secs * round((warm + horizon) / ref_dt) / n_slice * n_batch
        truth_t = truth[:, : len(t)]
        ours = stats(n_batch, ours_seconds, y[checked], truth_t)
        ref = {**stats(n_batch, ref_seconds, y_ref[:, : len(t)], truth_t), "timed_steps": n_slice,
               "truth": f"ours on {2 * N}^2 at solver_dt/4 = {truth_system.config['solver_dt']:g}, from the "
                        f"same warmed-up {N}^2 fields, observed as {size}^2 cell averages"}
        rows.append(row("kolmogorov", horizon, ours, ref, system.solver_description, ref_solver))
    return rows


# ------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128, help="trajectories generated at once by our solvers")
    parser.add_argument("--n-ref", type=int, default=8, help="trajectories for the reference timing and errors")
    parser.add_argument("--repeat", type=int, default=2, help="timings are the fastest of this many runs")
    parser.add_argument("--systems", nargs="*", default=None, help="subset of systems (default: all available)")
    args = parser.parse_args()

    benches = {
        "gray_scott": lambda: bench_scipy_reference(
            "gray_scott", gs_np, args.batch, args.n_ref, args.repeat, variants={"etdrk4": {"solver": "etdrk4"}}
        ),
        "navier_stokes": lambda: bench_navier_stokes(args.batch, args.n_ref, args.repeat),
        # 16384 cells: a smaller batch keeps the run in minutes on two cores
        "burgers": lambda: bench_burgers(min(args.batch, 12), min(args.n_ref, 3), args.repeat),
        # 256² solves, warm-up included: a smaller batch; the truth runs 512² at 4x our steps
        "kolmogorov": lambda: bench_kolmogorov(min(args.batch, 8), min(args.n_ref, 2), args.repeat),
    }
    try:
        from tests.test_envs_odes import REFERENCE_RHS
    except ImportError:  # the ODE systems' tests are not there: benchmark the PDEs only
        REFERENCE_RHS = {}
    for name, rhs_np in REFERENCE_RHS.items():
        benches[name] = lambda name=name, rhs_np=rhs_np: bench_scipy_reference(
            name, rhs_np, args.batch, args.n_ref, args.repeat
        )

    selected = args.systems or list(benches)
    rows = []
    header = (
        f"{'system':<28}{'T':>6}  {'ours traj/s':>12}{'ref traj/s':>12}{'speedup':>9}  {'ours err':>9}{'ref err':>9}"
    )
    load_start = os.getloadavg()[0]
    # Other processes on the cores distort the timings badly (torch's threads wait on each other).
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load_start:.2f}")
    print(header)
    for name in selected:
        for r in benches[name]():
            rows.append(r)
            ours, ref = r["ours"], r["reference"]
            print(
                f"{r['system']:<28}{r['horizon']:>6g}  {ours['traj_per_s']:>12.1f}{ref['traj_per_s']:>12.2f}"
                f"{r['speedup']:>8.1f}x  {ours['max_rel_l2']:>9.1e}{ref['max_rel_l2']:>9.1e}",
                flush=True,
            )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_average_start": load_start,
        "load_average_end": os.getloadavg()[0],
        "batch": args.batch,
        "n_ref": args.n_ref,
        "repeat": args.repeat,
    }
    OUT.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

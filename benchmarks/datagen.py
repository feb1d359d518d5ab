"""Data-generation speed and accuracy: our batched solvers against the reference codes' approach.

    python benchmarks/datagen.py [--batch 128] [--n-ref 8] [--repeat 2] [--systems gray_scott navier_stokes ...]

For each system, at its protocol (training environments, train horizon T and test horizon 2T):
- ours: ``system.initial_states`` + ``system.solve`` on ``--batch`` trajectories at once;
- reference: what the LEADS/CoDA/GEPS code does. For Gray-Scott and the ODEs: scipy ``solve_ivp``
  RK45 at default tolerances, one trajectory at a time, on a numpy right-hand side. For
  Navier-Stokes: their batched torch scheme (Crank-Nicolson diffusion, forward-Euler advection,
  dt = 1e-3, 30 time units of warm-up) on the same batch; its speed is timed on a slice of its
  steps and scaled to the full count (every step costs the same).
- error: relative L2 over each trajectory (t > 0, all components) against scipy DOP853 at
  rtol = atol = 1e-10 on the independent numpy right-hand sides of the tests, on the first
  ``--n-ref`` trajectories, worst case reported.

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

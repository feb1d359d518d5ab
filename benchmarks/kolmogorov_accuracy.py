"""Kolmogorov flow's solver step and grid, re-measured as in ``envs/kolmogorov.py``'s docstring.

    python benchmarks/kolmogorov_accuracy.py [--steps 0.01 0.005 0.0025] [--step-grid 256]
        [--grids 128 256] [--ref-grid 512] [--ref-dt 0.0025] [--seeds 0] [--quick]

Every number comes from ``generate`` (random field, warm-up, trajectory; what the datasets hold),
observed on ``--size``² cell averages over the test horizon [0, 2] after the warm-up, and is the
worst snapshot's relative L2 (worst seed too). Three studies:

- Time step: ``--step-grid``² solves at each of ``--steps`` against one at a 16x smaller step
  than the smallest, for ν = 1e-4 on domain 1 and ν = 5e-5 on domain 1.25 (F = 1), with the
  observed order. Also the CFL number h·max|u|·k_max in the fastest of the system's environments
  (train and held-out), max|u| taken at the observation times of a solve at the default step,
  k_max the largest wavenumber the 2/3 rule keeps per axis, (N/3)·2/domain.
- Solver grid: ``--grids`` (default step) against ``--ref-grid`` at ``--ref-dt`` (paper_code's
  512² at 0.0025), for ν = 1e-4 on domain 1 (F = 1) and 0.75 (F = 0), and ν = 5e-5 on 1.25 (F = 1).
- High viscosity: the coarsest of ``--grids`` against the finest, in every environment of the
  system with ν >= 5e-4.

``--quick`` is a smoke test (16² observed, 32²-128² grids, horizon 0.2; seconds) whose numbers
mean nothing. Prints tables and writes ``benchmarks/out/kolmogorov_accuracy.json``
(``kolmogorov_accuracy_quick.json`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Sequence

import torch
from common import table, write_json

from leads.envs.base import Env, env_label
from leads.envs.kolmogorov import lift
from leads.envs.navier_stokes import VorticityOperators
from leads.envs.registry import get_system

# The environments of the docstring's measurements.
STEP_ENVS: list[Env] = [{"nu": 1e-4, "domain": 1.0, "F": 1.0}, {"nu": 5e-5, "domain": 1.25, "F": 1.0}]
GRID_ENVS: list[Env] = [{"nu": 1e-4, "domain": 1.0, "F": 1.0}, {"nu": 1e-4, "domain": 0.75, "F": 0.0},
                        {"nu": 5e-5, "domain": 1.25, "F": 1.0}]
HIGH_NU = 5e-4
REFINE = 16  # the time-step reference is this much finer than the smallest step
QUICK = {"size": 16, "step_grid": 64, "steps": [0.01, 0.005], "grids": [32, 64], "ref_grid": 128,
         "horizon": 0.2}


def generate(envs: Sequence[Env], seeds: Sequence[int], horizon: float, **overrides: object) -> torch.Tensor:
    """``generate`` of every (environment, seed) pair in one batch: ``(envs, seeds, times, 1, n, n)``."""
    system = get_system("kolmogorov", **overrides)
    params = system.env_tensor([e for e in envs for _ in seeds])
    y = system.generate([s for _ in envs for s in seeds], params, system.times(horizon))
    return y.reshape(len(envs), len(seeds), *y.shape[1:])


def worst_rel_l2(y: torch.Tensor, ref: torch.Tensor) -> list[float]:
    """Per environment, the largest relative L2 over seeds and snapshots."""
    err = (y - ref).flatten(3).norm(dim=3) / ref.flatten(3).norm(dim=3)
    return err.amax(dim=(1, 2)).tolist()


def max_speed(env: Env, seeds: Sequence[int], horizon: float, n: int) -> float:
    """max|u| over seeds and observation times of the solve on ``n``² at the default step.

    Observed on the solver grid itself, where ``lift`` turns the cell averages back into point values.
    """
    w = lift(generate([env], seeds, horizon, size=n, solver_size=n)[0, :, :, 0], n)
    ops = VorticityOperators(n, w.device, torch.float64, length=math.pi * env["domain"])
    psi = torch.fft.rfft2(w) * ops.inv_k2
    u = torch.fft.irfft2(torch.stack((ops.iky * psi, -ops.ikx * psi)), s=(n, n))
    return float(u.norm(dim=0).max())


def fmt(x: float) -> str:
    return f"{x:.1e}" if math.isfinite(x) else "nan/inf"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=64, help="observed points per side")
    p.add_argument("--step-grid", type=int, default=256, help="solver grid of the time-step study")
    p.add_argument("--steps", type=float, nargs="+", default=[0.01, 0.005, 0.0025], help="solver steps compared")
    p.add_argument("--grids", type=int, nargs="+", default=[128, 256], help="solver grids compared")
    p.add_argument("--ref-grid", type=int, default=512, help="reference solver grid")
    p.add_argument("--ref-dt", type=float, default=0.0025, help="reference grid's step (paper_code's)")
    p.add_argument("--horizon", type=float, default=2.0, help="end of the observed trajectory (test horizon)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="initial-condition seeds")
    p.add_argument("--quick", action="store_true", help=f"smoke test: defaults become {QUICK}")
    args = p.parse_args()
    if args.quick:  # explicit options still win over the quick defaults
        p.set_defaults(**QUICK)
        args = p.parse_args()
    seeds, horizon, size = args.seeds, args.horizon, args.size
    start = last = time.perf_counter()
    seconds: dict[str, float] = {}  # per study, to size runs on other grids

    def lap(study: str) -> str:
        nonlocal last
        now = time.perf_counter()
        seconds[study], last = now - last, now
        return f"{seconds[study]:.0f} s"

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; worst relative L2 on {size}² over "
          f"[0, {horizon:g}] after the warm-up, seeds {seeds}")

    # Time step: one reference finer than every step compared.
    steps = sorted(args.steps, reverse=True)
    n = args.step_grid
    ref = generate(STEP_ENVS, seeds, horizon, size=size, solver_size=n, solver_dt=min(steps) / REFINE)
    errors = {h: worst_rel_l2(generate(STEP_ENVS, seeds, horizon, size=size, solver_size=n, solver_dt=h), ref)
              for h in steps}
    step_rows, step_out = [], []
    for i, env in enumerate(STEP_ENVS):
        for j, h in enumerate(steps):
            e = errors[h][i]
            order = math.log2(errors[steps[j - 1]][i] / e) / math.log2(steps[j - 1] / h) if j else math.nan
            step_out.append({"env": env, "solver_size": n, "solver_dt": h, "max_rel_l2": e, "order": order})
            step_rows.append([env_label(env), f"{h:g}", fmt(e), "—" if math.isnan(order) else f"{order:.1f}"])
    print(f"\nTime step on {n}² against {min(steps) / REFINE:g} ({lap('time_step')})")
    print(table(["environment", "step", "max rel. L2", "order"], step_rows))

    # CFL number in the fastest environment the datasets use, at the default step.
    system = get_system("kolmogorov")
    envs = system.train_envs + [e for v in system.heldout.values() for e in v]
    k_max = {env_label(e): (n // 2) * 2 / 3 * 2 / e["domain"] for e in envs}
    speed = {env_label(e): max_speed(e, seeds, horizon, n) for e in envs}
    fastest = max(speed, key=lambda k: speed[k] * k_max[k])
    cfl = {h: h * speed[fastest] * k_max[fastest] for h in steps}
    print(f"\nCFL on {n}², fastest environment {fastest}: max|u| = {speed[fastest]:.2f}, "
          f"k_max = {k_max[fastest]:.1f} ({lap('cfl')})")
    print(table(["step", "h·max|u|·k_max"], [[f"{h:g}", f"{c:.2f}"] for h, c in cfl.items()]))

    # Solver grid against the reference grid, at the default step (the reference at its own).
    ref = generate(GRID_ENVS, seeds, horizon, size=size, solver_size=args.ref_grid, solver_dt=args.ref_dt)
    grid_errors = {g: worst_rel_l2(generate(GRID_ENVS, seeds, horizon, size=size, solver_size=g), ref)
                   for g in args.grids}
    grid_out = [{"env": e, "solver_size": g, "ref_size": args.ref_grid, "max_rel_l2": grid_errors[g][i]}
                for i, e in enumerate(GRID_ENVS) for g in args.grids]
    print(f"\nSolver grid against {args.ref_grid}² (step {args.ref_dt:g}; {lap('grid')})")
    print(table(["environment"] + [f"{g}²" for g in args.grids],
                [[env_label(e)] + [fmt(grid_errors[g][i]) for g in args.grids] for i, e in enumerate(GRID_ENVS)]))

    # High viscosity: the coarsest grid against the finest.
    coarse, fine = min(args.grids), max(args.grids)
    high = [e for e in envs if e["nu"] >= HIGH_NU]
    high_errors = worst_rel_l2(generate(high, seeds, horizon, size=size, solver_size=coarse),
                               generate(high, seeds, horizon, size=size, solver_size=fine))
    high_out = [{"env": e, "solver_size": coarse, "ref_size": fine, "max_rel_l2": x} for e, x in zip(high, high_errors)]
    print(f"\nν >= {HIGH_NU:g}: {coarse}² against {fine}² ({lap('high_viscosity')})")
    print(table(["environment", "max rel. L2"], [[env_label(e), fmt(x)] for e, x in zip(high, high_errors)]))

    seconds["total"] = time.perf_counter() - start
    print(f"\n{seconds['total']:.0f} s in all")
    name = "kolmogorov_accuracy_quick.json" if args.quick else "kolmogorov_accuracy.json"
    print("wrote", write_json(name, {
        "args": vars(args), "seconds": seconds, "time_step": step_out,
        "cfl": {"env": fastest, "max_speed": speed[fastest], "k_max": k_max[fastest], "by_step": cfl,
                "max_speed_by_env": speed},
        "grid": grid_out, "high_viscosity": high_out}))


if __name__ == "__main__":
    main()

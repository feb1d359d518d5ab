"""The qg_ocean system's spin-up criterion, time step and observed-grid predictability, measured.

    python benchmarks/qg_spinup.py [--n 64] [--size 16] [--years 12] [--seeds 2] [--quick]

- spinup: ``--seeds`` runs of the eddy and the jet configuration from pyqg's initial PV (our
  ``fine_initial_states``) for ``--years`` years on ``--n``²; the daily energy, the time at which
  the criterion (``leads.envs.spinup``) declares each run stationary for several window lengths
  and tolerances, and the spread ``(max − min) / mean`` of 3 consecutive window means once the
  flow is steady (the last half of the run): what the tolerance must exceed.
- step: from each run's final state, 10 days at the solver step 1 h and at 30 and 15 min (the
  filter as a rate, so every step size solves the same equations), observed on ``--size``²: the
  relative L2 difference of 1 h and 30 min from 15 min.
- lag: from the same states, the observed field's change over 1 to 20 days (persistence's error)
  and the error of the coarse model (pyqg at ``--size``² from the observed state).

Prints tables and writes ``benchmarks/out/qg_spinup.json``. ``--quick``: 32², 0.3 years; a smoke
test whose numbers mean nothing.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch
from common import machine, table, write_json

from leads.envs.qg import QGModel
from leads.envs.qg_ocean import EDDY, JET, QGOcean, coarsen_hat
from leads.envs.spinup import StationaryEnergy

L = 1.0e6
DAY_STEPS = 24
CONSTANTS = {"rd": 15000.0, "U1": 0.025, "U2": 0.0}


def params(envs: list[dict[str, float]]) -> dict[str, Any]:
    return {**{k: torch.tensor([e[k] for e in envs], dtype=torch.float64) for k in ("beta", "rek", "delta")},
            **CONSTANTS}


def part_spinup(args: argparse.Namespace, runs: list[tuple[str, dict[str, float], int]]) -> tuple[dict, torch.Tensor]:
    system = QGOcean(solver_size=args.n, size=args.size)
    model = QGModel(args.n, L, params([env for _, env, _ in runs]))
    qh, history = torch.fft.rfft2(system.fine_initial_states([seed for *_, seed in runs])), []
    days = int(args.years * 365)
    energy = []
    for _ in range(days):
        energy.append(model.energy(qh))
        for _ in range(DAY_STEPS):
            qh = model.step(qh, history, 3600.0)
    E = torch.stack(energy)  # (days, runs)
    rows, out = [], {"energy_daily": E.T.tolist(), "runs": [f"{name} seed {seed}" for name, _, seed in runs]}
    for window in args.windows:
        for tol in args.tols:
            crit = StationaryEnergy(len(runs), window, 3, tol, args.growth)
            when = [-1] * len(runs)
            for day in range(days):
                for i in crit.add(E[day]).nonzero()[:, 0].tolist():
                    when[i] = day
            steady = []
            for i in range(len(runs)):
                tail = E[days // 2:, i].numpy()
                means = [tail[j:j + window].mean() for j in range(0, len(tail) - window + 1, window)]
                steady += [(max(means[j:j + 3]) - min(means[j:j + 3])) / np.mean(means[j:j + 3])
                           for j in range(len(means) - 2)]
            spread = float(max(steady)) if steady else float("nan")  # nan: too short for 3 windows
            out[f"{window}d/{tol}"] = {"stationary_day": when, "steady_spread_max": spread}
            rows.append([f"{window} d", tol, ", ".join(f"{w / 365:.2f}" if w >= 0 else "never" for w in when),
                         f"{spread:.3f}"])
    print(f"spin-up on {args.n}² (runs: {', '.join(out['runs'])}); criterion: 3 windows, growth {args.growth:g}x")
    print(table(["window", "tol", "stationary after (years)", "steady flows' spread, max"], rows))
    return out, qh


def part_step(args: argparse.Namespace, runs: list, qh: torch.Tensor) -> dict:
    system = QGOcean(solver_size=args.n, size=args.size)
    p = params([env for _, env, _ in runs])
    finals = {}
    for dt in (3600.0, 1800.0, 900.0):
        # the filter as a rate: exp(rate * dt) per step, the same equations at every step size
        model = QGModel(args.n, L, p, filterfac=23.6 * dt / 3600.0)
        state, history = qh.clone(), []
        for _ in range(int(10 * 86400 / dt)):
            state = model.step(state, history, dt)
        finals[dt] = system.coarsen(state)
    ref = finals[900.0]
    errs = {dt: ((finals[dt] - ref).flatten(1).norm(dim=1) / ref.flatten(1).norm(dim=1)).tolist()
            for dt in (3600.0, 1800.0)}
    print(table(["step", "rel. L2 from 15 min after 10 days, per run"],
                [[f"{dt / 60:.0f} min", ", ".join(f"{e:.1e}" for e in errs[dt])] for dt in (3600.0, 1800.0)]))
    return {"rel_l2_vs_15min": errs}


def part_lag(args: argparse.Namespace, runs: list, qh: torch.Tensor) -> dict:
    n, size = args.n, args.size
    p = params([env for _, env, _ in runs])
    fine, coarse = QGModel(n, L, p), QGModel(size, L, p)
    obs0 = coarsen_hat(qh, size, L)
    state, hist, ch, chist = qh.clone(), [], torch.fft.rfft2(obs0), []
    rows, out = [], {}
    for day in range(1, 21):
        for _ in range(DAY_STEPS):
            state, ch = fine.step(state, hist, 3600.0), coarse.step(ch, chist, 3600.0)
        if day in (1, 2, 5, 10, 20):
            obs = coarsen_hat(state, size, L)
            norm = obs.flatten(1).norm(dim=1)
            persistence = ((obs - obs0).flatten(1).norm(dim=1) / norm).tolist()
            model = ((obs - torch.fft.irfft2(ch, s=(size, size))).flatten(1).norm(dim=1) / norm).tolist()
            out[day] = {"persistence": persistence, "coarse_model": model}
            rows.append([day, ", ".join(f"{e:.3f}" for e in persistence), ", ".join(f"{e:.3f}" for e in model)])
    print(f"observed on {size}²: relative L2 error against the truth, per run")
    print(table(["days", "persistence", f"coarse model ({size}²)"], rows))
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--size", type=int, default=16)
    p.add_argument("--years", type=float, default=12.0)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--windows", type=int, nargs="+", default=[90, 120, 180])
    p.add_argument("--tols", type=float, nargs="+", default=[0.1, 0.15, 0.2])
    p.add_argument("--growth", type=float, default=10.0)
    p.add_argument("--quick", action="store_true")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        args.n, args.size, args.years, args.windows, args.tols = 32, 8, 0.3, [20], [0.15]
    print(f"machine: {machine()}")
    runs = [(name, env, seed) for name, env in (("eddy", EDDY), ("jet", JET)) for seed in range(args.seeds)]
    spinup, final = part_spinup(args, runs)
    results = {"spinup": spinup, "step": part_step(args, runs, final), "lag": part_lag(args, runs, final)}
    print(f"written: {write_json('qg_spinup_quick.json' if args.quick else 'qg_spinup.json', results)}")


if __name__ == "__main__":
    main()

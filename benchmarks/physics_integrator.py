"""How many steps a system's known terms need at its observation step, per integrator.

    python benchmarks/physics_integrator.py [--env gray_scott] [--integrator joint etdrk4] [--substeps 4 8 16 32]

Rolls out every term of the system (complete physics, true parameters, no residual) through the
hybrid forecaster itself, with ``physics.integrator`` (``joint``: RK4 on the sum; ``etdrk4``:
the Fourier-diagonal terms exact) at ``--substeps`` steps per observation interval, in float32
as training does, from the initial states of the first test seeds over the test horizon [0, 2T],
in the training and the held-out environments (adaptation identifies parameters through the
same integrator). Reports the mean and the largest relative L2 error against the system's own
accurate solver, with the observed order of convergence of the mean. This is the error floor of
a hybrid model integrated that way; every step costs the network 4 evaluations for both
integrators, and ``joint`` takes at least the steps RK4's stability needs (4 on Gray-Scott).
Writes ``benchmarks/out/physics_integrator_<system>.json``.
"""

from __future__ import annotations

import argparse
import math

import torch
from common import table, write_json

from leads.config.loading import load_config, system_of
from leads.config.schema import RunConfig
from leads.envs.registry import SYSTEMS
from leads.evaluation.metrics import relative_l2_per_step
from leads.models.forecaster import Forecaster


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="gray_scott", choices=sorted(SYSTEMS))
    ap.add_argument("--integrator", nargs="+", default=["joint"], choices=["joint", "etdrk4"])
    ap.add_argument("--substeps", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--trajectories", type=int, default=4, help="initial states per environment")
    args = ap.parse_args()
    system = system_of(RunConfig.of(load_config(args.env, "quick", [])))
    envs = [*system.train_envs, *(e for held in system.heldout.values() for e in held)]
    all_envs = envs * args.trajectories
    u0 = system.sample_initial_states(list(range(len(all_envs))))
    t = system.times(2 * system.horizon)
    reference = system.solve(u0, system.env_tensor(all_envs), t)
    index = torch.arange(len(envs)).repeat(args.trajectories)
    rows, out = [], []
    for integrator in args.integrator:
        previous = math.nan
        for n in args.substeps:
            cfg = RunConfig.of(load_config(args.env, "quick", [
                "physics.terms=all", "physics.params=true_values", f"physics.integrator={integrator}",
                f"physics.substeps={n}"]))
            module = Forecaster(cfg, system.state_shape, [str(e) for e in system.train_envs])
            module.residual = False
            module.physics.reset_environments(envs)
            with torch.no_grad():
                pred = module(u0.float(), torch.as_tensor(t, dtype=torch.float32), index)
            err = relative_l2_per_step(pred.double(), reference)
            finite = bool(torch.isfinite(err).all())
            mean, worst = (float(err.mean()), float(err.max())) if finite else (math.inf, math.inf)
            order = math.log2(previous / mean) if math.isfinite(previous) and finite else math.nan
            previous = mean
            out.append({"integrator": integrator, "substeps": n, "step": system.dt / n, "mean_rel_l2": mean,
                        "max_rel_l2": worst, "order": order})
            rows.append([integrator, n, f"{system.dt / n:g}", f"{mean:.2e}", f"{worst:.2e}",
                         "—" if math.isnan(order) else f"{order:.1f}"])
    n_held = len(envs) - len(system.train_envs)
    print(f"{args.env}: every known term, true parameters, float32, over [0, {2 * system.horizon:g}], "
          f"{len(system.train_envs)} training and {n_held} held-out environments, {args.trajectories} states each")
    print(table(["integrator", "steps / dt", "step", "mean rel. L2 vs solver", "max", "order (mean)"], rows))
    write_json(f"physics_integrator_{args.env}.json", {"system": args.env, "results": out})


if __name__ == "__main__":
    main()

"""How many RK4 steps a system's known terms need at its observation step.

    python benchmarks/physics_integrator.py [--env gray_scott] [--substeps 4 8 16 32]

Integrates every term of the system (complete physics, true parameters) with fixed-step RK4 at
``--substeps`` steps per observation interval, in float32 as the hybrid models do, from the
initial states of the first test seeds over the test horizon [0, 2T], in the training and the
held-out environments (adaptation identifies parameters through the same integrator), and reports the largest
relative L2 error against the system's own accurate solver, with the observed order of
convergence. This is the error floor of a hybrid model whose known terms are integrated that
way (``physics.substeps``). Writes ``benchmarks/out/physics_integrator_<system>.json``.
"""

from __future__ import annotations

import argparse
import math

import torch
from common import table, write_json

from leads.envs.registry import SYSTEMS, get_system
from leads.models.rollout import rollout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--env", default="gray_scott", choices=sorted(SYSTEMS))
    ap.add_argument("--substeps", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--trajectories", type=int, default=4, help="initial states per environment")
    args = ap.parse_args()
    system = get_system(args.env)
    envs = [*system.train_envs, *(e for held in system.heldout.values() for e in held)] * args.trajectories
    u0 = system.sample_initial_states(list(range(len(envs))))
    params = system.env_tensor(envs)
    t = system.times(2 * system.horizon)
    reference = system.solve(u0, params, t)
    values = system.parameter_values(params)
    index = torch.arange(len(envs))
    terms = tuple(system.terms)
    rows, out = [], []
    for n in args.substeps:
        def field(x: torch.Tensor, env: torch.Tensor, s: float) -> torch.Tensor:
            return system.terms_rhs(terms, s, x, {k: v[env] if torch.is_tensor(v) else v for k, v in values.items()})

        pred = rollout(field, u0.float(), torch.as_tensor(t, dtype=torch.float32), index, substeps=n,
                       time_dependent=True)
        err = ((pred.double() - reference).flatten(2).norm(dim=2) / reference.flatten(2).norm(dim=2))[:, 1:]
        worst = float(err.max()) if torch.isfinite(err).all() else math.inf
        order = math.log2(out[-1]["max_rel_l2"] / worst) if out and math.isfinite(worst) and len(out) else math.nan
        out.append({"substeps": n, "step": system.dt / n, "max_rel_l2": worst, "order": order})
        rows.append([n, f"{system.dt / n:g}", f"{worst:.2e}", "—" if math.isnan(order) else f"{order:.1f}"])
    n_held = len(envs) // args.trajectories - len(system.train_envs)
    print(f"{args.env}: RK4 on every known term, true parameters, float32, over [0, {2 * system.horizon:g}], "
          f"{len(system.train_envs)} training and {n_held} held-out environments")
    print(table(["substeps / dt", "step", "max rel. L2 vs solver", "order"], rows))
    write_json(f"physics_integrator_{args.env}.json", {"system": args.env, "results": out})


if __name__ == "__main__":
    main()

"""A trained model as a surrogate of the numerical solver: rollout speed-up and the error it costs.

    python benchmarks/surrogate.py --env gray_scott [--methods lowrank erm] [--seed 0] [--ckpt PATH]
        [--runs-dir runs] [--repeat 3] [--device cpu]

For the in-domain test trajectories of a trained run (their stored initial states and
environments, over the test horizon 2T), times the system's own accurate batched solver
(``system.solve``, the one that generated the data) and the model's rollout (``predict``) on the
same batch, and reports trajectories per second, the speed-up, and the model's relative L2 against
the stored solution over (0, T] and (0, 2T]. Timings are the fastest of ``--repeat`` runs after
one warm-up. Prints a table and writes ``benchmarks/out/surrogate_<system>.json``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from common import ROOT, best_time, latest_checkpoint, table, write_json

from leads.config.loading import system_of
from leads.datasets.cache import ensure_split
from leads.datasets.h5 import load_split
from leads.evaluation.metrics import relative_l2
from leads.evaluation.scoring import flatten_trajectories, predict
from leads.training.checkpoints import load_checkpoint


def measure(ckpt: Path, system_name: str, repeat: int, device: str) -> dict:
    module = load_checkpoint(ckpt, system_name).to(device)
    cfg = module.cfg
    system = system_of(cfg)
    data = load_split(ensure_split(system, cfg.data, "test"))
    states, env = flatten_trajectories(data.states)
    u0 = states[:, 0].to(device, torch.float64)
    params = data.params[env].to(device)
    t_np = np.asarray(data.t, dtype=np.float64)
    t = torch.as_tensor(t_np, dtype=torch.float32)

    solved, solver_s = best_time(repeat, lambda: system.solve(u0, params, t_np))
    pred, model_s = best_time(repeat, lambda: predict(module, states, t, env))
    n_in = int(np.searchsorted(t_np, system.horizon + 1e-9))
    solver_err = relative_l2(solved.float().cpu(), states)  # the solver against the stored data: ~0
    return {
        "method": cfg.method, "seed": cfg.seed, "ckpt": str(ckpt), "n_traj": len(states),
        "n_t": len(t_np), "solver": system.solver_description, "device": device,
        "solver_s": solver_s, "model_s": model_s, "speedup": solver_s / model_s,
        "solver_traj_per_s": len(states) / solver_s, "model_traj_per_s": len(states) / model_s,
        "model_rel_l2_T": float(relative_l2(pred[:, :n_in], states[:, :n_in]).mean()),
        "model_rel_l2_2T": float(relative_l2(pred, states).mean()),
        "solver_vs_stored_max": float(solver_err.max()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", default="gray_scott")
    p.add_argument("--methods", nargs="+", default=["lowrank"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt", type=Path, default=None, help="score this checkpoint instead of the latest runs")
    p.add_argument("--runs-dir", type=Path, default=ROOT / "runs")
    p.add_argument("--profile", default="quick", help="use the latest run of this config profile")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    ckpts = [args.ckpt] if args.ckpt else \
        [latest_checkpoint(args.runs_dir, args.env, m, args.seed, args.profile) for m in args.methods]
    results = [measure(c, args.env, args.repeat, args.device) for c in ckpts]
    print(table(["system", "method", "trajectories × steps", "solver (traj/s)", "model (traj/s)", "speed-up",
                 "model rel. L2 (0,T]", "model rel. L2 (0,2T]"],
                [[args.env, r["method"], f"{r['n_traj']} × {r['n_t'] - 1}", f"{r['solver_traj_per_s']:.1f}",
                  f"{r['model_traj_per_s']:.1f}", f"{r['speedup']:.1f}×", f"{r['model_rel_l2_T']:.2e}",
                  f"{r['model_rel_l2_2T']:.2e}"] for r in results]))
    print("wrote", write_json(f"surrogate_{args.env}.json", results))


if __name__ == "__main__":
    main()

"""How fast each method adapts to one environment it never saw.

    python benchmarks/adapt_speed.py --env gray_scott [--methods lowrank coda leads lora per_env]
        [--set extrap] [--index 0] [--seed 0] [--runs-dir runs] [--shots 1]

For the trained run of each method (the newest ``runs/<env>/<method>-s<seed>-*``), adapts to
environment ``--index`` of held-out set ``--set`` from ``--shots`` trajectories exactly as the
harness does (``adapt_to_new_environments`` with the run's ``adapt`` config: early stopping on a
validation trajectory). At every validation check the current parameters are also scored on that
environment's test trajectories — outside the timed region and never used by adaptation — to find
the first check within 10% of the final held-out error. Reports wall time and optimizer steps to
get there, and in total. Granularity is ``adapt.val_every`` steps. Prints a table and writes
``benchmarks/out/adapt_speed_<system>.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from common import ROOT, latest_checkpoint, table, write_json

from leads.config.loading import system_of
from leads.datasets.cache import ensure_split
from leads.datasets.h5 import load_split
from leads.envs.base import env_label
from leads.evaluation.adaptation import adapt_to_new_environments
from leads.evaluation.scoring import score
from leads.models.forecaster import Forecaster
from leads.training.checkpoints import load_checkpoint

WITHIN = 0.10


def measure(ckpt: Path, system_name: str, set_name: str, index: int, shots: int | None) -> dict:
    module = load_checkpoint(ckpt, system_name)
    cfg = module.cfg  # keys a checkpoint predates get the schema's defaults (leads.config.schema)
    system = system_of(cfg)
    envs = system.heldout[set_name]
    if not 0 <= index < len(envs):
        raise SystemExit(f"--index {index}: set '{set_name}' of {system_name} has {len(envs)} environments")
    pick = slice(index, index + 1)
    data = {kind: load_split(ensure_split(system, cfg.data, f"{kind}_{set_name}"))
            for kind in ("adapt", "val", "test")}
    adapt, val, test = (data[kind].states[pick] for kind in ("adapt", "val", "test"))
    t, test_t = torch.as_tensor(data["adapt"].t, dtype=adapt.dtype), data["test"].t

    trace: list[tuple[int, float, float]] = []  # (step, adaptation seconds so far, test rel L2)
    start = time.perf_counter()
    paused = 0.0

    def on_check(step: int, current: Forecaster) -> None:
        nonlocal paused
        now = time.perf_counter()
        err = float(score(current, test, test_t, system.horizon).rel_l2.mean())
        trace.append((step, now - start - paused, err))
        paused += time.perf_counter() - now

    adapted = adapt_to_new_environments(module, adapt, val, t, [env_label(envs[index])], cfg.adapt, shots,
                                        on_check=on_check)
    final = float(score(adapted.module, test, test_t, system.horizon).rel_l2.mean())
    reached = next(((s, sec) for s, sec, e in trace if e <= (1 + WITHIN) * final), (None, None))
    return {"method": cfg.method, "seed": cfg.seed, "ckpt": str(ckpt), "set": set_name,
            "environment": env_label(envs[index]), "shots": adapted.shots,
            "n_adapted_params": adapted.n_adapted_params, "lr": adapted.lr,
            "initial_rel_l2": trace[0][2], "final_rel_l2": final, "steps": adapted.steps,
            "best_step": adapted.best_step, "seconds": adapted.seconds,
            "steps_to_within": reached[0], "seconds_to_within": reached[1], "trace": trace}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", default="gray_scott")
    p.add_argument("--methods", nargs="+", default=["lowrank", "coda", "leads", "lora", "per_env"])
    p.add_argument("--set", default="extrap")
    p.add_argument("--index", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--shots", type=int, default=None)
    p.add_argument("--runs-dir", type=Path, default=ROOT / "runs")
    p.add_argument("--profile", default="quick", help="use the latest run of this config profile")
    args = p.parse_args()
    results = [measure(latest_checkpoint(args.runs_dir, args.env, m, args.seed, args.profile), args.env, args.set,
                       args.index, args.shots) for m in args.methods]

    def fmt(x: float | None, spec: str) -> str:
        return "not reached" if x is None else format(x, spec)

    print(table(["system", "method", "environment", "adapted params", "s to within 10%", "steps to within 10%",
                 "total s", "total steps", "initial rel. L2", "final rel. L2"],
                [[args.env, r["method"], r["environment"], r["n_adapted_params"], fmt(r["seconds_to_within"], ".1f"),
                  fmt(r["steps_to_within"], "d"), f"{r['seconds']:.1f}", r["steps"], f"{r['initial_rel_l2']:.2e}",
                  f"{r['final_rel_l2']:.2e}"] for r in results]))
    print("wrote", write_json(f"adapt_speed_{args.env}.json", results))


if __name__ == "__main__":
    main()

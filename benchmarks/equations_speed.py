"""Gray-Scott from its system file against the hand-written one: speed at the same accuracy.

    python benchmarks/equations_speed.py [--batch 16] [--repeat 3] [--n-ref 2] [--solvers dopri5 etdrk4]

For each solver (the same scheme and settings in both: dopri5 at rtol = atol = 1e-7, etdrk4 at
step 0.25), both systems generate the same ``--batch`` trajectories (training environments in
turn, seeds 0..batch-1) over the test horizon [0, 400]; runs alternate between the two,
``--repeat`` times each, timed in CPU seconds of this process (``time.process_time``, one torch
thread: what load from other processes changes least) and wall seconds. Accuracy: relative L2
over each trajectory (t > 0) against scipy DOP853 at rtol = atol = 1e-10 on the independent
numpy right-hand side of the tests, first ``--n-ref`` trajectories, worst case. The goal: the
generated solver no slower than 1.5x the hand-written one at the same accuracy.

Prints a Markdown table and writes ``benchmarks/out/equations_speed.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from common import ROOT, machine, table, write_json

from leads.envs.equations import load_system
from leads.envs.registry import get_system
from tests.test_envs_pdes import dop853, gs_np, rel_l2

SETTINGS = {"dopri5": {"method": "dopri5", "rtol": 1e-7, "atol": 1e-7}, "etdrk4": {"method": "etdrk4", "step": 0.25}}


def _timed(fn):  # -> (result, cpu seconds, wall seconds)
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--n-ref", type=int, default=2)
    p.add_argument("--solvers", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = p.parse_args()
    torch.set_num_threads(1)
    results, rows = [], []
    for solver in args.solvers:
        hand = get_system("gray_scott", solver=solver)
        generated = load_system(Path(ROOT) / "systems" / "gray_scott.yaml", solver=SETTINGS[solver])
        envs = hand.train_envs
        params = hand.env_tensor([envs[i % len(envs)] for i in range(args.batch)])
        seeds = list(range(args.batch))
        t = hand.times(2 * hand.horizon)
        u0 = hand.sample_initial_states(seeds[: args.n_ref])
        ref = dop853(gs_np, u0, params[: args.n_ref], t)
        times: dict[str, dict[str, list[float]]] = {"hand-written": {"cpu": [], "wall": []},
                                                    "system file": {"cpu": [], "wall": []}}
        errors, outs = {}, {}
        for r in range(args.repeat + 1):  # the first round warms up (and is not counted)
            for label, system in (("hand-written", hand), ("system file", generated)):
                out, cpu, wall = _timed(lambda s=system, a=(seeds, params, t): s.generate(*a))
                outs[label] = out
                if r:
                    times[label]["cpu"].append(cpu)
                    times[label]["wall"].append(wall)
        for label in times:
            errors[label] = float(rel_l2(outs[label][: args.n_ref], ref).max())
        diff = outs["system file"] - outs["hand-written"]
        between = float((diff.flatten(1).norm(dim=1) / outs["hand-written"].flatten(1).norm(dim=1)).max())
        med = {k: statistics.median(v["cpu"]) for k, v in times.items()}
        ratio = med["system file"] / med["hand-written"]
        results.append({"solver": solver, "settings": SETTINGS[solver], "batch": args.batch, "times": times,
                        "error_vs_dop853": errors, "max_rel_difference": between, "cpu_ratio": ratio})
        for label in times:
            rows.append([solver, label, f"{med[label]:.2f}", f"{statistics.median(times[label]['wall']):.2f}",
                         f"{errors[label]:.1e}", f"{ratio:.2f}" if label == "system file" else ""])
        print(f"{solver}: system file vs hand-written, max relative difference {between:.1e}", flush=True)
    print(table(["solver", "system", f"CPU s ({args.batch} traj., median of {args.repeat})", "wall s",
                 "rel. L2 vs DOP853 (worst)", "CPU ratio"], rows))
    print(f"machine: {machine()}")
    print(f"written: {write_json('equations_speed.json', results)}")


if __name__ == "__main__":
    main()

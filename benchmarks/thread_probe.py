"""Where a second torch thread starts to pay: one training step of several models at 1 and 2 threads.

    python benchmarks/thread_probe.py [--rounds 5] [--seconds 0.5] [--threads 1 2]
        [--only NAME ...]

A training step is the profile's (as ``benchmarks/step_variants.py``): a batch of
``data.batch_size`` random states of the system's shape rolled out by the forecaster over
``data.window`` steps, the mean square of the rollout as loss, its backward pass and an Adam step.
Each workload is timed at every thread count in interleaved rounds (each round times about
``--seconds`` of steps at each count), so a load that changes during the run falls on all counts
alike; seconds per step are the median over rounds.

Beside each workload: its work per network call as the thread policy measures it
(:func:`leads.threads.work_size`: activations per layer, batch x width x grid points), so the
table shows at which size a second thread starts to pay. This measurement sets
``leads.threads.WORK_PER_THREAD``. Prints a table and writes ``benchmarks/out/thread_probe.json``.
Run it on an idle machine and state the load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from common import table, write_json

from leads.config.loading import load_config, system_of
from leads.models.forecaster import Forecaster
from leads.threads import work_size

# name: (system, profile, overrides)
WORKLOADS: dict[str, tuple[str, str, list[str]]] = {
    "lv_mlp64_b36": ("lotka_volterra", "quick", []),
    "lv_mlp64_b10": ("lotka_volterra", "paper_leads", []),
    "lv_mlp256_b36": ("lotka_volterra", "quick", ["model.width=256"]),
    "lv_mlp256_b256": ("lotka_volterra", "quick", ["model.width=256", "data.batch_size=256"]),
    "lv_mlp64_b1024": ("lotka_volterra", "quick", ["data.batch_size=1024"]),
    "gs_conv32_b1": ("gray_scott", "quick", ["data.batch_size=1"]),
    "gs_conv32_b2": ("gray_scott", "quick", ["data.batch_size=2"]),
    "gs_conv32_b8": ("gray_scott", "quick", []),
    "gs_conv64_b4": ("gray_scott", "paper", ["data.window=2"]),
    "burgers_fno16_b16": ("burgers", "quick", []),
    "kolmogorov_fno10_b8": ("kolmogorov", "quick", []),
    "kolmogorov_fno32_b16": ("kolmogorov", "quick", ["model.width=32", "data.batch_size=16"]),
}


def make_step(system_name: str, profile: str, overrides: list[str]) -> tuple[callable, int]:
    cfg = load_config(system_name, profile, ["method=lowrank", *overrides])
    system = system_of(cfg)
    module = Forecaster(cfg, system.state_shape, [f"e{i}" for i in range(len(system.train_envs))])
    module.train()
    opt = torch.optim.Adam(module.parameters(), lr=1e-4)
    n = cfg.data.batch_size
    window = cfg.data.window or round(system.horizon / system.dt)
    u0 = torch.rand(n, *system.state_shape)
    t = torch.arange(window + 1, dtype=torch.float32) * system.dt
    env = torch.arange(n) % len(system.train_envs)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        module(u0, t, env).square().mean().backward()
        opt.step()

    return step, work_size(cfg.model, system.state_shape, n)


def seconds_per_step(step: callable, threads: int, budget: float) -> float:
    torch.set_num_threads(threads)
    step()  # warm-up at this thread count
    n, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < budget:
        step()
        n += 1
    return elapsed / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.5, help="timed seconds per round and thread count")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--only", nargs="+", default=None, help="workload names (default: all)")
    args = ap.parse_args()
    torch.manual_seed(0)
    load_start = os.getloadavg()[0]
    names = args.only or list(WORKLOADS)
    results = {}
    for name in names:
        step, work = make_step(*WORKLOADS[name])
        times: dict[int, list[float]] = {k: [] for k in args.threads}
        for _ in range(args.rounds):
            for k in args.threads:
                times[k].append(seconds_per_step(step, k, args.seconds))
        med = {k: statistics.median(v) for k, v in times.items()}
        results[name] = {"work": work, "s_per_step": med, "rounds": times}
        speedups = "  ".join(f"{k}T {med[k] * 1e3:.2f} ms ({med[args.threads[0]] / med[k]:.2f}x)"
                             for k in args.threads)
        print(f"{name:<22} work {work:>9,}  {speedups}", flush=True)
    load_end = os.getloadavg()[0]
    base = args.threads[0]
    rows = [[name, f"{r['work']:,}", *(f"{r['s_per_step'][k] * 1e3:.2f}" for k in args.threads),
             *(f"{r['s_per_step'][base] / r['s_per_step'][k]:.2f}" for k in args.threads[1:])]
            for name, r in sorted(results.items(), key=lambda kv: kv[1]["work"])]
    print(table(["workload", "work (activations)", *(f"ms/step {k}T" for k in args.threads),
                 *(f"speed-up {k}T" for k in args.threads[1:])], rows))
    print(f"load average {load_start:.2f} at start, {load_end:.2f} at end")
    print(f"wrote {write_json('thread_probe.json', {'load_start': load_start, 'load_end': load_end, **results})}")


if __name__ == "__main__":
    main()

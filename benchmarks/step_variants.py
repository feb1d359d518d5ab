"""Ways to make one training step cheaper without changing its result, measured on a profile's model.

    python benchmarks/step_variants.py [--env gray_scott] [--profile paper_code_cpu] [--method lowrank]
        [--rounds 5] [--steps 10] [--threads 1] [--set KEY=VALUE ...]

A training step here is the profile's: a batch of ``data.batch_size`` random states of the
system's shape, rolled out by the forecaster over ``data.window`` observation steps, the mean
square of the rollout as loss, and its backward pass. Variants:

- ``eager``: as training runs it.
- ``compile``: the forecaster's vector field through ``torch.compile`` (compiled once, before timing).
- ``channels_last``: the states in channels-last memory format (fields only).

The variants are timed in interleaved rounds (each round times ``--steps`` steps of every
variant), so a load that changes during the run falls on all of them alike; seconds per step are
the median over rounds. Each variant's loss and gradients are compared with eager's on the same
batch (largest relative difference), since a cheaper step is only useful if it computes the same
step. Prints a table and writes ``benchmarks/out/step_variants_<env>.json``.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Callable

import torch
from common import table, write_json

from leads.config.loading import load_config, system_of
from leads.models.forecaster import Forecaster


def _step(module: Forecaster, u0: torch.Tensor, t: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
    module.zero_grad(set_to_none=True)
    loss = module(u0, t, env).square().mean()
    loss.backward()
    return loss.detach()


def _grads(module: Forecaster) -> torch.Tensor:
    return torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--env", default="gray_scott")
    ap.add_argument("--profile", default="paper_code_cpu")
    ap.add_argument("--method", default="lowrank")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    torch._logging.set_logs(dynamo=logging.ERROR)  # graph-break notices (the model's index checks)

    cfg = load_config(args.env, args.profile, [f"method={args.method}", *args.set])
    system = system_of(cfg)
    module = Forecaster(cfg, system.state_shape, [f"e{i}" for i in range(len(system.train_envs))])
    module.train()
    n = cfg.data.batch_size
    window = cfg.data.window or round(system.horizon / system.dt)
    u0 = torch.rand(n, *system.state_shape)
    t = torch.arange(window + 1, dtype=torch.float32) * system.dt
    env = torch.arange(n) % len(system.train_envs)

    eager_field = module.vector_field
    variants: dict[str, Callable[[], torch.Tensor]] = {"eager": lambda: _step(module, u0, t, env)}

    def compiled() -> torch.Tensor:
        module.vector_field = compiled_field
        try:
            return _step(module, u0, t, env)
        finally:
            module.vector_field = eager_field

    compiled_field = torch.compile(eager_field)
    variants["compile"] = compiled
    if len(system.state_shape) == 3:
        u0_cl = u0.contiguous(memory_format=torch.channels_last)
        variants["channels_last"] = lambda: _step(module, u0_cl, t, env)

    reference_loss = variants["eager"]()
    reference_grads = _grads(module).clone()
    agreement = {}
    for name, fn in variants.items():
        start = time.perf_counter()
        loss = fn()  # the first call compiles
        first = time.perf_counter() - start
        grads = _grads(module)
        agreement[name] = {
            "first_call_s": round(first, 2),
            "loss_rel_diff": float(((loss - reference_loss).abs() / reference_loss.abs()).item()),
            "grad_rel_diff": float(((grads - reference_grads).norm() / reference_grads.norm()).item()),
        }
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            for _ in range(args.steps):
                fn()
            seconds[name].append((time.perf_counter() - start) / args.steps)

    eager = statistics.median(seconds["eager"])
    rows, results = [], []
    for name in variants:
        med = statistics.median(seconds[name])
        a = agreement[name]
        rows.append([name, f"{med:.4f}", f"{eager / med:.2f}x", f"{a['loss_rel_diff']:.1e}",
                     f"{a['grad_rel_diff']:.1e}", a["first_call_s"]])
        results.append({"variant": name, "s_per_step": med, "rounds": seconds[name], **a})
    print(f"{args.env} {args.profile} {args.method}: batch {n} x window {window}, {args.threads} thread(s)")
    print(table(["variant", "s / step (median)", "speed-up", "loss rel. diff", "grad rel. diff", "first call s"],
                rows))
    write_json(f"step_variants_{args.env}.json", {"env": args.env, "profile": args.profile, "method": args.method,
                                                   "batch": n, "window": window, "results": results})


if __name__ == "__main__":
    main()

"""Training throughput and peak memory per method and system; time for lowrank to reach a target.

    python benchmarks/train_speed.py [--systems gray_scott lotka_volterra ...] [--methods ...]
        [--steps 30] [--warmup 5] [--profile quick] [--device cpu] [--set KEY=VALUE ...]
    python benchmarks/train_speed.py --to-target [--env gray_scott] [--method lowrank]
        [--targets 5e-2 2e-2] [--max-steps 4000] [--val-every 100] [--set KEY=VALUE ...]

Throughput: each (system, method) runs in a fresh process (so peak memory is its own): the
profile's data, model and batch, ``--warmup`` Lightning training steps, then ``--steps`` timed
ones. Trajectory-steps per second counts, per optimizer step, every predicted state
(trajectories in the batch × time steps of a window). Peak memory is the process's peak
resident set on CPU (with the resident set before training, so the difference is what training
adds) and ``torch.cuda.max_memory_allocated`` on GPU.

To target: trains ``--method`` on ``--env`` with the profile's settings except ``--max-steps``
and ``--val-every``, and reports the wall time (from the start of training, validation included)
and step at which the in-domain *validation* relative L2 (the split that selects checkpoints;
never test data) first falls below each target.

Prints tables and writes ``benchmarks/out/train_speed.json`` / ``train_to_target_<env>.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

import pytorch_lightning as pl
import torch
from common import ROOT, table, write_json

from leads.config.loading import load_config
from leads.envs.registry import SYSTEMS
from leads.models.methods import METHODS
from leads.training.train import data_and_model, train, trainer_kwargs


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class _Timer(pl.Callback):
    """Times optimizer steps after the first ``warmup`` and counts the states they predict."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.states, self.seconds = warmup, 0.0, 0, 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.warmup:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer: pl.Trainer, module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step > self.warmup:
            states = batch["states"]
            self.states += states.shape[0] * (states.shape[1] - 1)

    def on_train_end(self, trainer: pl.Trainer, module: Any) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self.start


def throughput(system_name: str, method: str, profile: str, steps: int, warmup: int, device: str,
               overrides: list[str] = ()) -> dict:
    """One measurement, in this process."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(system_name, profile, [*overrides, f"method={method}", f"runs_dir={tmp}", "logger=none",
                                                  f"device={device}"])
        dm, module = data_and_model(cfg)
        rss_before = _rss_mib()
        timer = _Timer(warmup)
        trainer = pl.Trainer(**trainer_kwargs(cfg), max_steps=warmup + steps, limit_val_batches=0,
                             logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, callbacks=[timer],
                             gradient_clip_val=cfg.train.grad_clip or None, default_root_dir=tmp)
        trainer.fit(module, datamodule=dm)
    gpu = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None
    return {"system": system_name, "method": method, "profile": profile, "overrides": list(overrides),
            "device": device, "steps": steps, "seconds": timer.seconds, "steps_per_s": steps / timer.seconds,
            "traj_steps_per_s": timer.states / timer.seconds, "states_per_step": timer.states / steps,
            "n_params": sum(p.numel() for p in module.parameters()),
            "rss_before_mib": rss_before, "peak_rss_mib": _rss_mib(), "peak_gpu_mib": gpu}


class _ValTrace(pl.Callback):
    def __init__(self) -> None:
        self.start, self.trace = 0.0, []

    def on_train_start(self, trainer: pl.Trainer, module: Any) -> None:
        self.start = time.perf_counter()

    def on_validation_end(self, trainer: pl.Trainer, module: Any) -> None:
        value = trainer.callback_metrics.get("val/rel_l2")
        if value is not None:
            self.trace.append((trainer.global_step, time.perf_counter() - self.start, float(value)))


def to_target(env: str, method: str, profile: str, targets: list[float], max_steps: int, val_every: int,
              device: str, overrides: list[str] = ()) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(env, profile, [*overrides, f"method={method}", f"runs_dir={tmp}", "logger=none",
                                         f"device={device}", f"train.max_steps={max_steps}",
                                         f"train.val_every={val_every}"])
        trace = _ValTrace()
        train(cfg, progress=False, callbacks=[trace])
    reached = {str(target): next(({"step": s, "seconds": sec} for s, sec, e in trace.trace if e <= target), None)
               for target in targets}
    return {"system": env, "method": method, "profile": profile, "overrides": list(overrides), "device": device,
            "max_steps": max_steps, "val_every": val_every, "reached": reached, "trace": trace.trace}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS))
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--profile", default="quick")
    p.add_argument("--device", default="cpu")
    p.add_argument("--to-target", action="store_true")
    p.add_argument("--env", default="gray_scott")
    p.add_argument("--method", default="lowrank")
    p.add_argument("--targets", nargs="+", type=float, default=[5e-2, 2e-2])
    p.add_argument("--max-steps", type=int, default=4000)
    p.add_argument("--val-every", type=int, default=100)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, as in run.py (repeatable)")
    p.add_argument("--one", nargs=2, metavar=("SYSTEM", "METHOD"), help=argparse.SUPPRESS)  # child process
    args = p.parse_args()

    if args.one:
        print(json.dumps(throughput(*args.one, args.profile, args.steps, args.warmup, args.device, args.set)))
        return
    if args.to_target:
        r = to_target(args.env, args.method, args.profile, args.targets, args.max_steps, args.val_every, args.device,
                      args.set)
        print(table(["system", "method", "target val rel. L2", "step", "seconds"],
                    [[r["system"], r["method"], f"{float(t):.0e}", *(("not reached", "—") if hit is None else
                      (hit["step"], f"{hit['seconds']:.0f}"))] for t, hit in r["reached"].items()]))
        print("wrote", write_json(f"train_to_target_{args.env}.json", r))
        return
    results = []
    for system in args.systems:
        for method in args.methods:
            out = subprocess.run([sys.executable, __file__, "--one", system, method, "--profile", args.profile,
                                  "--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device,
                                  *(f"--set={o}" for o in args.set)],
                                 capture_output=True, text=True, cwd=ROOT)
            if out.returncode:
                raise SystemExit(f"{system}/{method} failed:\n{out.stderr[-2000:]}")
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"{system}/{method}: {results[-1]['traj_steps_per_s']:.0f} trajectory-steps/s", file=sys.stderr)
    print(table(["system", "method", "states per step", "steps/s", "trajectory-steps/s", "parameters",
                 "peak RSS (MiB)", "RSS before training (MiB)", "peak GPU (MiB)"],
                [[r["system"], r["method"], f"{r['states_per_step']:.0f}", f"{r['steps_per_s']:.1f}",
                  f"{r['traj_steps_per_s']:.0f}", r["n_params"], f"{r['peak_rss_mib']:.0f}",
                  f"{r['rss_before_mib']:.0f}", "—" if r["peak_gpu_mib"] is None else f"{r['peak_gpu_mib']:.0f}"]
                 for r in results]))
    print("wrote", write_json("train_speed.json", results))


if __name__ == "__main__":
    main()

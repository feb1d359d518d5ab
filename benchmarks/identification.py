"""Identification of physical parameters on new environments, environment by environment.

    python benchmarks/identification.py --env lotka_volterra --heldout "beta=1.4,delta=0.3" --seeds 0 1 2 \
        [--optimizers lbfgs gauss_newton] [--set physics.residual=true ...] [--runs-dir runs] [--reuse]

For each seed, trains the run that

    python run.py --env <env> --set physics.terms=all --set physics.residual=false --heldout <set>

trains (``--set`` adds or replaces overrides; ``--reuse``: the finished run of that config in
``--runs-dir`` when there is one), then adapts it to ``interp``, ``extrap`` and the ``--heldout``
set together, as the main job does, once per optimizer of ``--optimizers`` (``auto``: the
default, what ``run.py`` uses). Per environment it records each parameter's relative error, the
fit's standard error, whether adaptation stopped at its cap, the environment's validation error
(what an optimizer is chosen on: never the test error) and its test error. Prints per optimizer
a table of every environment (the worst parameter over seeds) and the fraction of environments
with every parameter within ``--tolerance``, and writes ``benchmarks/out/identification_<env>.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from common import ROOT, table, write_json

from leads.config.loading import load_config, system_of
from leads.envs.base import env_label
from leads.evaluation.heldout import evaluate_heldout_sets, heldout_sets
from leads.training.checkpoints import load_checkpoint
from leads.training.train import run_id_of, train

COMPLETE = ["physics.terms=all", "physics.residual=false"]


def trained(cfg: Any, reuse: bool) -> tuple[Any, str]:
    """The trained module of ``cfg`` and its run directory (reused when finished and asked)."""
    runs = Path(cfg.runs_dir) / cfg.system_name
    if reuse:
        done = sorted((p for p in runs.glob(f"{run_id_of(cfg)}*")
                       if (p / "state.json").is_file() and (p / "checkpoints" / "best.ckpt").is_file()),
                      key=lambda p: (p / "state.json").stat().st_mtime)
        if done:
            return load_checkpoint(done[-1] / "checkpoints" / "best.ckpt", cfg.system_name), str(done[-1])
    run = train(cfg, progress=False)
    return run.module, str(run.run_dir)


def measure(cfg: Any, module: Any, optimizer: str) -> list[dict[str, Any]]:
    """One row per environment of every held-out set: adapted together, as the main job does."""
    cfg = cfg.replace(adapt=cfg.adapt.replace(optimizer=optimizer))
    start = time.process_time()
    results = evaluate_heldout_sets(module, cfg, heldout_sets(cfg), keep_test=False, progress=False)
    cpu = time.process_time() - start
    rows = []
    for name, r in results.items():
        per_env = r.scores.per_env("rel_l2")
        for e, (env, ident) in enumerate(zip(r.envs, r.identified or [], strict=True)):
            rows.append({
                "set": name, "environment": env_label(env), "optimizer": optimizer, "resolved": r.adapted.optimizer,
                "steps": r.adapted.steps, "stop": r.adapted.stop, "adapt_cpu_seconds": cpu,
                "val_rel_l2": r.adapted.val_rel_l2_per_env[e], "poor_fit": bool(r.poor_fit and r.poor_fit[e]),
                "reference_val_rel_l2": r.reference_val_rel_l2,
                "test_rel_l2": per_env[e][0] if e in per_env else float("nan"),
                "params": {p: {"estimate": i.estimate, "true": i.true, "rel_error": i.rel_error,
                               "rel_std_error": i.rel_std_error, "determined": i.determined}
                           for p, i in ident.items()}})
    return rows


def worst_param(row: dict[str, Any]) -> tuple[str, float]:
    p, v = max(row["params"].items(), key=lambda kv: kv[1]["rel_error"])
    return p, v["rel_error"]


def report(rows: list[dict[str, Any]], tolerance: float) -> str:
    """Per optimizer: one line per environment (worst parameter over seeds) and the fractions."""
    out = []
    for optimizer in dict.fromkeys(r["optimizer"] for r in rows):
        mine = [r for r in rows if r["optimizer"] == optimizer]
        lines = []
        for key in dict.fromkeys((r["set"], r["environment"]) for r in mine):
            same = [r for r in mine if (r["set"], r["environment"]) == key]
            p, err = max((worst_param(r) for r in same), key=lambda c: c[1])
            undetermined = sorted({q for r in same for q, v in r["params"].items() if not v["determined"]})
            stops = sorted({r["stop"] for r in same})
            lines.append([key[0], key[1], f"{err:.2e} ({p})", ", ".join(undetermined) or "—",
                          f"{max(r['val_rel_l2'] for r in same):.2e}", f"{max(r['test_rel_l2'] for r in same):.2e}",
                          "/".join(str(r["steps"]) for r in same), ", ".join(stops),
                          "yes" if any(r["poor_fit"] for r in same) else "—"])
        within = [all(v["rel_error"] <= tolerance for v in r["params"].values()) for r in mine]
        seeds = len(mine) // max(len(lines), 1)
        out += [f"optimizer {optimizer} ({mine[0]['resolved']}), {seeds} seed(s): {sum(within)} of {len(within)} "
                f"(environment, seed) pairs with every parameter within {tolerance:.0%}; worst "
                f"{max(worst_param(r)[1] for r in mine):.2e}", "",
                table(["set", "environment", "worst rel. error (parameter)", "not determined", "val rel. L2",
                       "test rel. L2", "steps (per seed)", "stop", "poor fit"], lines), ""]
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--env", default="lotka_volterra")
    p.add_argument("--heldout", default=None, help="a user set, as run.py --heldout takes it")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--optimizers", nargs="+", default=["auto"])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--runs-dir", type=Path, default=ROOT / "runs")
    p.add_argument("--results-dir", type=Path, default=ROOT / "results")
    p.add_argument("--data-dir", type=Path, default=None)
    p.add_argument("--reuse", action="store_true", help="reuse a finished run of the same config")
    p.add_argument("--tolerance", type=float, default=0.01)
    args = p.parse_args()

    rows: list[dict[str, Any]] = []
    for seed in args.seeds:
        overrides = [*COMPLETE, *args.overrides, f"seed={seed}", f"runs_dir={args.runs_dir}",
                     f"results_dir={args.results_dir}", "logger=none"]
        overrides += [f"data.dir={args.data_dir}"] if args.data_dir else []
        cfg = load_config(args.env, "quick", overrides)
        if args.heldout:
            cfg = cfg.replace(adapt=cfg.adapt.replace(sets=[*cfg.adapt.sets, args.heldout]))
        heldout_sets(cfg)  # a bad set fails before training
        module, run_dir = trained(cfg, args.reuse)
        for optimizer in args.optimizers:
            for r in measure(cfg, module, optimizer):
                rows.append({**r, "seed": seed, "run_dir": run_dir})
            print(f"seed {seed}, {optimizer}: done", flush=True)
    text = report(rows, args.tolerance)
    print(text)
    system = system_of(cfg)
    path = write_json(f"identification_{system.name}.json", {"argv": vars(args) | {"runs_dir": str(args.runs_dir),
                      "results_dir": str(args.results_dir), "data_dir": str(args.data_dir)}, "rows": rows,
                      "table": text})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

"""Identification of physical parameters on new environments, environment by environment.

    python benchmarks/identification.py --env lotka_volterra --heldout "beta=1.4,delta=0.3" --seeds 0 1 2 \
        [--optimizers lbfgs gauss_newton] [--set physics.residual=true ...] [--runs-dir runs] [--reuse]

For each seed, trains the run that

    python run.py --env <env> --set physics.terms=all --set physics.residual=false --heldout <set>

trains (``--set`` adds or replaces overrides; ``--reuse``: a finished run of ``--runs-dir`` whose
saved config agrees with it, when there is one), then adapts it to ``interp``, ``extrap`` and the
``--heldout`` set together, as the main job does, once per optimizer of ``--optimizers`` (``auto``: the
default, what ``run.py`` uses). Per environment it records each parameter's relative error, the
fit's standard error, whether adaptation stopped at its cap, the environment's validation error
(what an optimizer is chosen on: never the test error) and its test error. Prints per optimizer
a table of every environment (the worst parameter over seeds) and the fraction of environments
with every parameter within ``--tolerance``, and writes ``benchmarks/out/identification_<env>.json``
(``_<override>`` appended per ``--set``).
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import Any

import yaml
from common import ROOT, table, write_json

from leads.config.loading import load_config, system_of
from leads.envs.base import env_label
from leads.evaluation.heldout import evaluate_heldout_sets, heldout_sets
from leads.reporting.results import BOOKKEEPING
from leads.training.checkpoints import load_checkpoint
from leads.training.train import train

COMPLETE = ["physics.terms=all", "physics.residual=false"]


def _agrees(saved: Any, wanted: Any) -> bool:
    """Whether two plain configs agree on every key both have (keys added to the code later,
    which an older run's config lacks, are not differences)."""
    if isinstance(saved, dict) and isinstance(wanted, dict):
        return all(_agrees(saved[k], wanted[k]) for k in saved.keys() & wanted.keys())
    return saved == wanted


def trained(cfg: Any, reuse: bool) -> tuple[Any, str]:
    """The trained module of ``cfg`` and its run directory: with ``reuse``, the newest finished
    run of the same seed whose saved config agrees with ``cfg`` on what it trains."""
    runs = Path(cfg.runs_dir) / cfg.system_name
    if reuse:
        wanted = cfg.to_dict()
        wanted["data"] = {k: v for k, v in wanted["data"].items() if k != "dir"}
        wanted = {k: v for k, v in wanted.items() if k not in ("adapt", *BOOKKEEPING)}
        done = []
        for p in runs.glob(f"*-s{cfg.seed}-*"):
            if (p / "state.json").is_file() and (p / "checkpoints" / "best.ckpt").is_file():
                saved = yaml.safe_load((p / "config.yaml").read_text())
                if _agrees(saved, wanted):
                    done.append(p)
        if done:
            last = max(done, key=lambda p: (p / "state.json").stat().st_mtime)
            return load_checkpoint(last / "checkpoints" / "best.ckpt", cfg.system_name), str(last)
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

    configs = {}
    for seed in args.seeds:  # every config read before the first run: a long benchmark sees one set of files
        overrides = [*COMPLETE, *args.overrides, f"seed={seed}", f"runs_dir={args.runs_dir}",
                     f"results_dir={args.results_dir}", "logger=none"]
        overrides += [f"data.dir={args.data_dir}"] if args.data_dir else []
        cfg = load_config(args.env, "quick", overrides)
        if args.heldout:
            cfg = cfg.replace(adapt=cfg.adapt.replace(sets=[*cfg.adapt.sets, args.heldout]))
        heldout_sets(cfg)  # a bad set fails before training
        configs[seed] = cfg
    system = system_of(cfg)
    # one file per system and overrides: runs with and without a residual do not overwrite each other
    tag = "".join(f"_{re.sub(r'[^A-Za-z0-9.=,-]+', '', o)}" for o in args.overrides)
    argv = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    rows: list[dict[str, Any]] = []
    for seed, cfg in configs.items():
        module, run_dir = trained(cfg, args.reuse)
        for optimizer in args.optimizers:
            for r in measure(cfg, module, optimizer):
                rows.append({**r, "seed": seed, "run_dir": run_dir})
            print(f"seed {seed}, {optimizer}: done", flush=True)
        # written after every seed: what was measured survives a later failure
        path = write_json(f"identification_{system.name}{tag}.json", {"argv": argv, "rows": rows,
                                                                   "table": report(rows, args.tolerance)})
    print(report(rows, args.tolerance))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

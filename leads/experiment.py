"""The main job: train, evaluate in-domain, adapt to held-out environments, report."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from datasets import ensure_split, load_split
from leads import plots
from leads.adapt import adapt_to_new_environments
from leads.evaluate import Scores, rollout_examples, score
from leads.module import Forecaster
from leads.train import TrainedRun, env_label, system_of, train


def evaluate_in_domain(module: Forecaster, cfg: dict[str, Any]) -> tuple[Scores, Any]:
    system = system_of(cfg)
    data = load_split(ensure_split(system, cfg["data"], "test"))
    return score(module, data.states, data.t, system.horizon), data


def evaluate_heldout(module: Forecaster, cfg: dict[str, Any], set_name: str,
                     shots: int | None = None) -> dict[str, Any]:
    """Adapt on ``adapt_<set>`` (stopping on ``val_<set>``), then score on ``test_<set>``."""
    system = system_of(cfg)
    envs = system.heldout[set_name]
    adapt = load_split(ensure_split(system, cfg["data"], f"adapt_{set_name}"))
    val = load_split(ensure_split(system, cfg["data"], f"val_{set_name}"))
    test = load_split(ensure_split(system, cfg["data"], f"test_{set_name}"))
    adapted = adapt_to_new_environments(module, adapt.states, val.states,
                                        torch.as_tensor(adapt.t, dtype=adapt.states.dtype),
                                        [env_label(e) for e in envs], cfg["adapt"], shots)
    scores = score(adapted.module, test.states, test.t, system.horizon)
    return {"scores": scores, "adapted": adapted, "test": test}


def run_experiment(cfg: dict[str, Any], resume: bool = False, progress: bool = True) -> dict[str, Any]:
    run = train(cfg, resume=resume, progress=progress)
    system = system_of(cfg)
    module = run.module
    in_domain, test = evaluate_in_domain(module, cfg)
    results: dict[str, Any] = {"in_domain": in_domain}
    for set_name in cfg["adapt"]["sets"]:
        if set_name in system.heldout:
            results[set_name] = evaluate_heldout(module, cfg, set_name)

    figures = _figures(run, cfg, module, test, results)
    summary = _summary(run, cfg, results)
    _log_wandb(run, summary, figures)
    tmp = run.run_dir / "summary.json.tmp"
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, run.run_dir / "summary.json")
    print(format_summary(summary))
    return {"run": run, "summary": summary, "results": results, "figures": figures}


def _figures(run: TrainedRun, cfg: dict[str, Any], module: Forecaster, test: Any,
             results: dict[str, Any]) -> dict[str, Path]:
    system = system_of(cfg)
    fig_dir = run.run_dir / "figures"
    out = {}
    pred, true = rollout_examples(module, test.states, test.t)
    out["rollouts_in_domain"] = plots.save(
        plots.rollout_figure(pred, true, test.t, module.env_names, list(system.state_names)),
        fig_dir / "rollouts_in_domain.png")
    curves = {"in-domain": results["in_domain"].per_step.mean(0)}
    for set_name, r in results.items():
        if set_name == "in_domain":
            continue
        adapted = r["adapted"].module
        pred, true = rollout_examples(adapted, r["test"].states, r["test"].t)
        out[f"rollouts_{set_name}"] = plots.save(
            plots.rollout_figure(pred, true, r["test"].t, adapted.env_names, list(system.state_names)),
            fig_dir / f"rollouts_{set_name}.png")
        curves[f"{set_name} (adapted)"] = r["scores"].per_step.mean(0)
    out["error_vs_time"] = plots.save(
        plots.error_curve_figure(test.t, curves, system.horizon), fig_dir / "error_vs_time.png")
    return out


def _summary(run: TrainedRun, cfg: dict[str, Any], results: dict[str, Any]) -> dict[str, Any]:
    rows: dict[str, Any] = {"run_id": run.run_id, "run_dir": str(run.run_dir), "system": cfg["system_name"],
                            "method": cfg["method"], "seed": cfg["seed"], "train_seconds": run.train_seconds,
                            "best_ckpt": str(run.best_ckpt), "splits": {}}
    for name, r in results.items():
        s = r if isinstance(r, Scores) else r["scores"]
        entry = {"rel_l2": s.summary("rel_l2"), "mse": s.summary("mse"),
                 "rel_l2_extrap": s.summary("rel_l2_extrap"), "n_traj": int(len(s.env))}
        if not isinstance(r, Scores):
            a = r["adapted"]
            entry.update(adapt_steps=a.steps, adapt_seconds=a.seconds, adapted_params_per_env=a.n_adapted_params)
        rows["splits"][name] = entry
    return rows


def format_summary(summary: dict[str, Any]) -> str:
    head = f"{summary['system']} · {summary['method']} · seed {summary['seed']} · " \
           f"trained {summary['train_seconds']:.0f}s · {summary['run_dir']}"
    lines = [head, f"{'split':<12}{'rel L2 (0,T]':>22}{'rel L2 (T,2T]':>22}{'MSE (0,T]':>22}{'adapt':>14}"]
    for name, e in summary["splits"].items():
        def fmt(ms: tuple[float, float]) -> str:
            return "—" if np.isnan(ms[0]) else f"{ms[0]:.2e} ± {ms[1]:.1e}"
        adapt = f"{e['adapt_steps']} st {e['adapt_seconds']:.1f}s" if "adapt_steps" in e else "—"
        lines.append(f"{name:<12}{fmt(e['rel_l2']):>22}{fmt(e['rel_l2_extrap']):>22}{fmt(e['mse']):>22}{adapt:>14}")
    return "\n".join(lines)


def _log_wandb(run: TrainedRun, summary: dict[str, Any], figures: dict[str, Path]) -> None:
    from pytorch_lightning.loggers import WandbLogger

    if not isinstance(run.logger, WandbLogger):
        return
    import wandb

    exp = run.logger.experiment
    flat = {}
    for split, e in summary["splits"].items():
        for key in ("rel_l2", "mse", "rel_l2_extrap"):
            flat[f"test/{split}/{key}"] = e[key][0]
    exp.log({**flat, **{f"figures/{k}": wandb.Image(str(p)) for k, p in figures.items()}})
    exp.summary.update(flat)
    exp.finish()

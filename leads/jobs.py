"""The main job and checkpoint evaluation: in-domain scores, adaptation to every held-out set,
optional few-shot curve and context probe, figures, result rows, W&B, a printed summary."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from leads.config.loading import apply_override, system_of
from leads.config.paths import check_output_dirs
from leads.config.schema import RunConfig
from leads.datasets.atomic import atomic_write_text
from leads.datasets.cache import ensure_split
from leads.datasets.h5 import Trajectories, load_split
from leads.datasets.progress import announce
from leads.envs.base import env_label, envs_key
from leads.envs.errors import UserError
from leads.evaluation.adaptation import Adapted
from leads.evaluation.fewshot import few_shot_curve, few_shot_figure
from leads.evaluation.heldout import SetResult, evaluate_heldout_sets, heldout_sets
from leads.evaluation.probe import Probe, fit_probe, probe_figure, probe_rows
from leads.evaluation.refit import refit_training_environments
from leads.evaluation.scoring import Scores, rollout_examples, score
from leads.models.forecaster import Forecaster
from leads.models.methods import resolve_method
from leads.models.physics import method_label
from leads.reporting import leaderboard, plots
from leads.reporting.results import (
    ALL,
    append_rows,
    git_commit,
    now,
    read_rows,
    results_path,
    score_rows,
    study_hash,
)
from leads.training.checkpoints import load_checkpoint
from leads.training.interrupted import Interrupted
from leads.training.loggers import log_artifacts, make_logger
from leads.training.train import train

# What `evaluate` may change in a checkpoint's config: how to adapt and score, not what was trained.
EVAL_OVERRIDABLE = ("adapt", "data", "results_dir", "runs_dir", "device", "logger", "wandb")


@dataclass
class Evaluation:
    in_domain: Scores
    test: Trajectories
    heldout: dict[str, SetResult]
    few_shot: dict[str, dict[int, SetResult]]
    probe: Probe | None
    module: Forecaster  # the model scored in-domain: as trained, or with its training environments refitted
    refit: Adapted | None = None  # the refit of the training environments (adapt.refit_train), if any


def resolve_device(cfg: Mapping[str, Any]) -> torch.device:
    device = cfg["device"]
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device("cuda" if device == "gpu" else device)


def evaluate_in_domain(module: Forecaster, cfg: Mapping[str, Any],
                       progress: bool | None = None) -> tuple[Scores, Trajectories]:
    system = system_of(cfg)
    data = load_split(ensure_split(system, cfg["data"], "test", progress=progress))
    announce(f"scoring in-domain: {data.states.shape[0] * data.states.shape[1]} test trajectories", progress)
    return score(module, data.states, data.t, system.horizon), data


def evaluate_model(module: Forecaster, cfg: RunConfig | Mapping[str, Any], few_shot: bool = False,
                   progress: bool | None = None) -> Evaluation:
    """Score ``module`` in-domain (after refitting its training environments' parameters when
    ``adapt.refit_train`` is set), adapt it to the sets of ``cfg.adapt.sets`` (together, where
    the method allows: ``evaluate_heldout_sets``) and score it there; with ``few_shot``, also for
    each k of the few-shot curve."""
    cfg = RunConfig.of(cfg)
    sets = heldout_sets(cfg)
    module = module.to(resolve_device(cfg))
    # New environments are adapted from the shared weights alone, so the refit changes only the
    # in-domain scores, the in-domain figures and the probe's training contexts.
    refit = refit_training_environments(module, cfg, progress) if cfg.adapt.refit_train else None
    scored = refit.module if refit is not None else module
    in_domain, test = evaluate_in_domain(scored, cfg, progress)
    heldout = evaluate_heldout_sets(module, cfg, sets, progress=progress)
    curve = few_shot_curve(module, cfg, sets, heldout) if few_shot else {}
    probe = fit_probe(system_of(cfg), scored, {n: (r.envs, r.adapted.module) for n, r in heldout.items()})
    return Evaluation(in_domain, test, heldout, curve, probe, scored, refit)


# ------------------------------------------------------------------------------ entry points
def run_experiment(cfg: RunConfig | Mapping[str, Any], resume: bool = False, progress: bool = True,
                   few_shot: bool = False, test_curve: bool = False) -> dict[str, Any]:
    """Train ``cfg``, evaluate the best checkpoint, append its rows to ``results.jsonl``
    (``test_curve``: see :func:`leads.training.train.train`)."""
    cfg = RunConfig.of(cfg)
    heldout_sets(cfg)  # a bad held-out set fails now, not after training
    resolve_method(cfg.method)  # and so does a method of your own that cannot be imported
    run = train(cfg, resume=resume, progress=progress, test_curve=test_curve)
    if not run.is_global_zero:  # under DDP, rank 0 alone evaluates and writes rows
        return {"run": run, "summary": None, "evaluation": None, "figures": {}, "rows": []}
    try:
        ev = evaluate_model(run.module, cfg, few_shot, progress)
    except KeyboardInterrupt:  # nothing of the evaluation is written before it ends
        raise Interrupted("evaluation", run.run_dir, run.best_ckpt, cfg=cfg) from None
    info = _run_info(cfg, run.module, run.run_id, run.best_ckpt, {"train_seconds": run.train_seconds,
                     "train_cpu_seconds": run.train_cpu_seconds, "global_step": run.train_steps})
    rows = evaluation_rows(cfg, info, ev)
    append_rows(results_path(cfg), rows)
    announce(f"writing figures to {run.run_dir / 'figures'}", progress)
    figures = _figures(run.run_dir / "figures", cfg, ev)
    summary = _summary(info, str(run.run_dir), ev)
    summary["best_val_rel_l2"] = run.best_val_rel_l2
    atomic_write_text(run.run_dir / "summary.json", json.dumps(summary, indent=1))
    exp = _wandb_experiment(run.logger)
    if exp is not None:
        if cfg.wandb.artifacts:
            log_artifacts(exp, run.run_id, {"model": run.best_ckpt, "config": run.run_dir / "config.yaml"})
        _log_wandb(exp, cfg, summary, figures, ev)
    print(format_summary(summary))
    return {"run": run, "summary": summary, "evaluation": ev, "figures": figures, "rows": rows}


def evaluate_checkpoint(ckpt: str | Path, system: str, overrides: Sequence[str] = (), heldout: Sequence[str] = (),
                        shots: int | None = None, few_shot: bool = False) -> dict[str, Any]:
    """Score a checkpoint in-domain and on every held-out set (its config's ``adapt.sets`` plus
    ``heldout``), append the rows to ``results.jsonl`` and print a table."""
    module = load_checkpoint(ckpt, system)
    cfg = module.cfg
    for text in overrides:
        if text.split("=", 1)[0].split(".")[0].strip() not in EVAL_OVERRIDABLE:
            raise UserError(f"--set {text}: evaluate can only change {', '.join(EVAL_OVERRIDABLE)}; "
                            "the rest is fixed by the checkpoint")
        cfg = RunConfig.of(apply_override(cfg, text))
    adapt = cfg.adapt.replace(sets=[*cfg.adapt.sets, *heldout], shots=cfg.adapt.shots if shots is None else shots)
    cfg = cfg.replace(adapt=adapt)
    check_output_dirs(cfg, ("data.dir", "results_dir"))  # before any data is generated or adapted to
    module.cfg = cfg
    ckpt = Path(ckpt)
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    run_id = run_dir.name if ckpt.parent.name == "checkpoints" else ckpt.stem
    state = run_dir / "state.json"
    ev = evaluate_model(module, cfg, few_shot)
    info = _run_info(cfg, module, run_id, ckpt, json.loads(state.read_text()) if state.exists() else {})
    rows = evaluation_rows(cfg, info, ev)
    append_rows(results_path(cfg), rows)
    out_dir = results_path(cfg).parent / "figures" / run_id
    figures = _figures(out_dir, cfg, ev)
    summary = _summary(info, str(run_dir), ev)
    exp = None
    if cfg["logger"] == "wandb":
        exp = _wandb_experiment(make_logger(cfg, results_path(cfg).parent, f"{run_id}-eval-{info['eval_id']}"))
    if exp is not None:
        _log_wandb(exp, cfg, summary, figures, ev)
    print(format_summary(summary))
    return {"summary": summary, "evaluation": ev, "figures": figures, "rows": rows}


# ------------------------------------------------------------------------------ rows
def _run_info(cfg: Mapping[str, Any], module: Forecaster, run_id: str, ckpt: Path,
              state: Mapping[str, Any]) -> dict[str, Any]:
    """What every results row of a run carries. ``state``: the run's ``state.json`` (its training
    seconds and steps; ``train_steps`` falls back to ``max_steps`` for runs without one)."""
    system = system_of(cfg)
    steps = state.get("global_step")
    return {"run_id": run_id, "eval_id": uuid.uuid4().hex[:12], "time": now(), "system": cfg["system_name"],
            "method": method_label(cfg), "physics_aware": bool(cfg["physics"]["terms"]),
            "seed": cfg["seed"], "profile": cfg["profile"],
            "train_seconds": float(state.get("train_seconds", np.nan)),
            "train_cpu_seconds": float(state.get("train_cpu_seconds", np.nan)),
            "train_steps": int(cfg["train"]["max_steps"] if steps is None else steps),
            "n_trained_params": sum(p.numel() for p in module.trained_parameters()),
            "git_commit": git_commit(), "config_hash": study_hash(cfg), "ckpt": str(ckpt),
            "train_envs_key": envs_key(system, system.train_envs), "dt": system.dt, "horizon": system.horizon}


def evaluation_rows(cfg: Mapping[str, Any], info: dict[str, Any], ev: Evaluation) -> list[dict[str, Any]]:
    """Every number of ``ev`` as results rows (see :mod:`leads.reporting.results`)."""
    system = system_of(cfg)
    base = {**info, "kind": "in_domain", "shots": None, "set_envs_key": info["train_envs_key"],
            "adapt_steps": None, "adapt_best_step": None, "adapt_seconds": None, "n_adapted_params": None}
    refit = ev.refit  # in-domain rows of a refit carry its steps, like an adaptation's
    own = base if refit is None else {**base, "shots": refit.shots, "adapt_steps": refit.steps,
                                      "adapt_best_step": refit.best_step, "adapt_seconds": refit.seconds,
                                      "n_adapted_params": refit.n_adapted_params}
    rows = score_rows(own, "in_domain", ev.in_domain, [env_label(e) for e in system.train_envs])
    results = list(ev.heldout.values()) + [r for by_k in ev.few_shot.values() for r in by_k.values()]
    seen: set[int] = set()
    for r in results:
        if id(r) in seen:  # the few-shot curve reuses the main results
            continue
        seen.add(id(r))
        a = r.adapted
        held = {**base, "kind": "heldout", "shots": a.shots, "set_envs_key": envs_key(system, r.envs),
                "adapt_steps": a.steps, "adapt_best_step": a.best_step, "adapt_seconds": a.seconds,
                "n_adapted_params": a.n_adapted_params}
        rows += score_rows(held, r.name, r.scores, [env_label(e) for e in r.envs])
        if r.identified is not None:
            rows += identification_rows({**held, "kind": "identification"}, r.name, r.envs, r.identified)
    if ev.probe is not None:
        rows += probe_rows({**base, "kind": "probe"}, ev.probe)
    return rows


def identification_rows(base: dict[str, Any], split: str, envs: list[Any],
                        identified: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The physical parameters identified on a held-out set: per environment and parameter the
    estimate (``value``) with its ``true`` value and ``rel_error``; and ``param_rel_error`` rows,
    per environment and over all (``environment == "all"``), the mean relative error over
    parameters."""
    rows = []
    errors = []
    for env, row in zip(envs, identified, strict=True):
        label = env_label(env)
        for p, ident in row.items():
            rows.append({**base, "split": split, "environment": label, "metric": f"param/{p}",
                         "value": ident.estimate, "true": ident.true, "rel_error": ident.rel_error, "std": 0.0,
                         "n_traj": None})
        env_errors = [ident.rel_error for ident in row.values()]
        errors += env_errors
        rows.append({**base, "split": split, "environment": label, "metric": "param_rel_error",
                     "value": float(np.mean(env_errors)), "std": float(np.std(env_errors)), "n_traj": None})
    rows.append({**base, "split": split, "environment": ALL, "metric": "param_rel_error",
                 "value": float(np.mean(errors)), "std": float(np.std(errors)), "n_traj": None})
    return rows


# ------------------------------------------------------------------------------ reporting
def _figures(fig_dir: Path, cfg: Mapping[str, Any], ev: Evaluation) -> dict[str, Path]:
    system = system_of(cfg)
    states = list(system.observed_names(cfg["data"]["observe"]))  # what the data hold (data.observe)
    out = {}
    pred, true = rollout_examples(ev.module, ev.test.states, ev.test.t)
    out["rollouts_in_domain"] = plots.save(plots.rollout_figure(pred, true, ev.test.t, ev.module.env_names, states),
                                           fig_dir / "rollouts_in_domain.png")
    curves = {"in-domain": ev.in_domain.per_step.mean(0)}
    for name, r in ev.heldout.items():
        adapted = r.adapted.module
        pred, true = rollout_examples(adapted, r.test.states, r.test.t)
        out[f"rollouts_{name}"] = plots.save(plots.rollout_figure(pred, true, r.test.t, adapted.env_names, states),
                                             fig_dir / f"rollouts_{name}.png")
        curves[f"{name} (adapted)"] = r.scores.per_step.mean(0)
    out["error_vs_time"] = plots.save(plots.error_curve_figure(ev.test.t, curves, system.horizon),
                                      fig_dir / "error_vs_time.png")
    title = f"{cfg['system_name']} · {cfg['method']} · seed {cfg['seed']}"
    if ev.few_shot:
        out["few_shot"] = plots.save(few_shot_figure(ev.few_shot, title), fig_dir / "few_shot.png")
    if ev.probe is not None:
        out["context_probe"] = plots.save(probe_figure(ev.probe, title), fig_dir / "context_probe.png")
    return out


def _summary(info: dict[str, Any], run_dir: str, ev: Evaluation) -> dict[str, Any]:
    out: dict[str, Any] = {k: info[k] for k in ("run_id", "eval_id", "system", "method", "seed", "train_seconds")}
    out.update(run_dir=run_dir, best_ckpt=info["ckpt"], splits={})
    named: list[tuple[str, Scores, Any]] = [("in_domain", ev.in_domain, ev.refit)]
    named += [(n, r.scores, r.adapted) for n, r in ev.heldout.items()]
    for name, s, a in named:
        entry = {m: s.summary(m) for m in ("rel_l2", "mse", "rel_l2_extrap", "rel_l2_full")}
        entry["n_traj"] = int(len(s.env))
        if a is not None:
            entry.update(adapt_steps=a.steps, adapt_seconds=a.seconds, adapted_params_per_env=a.n_adapted_params,
                         shots=a.shots)
        out["splits"][name] = entry
    out["few_shot"] = {n: {k: r.scores.summary("rel_l2") for k, r in by_k.items()} for n, by_k in ev.few_shot.items()}
    out["identified"] = {n: {env_label(e): {p: dataclasses.asdict(i) for p, i in row.items()}
                             for e, row in zip(r.envs, r.identified, strict=True)}
                         for n, r in ev.heldout.items() if r.identified is not None}
    if ev.probe is not None:
        out["probe_r2"] = ev.probe.r2
    return out


def _stat(value: float, spec: str) -> str:
    """A statistic, or "—" where it is undefined (an R² over a single environment, say)."""
    return format(value, spec) if np.isfinite(value) else "—"


def format_summary(summary: dict[str, Any]) -> str:
    head = f"{summary['system']} · {summary['method']} · seed {summary['seed']} · " \
           f"trained {summary['train_seconds']:.0f}s · {summary['run_dir']}"
    lines = [head, f"{'split':<16}{'rel L2 (0,T]':>22}{'rel L2 (T,2T]':>22}{'MSE (0,T]':>22}{'adapt':>16}"]

    def fmt(ms: tuple[float, float]) -> str:
        return "—" if np.isnan(ms[0]) else f"{ms[0]:.2e} ± {ms[1]:.1e}"

    for name, e in summary["splits"].items():
        adapt = f"{e['adapt_steps']} st {e['adapt_seconds']:.1f}s" if "adapt_steps" in e else "—"
        lines.append(f"{name:<16}{fmt(e['rel_l2']):>22}{fmt(e['rel_l2_extrap']):>22}{fmt(e['mse']):>22}{adapt:>16}")
    for name, by_k in summary.get("few_shot", {}).items():
        lines.append(f"few-shot {name}: " + ", ".join(f"k={k} {fmt(v)}" for k, v in sorted(by_k.items())))
    for name, by_env in summary.get("identified", {}).items():
        lines.append(f"physical parameters identified on {name} (estimate, true, relative error):")
        for env, params in by_env.items():
            lines.append(f"  {env}: " + ", ".join(f"{p} {v['estimate']:.4g} ({v['true']:.4g}, {v['rel_error']:.1%})"
                                                  for p, v in params.items()))
    for name, r2 in summary.get("probe_r2", {}).items():
        lines.append(f"context probe R² on {name}: " + ", ".join(f"{p} {_stat(v, '.2f')}" for p, v in r2.items()))
    return "\n".join(lines)


def _wandb_experiment(logger: Any) -> Any:
    from pytorch_lightning.loggers import WandbLogger

    return logger.experiment if isinstance(logger, WandbLogger) else None


def _log_wandb(exp: Any, cfg: Mapping[str, Any], summary: dict[str, Any], figures: dict[str, Path],
               ev: Evaluation) -> None:
    import wandb

    flat = {f"test/{split}/{key}": e[key][0] for split, e in summary["splits"].items()
            for key in ("rel_l2", "mse", "rel_l2_extrap", "rel_l2_full")}
    flat.update({f"few_shot/{n}/k{k}": v[0] for n, by_k in summary["few_shot"].items() for k, v in by_k.items()})
    # Per environment, one key per (split, environment): W&B's default workspace draws a panel
    # per key with one bar per run, so methods compare environment by environment.
    system = system_of(cfg)
    labelled = [("in_domain", ev.in_domain, [env_label(e) for e in system.train_envs])]
    labelled += [(n, r.scores, [env_label(e) for e in r.envs]) for n, r in ev.heldout.items()]
    flat.update({f"test_env/{split}/{labels[e]}": m for split, scores, labels in labelled
                 for e, (m, _) in scores.per_env("rel_l2").items()})
    # Validation numbers, for sweeps (configs/sweeps/): never tune on the test keys above.
    held_val = {f"heldout_val/{n}": r.adapted.best_val_rel_l2 for n, r in ev.heldout.items()
                if np.isfinite(r.adapted.best_val_rel_l2)}
    if held_val:
        held_val["heldout_val/mean"] = float(np.mean(list(held_val.values())))
    flat.update(held_val)
    if np.isfinite(summary.get("best_val_rel_l2", np.nan)):
        flat["val/best_rel_l2"] = summary["best_val_rel_l2"]
    flat.update({f"probe_r2/{s}/{p}": v for s, r2 in summary.get("probe_r2", {}).items() for p, v in r2.items()})
    flat.update({f"identified/{s}/{p}_rel_error": float(np.mean([params[p]["rel_error"] for params in by_env.values()]))
                 for s, by_env in summary.get("identified", {}).items() for p in next(iter(by_env.values()))})
    lb = leaderboard.build(read_rows(results_path(cfg)), cfg["system_name"], cfg["profile"], cfg["adapt"]["shots"])
    exp.log({**flat, **{f"figures/{k}": wandb.Image(str(p)) for k, p in figures.items()},
             "leaderboard": leaderboard.wandb_table(lb)})
    exp.summary.update(flat)
    exp.finish()

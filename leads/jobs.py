"""The main job and checkpoint evaluation: in-domain scores, adaptation to every held-out set,
optional few-shot curve and context probe, figures, result rows, W&B, a printed summary."""

from __future__ import annotations

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
from leads.datasets.datamodule import check_window
from leads.datasets.h5 import Trajectories, load_split
from leads.datasets.progress import announce
from leads.envs.base import env_label, envs_key
from leads.envs.errors import UserError
from leads.evaluation.adaptation import Adapted
from leads.evaluation.fewshot import few_shot_curve, few_shot_figure
from leads.evaluation.heldout import SetResult, evaluate_heldout_sets, heldout_sets
from leads.evaluation.probe import Probe, fit_probe, probe_figure, probe_rows
from leads.evaluation.refit import refit_training_environments
from leads.evaluation.scoring import METRICS, Scores, rollout_examples, score
from leads.models.forecaster import Forecaster
from leads.models.methods import resolve_method
from leads.models.physics import method_label
from leads.reporting import leaderboard, plots
from leads.reporting.identification import (
    identification_rows,
    parameters_entry,
    summary_entry,
    summary_lines,
    wandb_keys,
)
from leads.reporting.keys import config_key, protocol_key
from leads.reporting.published import headline_metric
from leads.reporting.results import (
    append_rows,
    git_commit,
    now,
    read_rows,
    results_path,
    score_rows,
    study_hash,
)
from leads.threads import use_threads
from leads.training.checkpoints import load_checkpoint
from leads.training.interrupted import AfterTraining, Interrupted
from leads.training.loggers import log_artifacts, make_logger
from leads.training.train import check_resume, train

# What `evaluate` may change in a checkpoint's config: how to adapt and score, not what was trained.
EVAL_OVERRIDABLE = ("adapt", "data", "results_dir", "runs_dir", "device", "threads", "logger", "wandb")


@dataclass
class Evaluation:
    in_domain: Scores
    test: Trajectories
    heldout: dict[str, SetResult]
    few_shot: dict[str, dict[int, SetResult]]
    probe: Probe | None
    module: Forecaster  # the model scored in-domain: as trained, or with its training environments refitted
    refit: Adapted | None = None  # the refit of the training environments (adapt.refit_train), if any


def resolve_device(cfg: RunConfig) -> torch.device:
    device = cfg.device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device("cuda" if device == "gpu" else device)


def evaluate_in_domain(module: Forecaster, cfg: RunConfig,
                       progress: bool | None = None) -> tuple[Scores, Trajectories]:
    system = system_of(cfg)
    data = load_split(ensure_split(system, cfg.data, "test", progress=progress))
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
PENDING = "rows.pending.jsonl"  # a run's result rows not yet in results.jsonl (it could not be written)


def prepare_data(cfg: RunConfig, progress: bool | None = True) -> None:
    """Generate (or check) every split ``cfg`` uses, its held-out sets' included, before any
    training: data that cannot be generated (a held-out environment whose solution diverges)
    fail here, not after training. The system's other held-out sets are not generated: their
    test sets can cost more than the training data."""
    from leads.datasets.cache import ensure_dataset
    from leads.datasets.splits import run_split_names
    from leads.evaluation.heldout import resolve_sets

    system = system_of(cfg)
    sets = resolve_sets(system, list(cfg.adapt.sets))
    custom = {k: v for k, v in sets.items() if k not in system.heldout}
    try:
        ensure_dataset(system, cfg.data, run_split_names(list(sets)), custom_heldout=custom, progress=progress)
    except KeyboardInterrupt:
        raise Interrupted("data", None, cfg=cfg) from None


def run_experiment(cfg: RunConfig | Mapping[str, Any], resume: bool = False, progress: bool = True,
                   few_shot: bool = False, test_curve: bool = False) -> dict[str, Any]:
    """Train ``cfg``, evaluate the best checkpoint, append its rows to ``results.jsonl``
    (``test_curve``: see :func:`leads.training.train.train`).

    Everything that can be checked before training is: held-out sets, the method, and every data
    split (generated now if missing). With ``resume``, a run whose training had finished is not
    trained again: it is evaluated (or, where its rows were kept in ``rows.pending.jsonl``
    because ``results.jsonl`` could not be written, those rows are appended)."""
    cfg = RunConfig.of(cfg)
    check_output_dirs(cfg)  # results_dir too: it is written after training
    heldout_sets(cfg)  # a bad held-out set fails now, not after training
    resolve_method(cfg.method)  # and so does a method of your own that cannot be imported
    check_window(system_of(cfg), cfg.data)  # a training window the data cannot hold, too
    if resume:
        check_resume(cfg)  # a checkpoint of another run is refused before any data are generated
    prepare_data(cfg, progress)
    run = train(cfg, resume=resume, progress=progress, test_curve=test_curve)
    if not run.is_global_zero:  # under DDP, rank 0 alone evaluates and writes rows
        return {"run": run, "summary": None, "evaluation": None, "figures": {}, "rows": []}
    try:
        return _after_training(cfg, run, few_shot, progress)
    except KeyboardInterrupt:  # a run's rows are written whole or not at all, so its evaluation can start again
        raise Interrupted("evaluation", run.run_dir, run.best_ckpt, cfg=cfg) from None


def _after_training(cfg: RunConfig, run: Any, few_shot: bool, progress: bool) -> dict[str, Any]:
    """Evaluate a trained run, write its figures, summary and result rows, and print its summary."""
    if run.resumed_finished and (run.run_dir / PENDING).is_file():
        kept = _append_pending(cfg, run)
        if kept is not None:
            return kept
    try:
        ev = evaluate_model(run.module, cfg, few_shot, progress)
    except UserError as e:
        raise AfterTraining(str(e), run.run_dir, run.best_ckpt) from None
    info = _run_info(cfg, run.module, run.run_id, run.best_ckpt, _train_state(run))
    rows = evaluation_rows(cfg, info, ev)
    try:
        announce(f"writing figures to {run.run_dir / 'figures'}", progress)
        figures = _figures(run.run_dir / "figures", cfg, ev)
        summary = _summary(info, str(run.run_dir), ev, cfg)
        summary["best_val_rel_l2"] = run.best_val_rel_l2
        # The rows wait in the run directory until results.jsonl holds them: a full results
        # disk loses no evaluation.
        atomic_write_text(run.run_dir / PENDING, "".join(json.dumps(r, default=_json_safe) + "\n" for r in rows))
        atomic_write_text(run.run_dir / "summary.json", json.dumps(summary, indent=1))
    except OSError as e:
        raise AfterTraining(_os_error(e) + " (nothing of the evaluation was kept)", run.run_dir,
                            run.best_ckpt) from None
    _append_kept(cfg, run.run_dir, run.best_ckpt, rows)
    exp = _wandb_experiment(run.logger)
    if exp is not None:
        if cfg.wandb.artifacts:
            log_artifacts(exp, run.run_id, {"model": run.best_ckpt, "config": run.run_dir / "config.yaml"})
        _log_wandb(exp, cfg, summary, figures, ev)
    print(format_summary(summary))
    return {"run": run, "summary": summary, "evaluation": ev, "figures": figures, "rows": rows}


def _train_state(run: Any) -> dict[str, Any]:
    return {"train_seconds": run.train_seconds, "train_cpu_seconds": run.train_cpu_seconds,
            "global_step": run.train_steps, "stop": run.stop, "step_cpu_seconds": run.step_cpu_seconds}


def _json_safe(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else str(value)


def _os_error(e: OSError) -> str:
    """One line: HDF5's own messages span several lines."""
    reason = " ".join(str(e.strerror or e).split())
    return f"{reason} writing {e.filename}" if e.filename else reason


def _append_kept(cfg: RunConfig, run_dir: Path, ckpt: Path, rows: list[dict[str, Any]]) -> None:
    """Append ``rows`` (kept in ``run_dir/rows.pending.jsonl``) to results.jsonl, then drop the file."""
    try:
        replaced = append_rows(results_path(cfg), rows)
    except OSError as e:
        raise AfterTraining(f"{_os_error(e)} (the scores are kept in {run_dir / PENDING})", run_dir, ckpt) from None
    (run_dir / PENDING).unlink(missing_ok=True)
    if replaced:
        print(f"replaced {replaced} rows of an earlier evaluation of {rows[0]['run_id']}", flush=True)


def _append_pending(cfg: RunConfig, run: Any) -> dict[str, Any] | None:
    """Append the rows a run kept because results.jsonl could not be written, if they are this
    configuration's; returns the job's result, or None (they are not: evaluate again)."""
    path = run.run_dir / PENDING
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        summary = json.loads((run.run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if not rows or any(r.get("config_key") != config_key(cfg) for r in rows):
        return None
    _append_kept(cfg, run.run_dir, run.best_ckpt, rows)
    print(f"appended the {len(rows)} result rows kept in {path} to {results_path(cfg)}", flush=True)
    print(format_summary(summary))
    return {"run": run, "summary": summary, "evaluation": None, "figures": {}, "rows": rows}


def checkpoint_path(ckpt: str | Path) -> Path:
    """``ckpt`` as a checkpoint file, or a one-line error naming the file and what to pass."""
    path = Path(ckpt)
    if path.is_dir():
        found = [p for p in (path / "checkpoints" / "best.ckpt", path / "best.ckpt") if p.is_file()]
        found += sorted(p for p in path.rglob("*.ckpt") if p not in found)
        hint = f"e.g. --ckpt {found[0]}" if found else "it holds no .ckpt file"
        raise UserError(f"--ckpt {path} is a directory; pass a checkpoint file written by training, {hint}")
    return path


def evaluate_checkpoint(ckpt: str | Path, system: str, overrides: Sequence[str] = (), heldout: Sequence[str] = (),
                        shots: int | None = None, few_shot: bool = False) -> dict[str, Any]:
    """Score a checkpoint in-domain and on every held-out set (its config's ``adapt.sets`` plus
    ``heldout``), write the rows to ``results.jsonl`` (replacing those of an earlier evaluation of
    the same checkpoint, configuration, sets and shots) and print a table."""
    ckpt = checkpoint_path(ckpt)
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
    prepare_data(cfg)
    module.cfg = cfg
    announce(use_threads(cfg, system_of(cfg).state_shape).describe())
    in_run = ckpt.parent.name == "checkpoints"
    run_dir = ckpt.parent.parent if in_run else ckpt.parent
    # The validation-chosen checkpoint speaks for its run; another checkpoint of it is another entry.
    run_id = (run_dir.name if ckpt.name == "best.ckpt" else f"{run_dir.name}@{ckpt.stem}") if in_run else ckpt.stem
    state = run_dir / "state.json"
    ev = evaluate_model(module, cfg, few_shot)
    info = _run_info(cfg, module, run_id, ckpt, json.loads(state.read_text()) if state.exists() else {})
    rows = evaluation_rows(cfg, info, ev)
    replaced = append_rows(results_path(cfg), rows)
    if replaced:
        print(f"replaced {replaced} rows of an earlier evaluation of {run_id} (same configuration, sets and shots)")
    out_dir = results_path(cfg).parent / "figures" / run_id
    figures = _figures(out_dir, cfg, ev)
    summary = _summary(info, str(run_dir), ev, cfg)
    exp = None
    if cfg.logger == "wandb":
        exp = _wandb_experiment(make_logger(cfg, results_path(cfg).parent, f"{run_id}-eval-{info['eval_id']}"))
    if exp is not None:
        _log_wandb(exp, cfg, summary, figures, ev)
    print(format_summary(summary))
    return {"summary": summary, "evaluation": ev, "figures": figures, "rows": rows}


# ------------------------------------------------------------------------------ rows
def _run_info(cfg: RunConfig, module: Forecaster, run_id: str, ckpt: Path,
              state: Mapping[str, Any]) -> dict[str, Any]:
    """What every results row of a run carries. ``state``: the run's ``state.json`` (its training
    seconds and steps; ``train_steps`` falls back to ``max_steps`` for runs without one)."""
    system = system_of(cfg)
    steps = state.get("global_step")
    return {"run_id": run_id, "eval_id": uuid.uuid4().hex[:12], "time": now(), "system": cfg.system_name,
            "method": method_label(cfg), "physics_aware": bool(cfg.physics.terms),
            "seed": cfg.seed, "profile": cfg.profile,
            "protocol_key": protocol_key(cfg), "config_key": config_key(cfg),
            "train_seconds": float(state.get("train_seconds", np.nan)),
            "train_cpu_seconds": float(state.get("train_cpu_seconds", np.nan)),
            "train_steps": int(cfg.train.max_steps if steps is None else steps),
            "train_max_steps": int(cfg.train.max_steps), "train_max_cpu_seconds": cfg.train.max_cpu_seconds,
            "train_stop": state.get("stop"), "train_step_cpu_seconds": state.get("step_cpu_seconds"),
            "n_trained_params": sum(p.numel() for p in module.trained_parameters()),
            "git_commit": git_commit(), "config_hash": study_hash(cfg), "ckpt": str(ckpt),
            "train_envs_key": envs_key(system, system.train_envs), "dt": system.dt, "horizon": system.horizon}


def evaluation_rows(cfg: RunConfig, info: dict[str, Any], ev: Evaluation) -> list[dict[str, Any]]:
    """Every number of ``ev`` as results rows (see :mod:`leads.reporting.results`)."""
    system = system_of(cfg)
    base = {**info, "kind": "in_domain", "shots": None, "set_envs_key": info["train_envs_key"],
            "adapt_steps": None, "adapt_best_step": None, "adapt_seconds": None, "n_adapted_params": None,
            "adapt_stop": None}
    refit = ev.refit  # in-domain rows of a refit carry its steps, like an adaptation's
    own = base if refit is None else {**base, "shots": refit.shots, "adapt_steps": refit.steps,
                                      "adapt_best_step": refit.best_step, "adapt_seconds": refit.seconds,
                                      "adapt_stop": refit.stop, "n_adapted_params": refit.n_adapted_params}
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
                "n_adapted_params": a.n_adapted_params, "adapt_stop": a.stop}
        rows += score_rows(held, r.name, r.scores, [env_label(e) for e in r.envs])
        if r.identified is not None:
            rows += identification_rows({**held, "kind": "identification"}, r.name, r.envs, r.identified, r.poor_fit)
    if ev.probe is not None:
        rows += probe_rows({**base, "kind": "probe"}, ev.probe)
    return rows


# ------------------------------------------------------------------------------ reporting
def _figures(fig_dir: Path, cfg: RunConfig, ev: Evaluation) -> dict[str, Path]:
    system = system_of(cfg)
    states = list(system.observed_names(cfg.data.observe))  # what the data hold (data.observe)
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
    title = f"{cfg.system_name} · {cfg.method} · seed {cfg.seed}"
    if ev.few_shot:
        out["few_shot"] = plots.save(few_shot_figure(ev.few_shot, title), fig_dir / "few_shot.png")
    if ev.probe is not None:
        out["context_probe"] = plots.save(probe_figure(ev.probe, title), fig_dir / "context_probe.png")
    return out


def _summary(info: dict[str, Any], run_dir: str, ev: Evaluation, cfg: RunConfig) -> dict[str, Any]:
    out: dict[str, Any] = {k: info[k] for k in ("run_id", "eval_id", "system", "method", "seed", "train_seconds")}
    out["training"] = {"steps": info.get("train_steps"), "max_steps": info.get("train_max_steps"),
                       "seconds": info.get("train_seconds"), "cpu_seconds": info.get("train_cpu_seconds"),
                       "stop": info.get("train_stop"), "max_cpu_seconds": info.get("train_max_cpu_seconds"),
                       "step_cpu_seconds": info.get("train_step_cpu_seconds"),
                       "segments": _segments(Path(run_dir))}
    headline = headline_metric(cfg)
    out["headline"] = list(headline) if headline is not None else None
    out.update(run_dir=run_dir, best_ckpt=info["ckpt"], splits={})
    named: list[tuple[str, Scores, Any]] = [("in_domain", ev.in_domain, ev.refit)]
    named += [(n, r.scores, r.adapted) for n, r in ev.heldout.items()]
    for name, s, a in named:
        entry = {m: s.summary(m) for m in METRICS}
        entry["n_traj"] = int(len(s.env))
        entry["diverged"] = s.divergence()
        if a is not None:
            entry.update(adapt_steps=a.steps, adapt_seconds=a.seconds, adapted_params_per_env=a.n_adapted_params,
                         shots=a.shots, adapt_stop=a.stop)
        out["splits"][name] = entry
    out["few_shot"] = {n: {k: r.scores.summary("rel_l2") for k, r in by_k.items()} for n, by_k in ev.few_shot.items()}
    out["identified"] = {n: parameters_entry(r) for n, r in ev.heldout.items() if r.identified is not None}
    out["identification"] = {n: summary_entry(r) for n, r in ev.heldout.items() if r.identified is not None}
    if ev.probe is not None:
        out["probe_r2"] = ev.probe.r2
    return out


def _segments(run_dir: Path) -> list[dict[str, Any]]:
    """How each training segment of the run ended (``segments.jsonl``)."""
    from leads.training.segments import read_segments

    return [{"segment": r.get("segment"), "at_step": r.get("at_step"), "stop": r.get("stop")}
            for r in read_segments(run_dir) if r.get("event") == "end"]


def _stat(value: float, spec: str) -> str:
    """A statistic, or "—" where it is undefined (an R² over a single environment, say)."""
    return format(value, spec) if np.isfinite(value) else "—"


def _ms(ms: tuple[float, float] | list[float]) -> str:
    return "—" if ms[0] is None or np.isnan(ms[0]) else f"{ms[0]:.2e} ± {ms[1]:.1e}"


def format_scores(scores: Scores, headline: tuple[str, str] | list[str] | None) -> str:
    """One split's scores on one line: relative L2 over (0, T], the published protocol's metric
    beside it, the number of trajectories, and how many forecasts diverged."""
    text = f"relative L2 (0, T] {_ms(scores.summary('rel_l2'))}"
    if headline is not None and headline[0] != "rel_l2":
        text += f"; {headline[1]}: {_ms(scores.summary(headline[0]))}"
    text += f"; over {len(scores.env)} trajectories"
    diverged = scores.divergence()
    return text + (f"; {diverged}, scored up to divergence" if diverged else "")


def training_line(t: Mapping[str, Any]) -> str:
    """How training went: steps, why it stopped, wall and CPU seconds, and the CPU budget kept
    (or by how much, within one step's cost, it was passed)."""
    steps, cpu, wall = t.get("steps"), t.get("cpu_seconds"), t.get("seconds")
    budget, step_cost = t.get("max_cpu_seconds"), t.get("step_cpu_seconds")

    def num(x: Any, spec: str) -> str:
        return "?" if x is None or not np.isfinite(x) else format(x, spec)

    if t.get("stop") == "cpu_budget":
        why = f"{steps} of {t.get('max_steps')} steps, stopped by the CPU budget train.max_cpu_seconds={budget:g}"
    else:
        why = f"{steps} steps (train.max_steps)"
    line = f"trained {why}: {num(wall, '.0f')} s wall, {num(cpu, '.1f')} CPU s"
    if budget is not None and cpu is not None and np.isfinite(cpu):
        over = cpu - budget
        if over <= 0:
            line += f" (within the {budget:g} CPU s budget)"
        else:
            one = "less than" if step_cost is not None and np.isfinite(step_cost) and over <= step_cost else "more than"
            line += f" ({over:.2g} s over the {budget:g} CPU s budget: {one} one step, {num(step_cost, '.3g')} s)"
    interrupted = [s for s in t.get("segments") or [] if s.get("stop") == "interrupted"]
    if interrupted:
        line += f"; resumed after {len(interrupted)} interruption(s) (at step " + \
            ", ".join(str(s.get("at_step")) for s in interrupted) + ")"
    return line


def format_summary(summary: dict[str, Any]) -> str:
    head = f"{summary['system']} · {summary['method']} · seed {summary['seed']} · {summary['run_dir']}"
    lines = [head]
    if summary.get("training"):
        lines.append(training_line(summary["training"]))
    headline = summary.get("headline")
    extra = headline is not None and headline[0] != "rel_l2"
    cols = f"{'split':<16}{'rel L2 (0,T]':>22}{'rel L2 (T,2T]':>22}"
    cols += f"{headline[0]:>22}" if extra else ""
    lines.append(cols + f"{'MSE (0,T]':>22}{'adapt':>23}  diverged")
    for name, e in summary["splits"].items():
        adapt = f"{e['adapt_steps']} st {e['adapt_seconds']:.1f}s" if "adapt_steps" in e else "—"
        if e.get("adapt_stop") == "capped":  # stopped by its step budget: not converged
            adapt += " capped"
        row = f"{name:<16}{_ms(e['rel_l2']):>22}{_ms(e['rel_l2_extrap']):>22}"
        row += f"{_ms(e[headline[0]]):>22}" if extra else ""
        lines.append(row + f"{_ms(e['mse']):>22}{adapt:>23}  {e.get('diverged') or '—'}")
    if extra:
        lines.append(f"{headline[0]}: {headline[1]} (the published protocol's metric)")
    for name, by_k in summary.get("few_shot", {}).items():
        lines.append(f"few-shot {name}: " + ", ".join(f"k={k} {_ms(v)}" for k, v in sorted(by_k.items())))
    for name, by_env in summary.get("identified", {}).items():
        lines += summary_lines(name, by_env, summary.get("identification", {}).get(name))
    for name, r2 in summary.get("probe_r2", {}).items():
        lines.append(f"context probe R² on {name}: " + ", ".join(f"{p} {_stat(v, '.2f')}" for p, v in r2.items()))
    return "\n".join(lines)


def _wandb_experiment(logger: Any) -> Any:
    from pytorch_lightning.loggers import WandbLogger

    return logger.experiment if isinstance(logger, WandbLogger) else None


def _log_wandb(exp: Any, cfg: RunConfig, summary: dict[str, Any], figures: dict[str, Path],
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
    flat.update(wandb_keys(summary))
    lb = leaderboard.for_config(read_rows(results_path(cfg)), cfg)
    exp.log({**flat, **{f"figures/{k}": wandb.Image(str(p)) for k, p in figures.items()},
             "leaderboard": leaderboard.wandb_table(lb)})
    exp.summary.update(flat)
    exp.finish()

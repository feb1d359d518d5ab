"""Identified physical parameters as result rows, summary entries, printed lines and W&B keys.

Every place reports the worst parameter of a set beside the mean (an average hides the one
environment that came out wrong), says which parameters the fit does not determine (their
estimate is not a measurement) and which environments are poorly fitted on their own
validation trajectories, and whether adaptation stopped at its step cap.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from leads.envs.base import Env, env_label
from leads.evaluation.heldout import SetResult
from leads.evaluation.identification import Identified, worst
from leads.reporting.results import ALL


def identification_rows(base: dict[str, Any], split: str, envs: list[Env], identified: list[dict[str, Identified]],
                        poor_fit: list[bool] | None = None) -> list[dict[str, Any]]:
    """Rows of kind ``identification`` for one held-out set:

    - per environment and parameter, ``param/<name>``: the estimate (``value``) with its ``true``
      value, ``rel_error``, the fit's ``rel_std_error`` and whether the fit ``determined`` it;
    - per environment, ``param_rel_error``: the mean relative error over its parameters, with
      ``poor_fit`` (its validation error flagged);
    - over the set (``environment == "all"``): ``param_rel_error``, the mean over every
      environment and parameter, and ``param_rel_error_max``, the largest error of a determined
      parameter with ``worst_environment`` and ``worst_parameter``, ``n_undetermined`` and
      ``n_poor_fit``.
    """
    rows, errors = [], []
    flags = poor_fit if poor_fit is not None else [False] * len(envs)
    for env, row, poor in zip(envs, identified, flags, strict=True):
        label = env_label(env)
        for p, ident in row.items():
            rows.append({**base, "split": split, "environment": label, "metric": f"param/{p}",
                         "value": ident.estimate, "true": ident.true, "rel_error": ident.rel_error,
                         "rel_std_error": ident.rel_std_error, "determined": ident.determined, "std": 0.0,
                         "n_traj": None})
        env_errors = [ident.rel_error for ident in row.values()]
        errors += env_errors
        rows.append({**base, "split": split, "environment": label, "metric": "param_rel_error",
                     "value": float(np.mean(env_errors)), "std": float(np.std(env_errors)), "n_traj": None,
                     "poor_fit": bool(poor)})
    rows.append({**base, "split": split, "environment": ALL, "metric": "param_rel_error",
                 "value": float(np.mean(errors)), "std": float(np.std(errors)), "n_traj": None})
    w = worst(identified)
    rows.append({**base, "split": split, "environment": ALL, "metric": "param_rel_error_max",
                 "value": math.nan if w is None else w.rel_error, "std": 0.0, "n_traj": None,
                 "worst_environment": None if w is None else env_label(envs[w.environment]),
                 "worst_parameter": None if w is None else w.parameter,
                 "n_undetermined": sum(not i.determined for row in identified for i in row.values()),
                 "n_poor_fit": sum(map(bool, flags))})
    return rows


def summary_entry(r: SetResult) -> dict[str, Any]:
    """What the run summary keeps of a set's identification (``identified`` must be set)."""
    assert r.identified is not None
    w = worst(r.identified)
    flags = r.poor_fit if r.poor_fit is not None else [False] * len(r.envs)
    val = r.adapted.val_rel_l2_per_env or [math.nan] * len(r.envs)
    return {
        "mean_rel_error": float(np.mean([i.rel_error for row in r.identified for i in row.values()])),
        "worst": None if w is None else {"rel_error": w.rel_error, "environment": env_label(r.envs[w.environment]),
                                         "parameter": w.parameter},
        "undetermined": {env_label(e): [p for p, i in row.items() if not i.determined]
                         for e, row in zip(r.envs, r.identified, strict=True)
                         if any(not i.determined for i in row.values())},
        "poor_fit": {env_label(e): v for e, v, poor in zip(r.envs, val, flags, strict=True) if poor},
        "reference_val_rel_l2": r.reference_val_rel_l2,
        "adapt_stop": r.adapted.stop,
        "adapt_steps": r.adapted.steps,
    }


def parameters_entry(r: SetResult) -> dict[str, dict[str, dict[str, Any]]]:
    """Per environment and parameter: estimate, true value, errors and ``determined``."""
    assert r.identified is not None
    return {env_label(e): {p: {**dataclasses.asdict(i), "determined": i.determined} for p, i in row.items()}
            for e, row in zip(r.envs, r.identified, strict=True)}


def summary_lines(name: str, by_env: dict[str, dict[str, dict[str, Any]]],
                  entry: dict[str, Any] | None) -> list[str]:
    """The printed summary of one set: a line per environment, undetermined parameters said so."""
    head = f"physical parameters identified on {name} (estimate, true, relative error)"
    if entry is not None:
        w = entry["worst"]
        head += f"; worst {w['parameter']} {w['rel_error']:.2%} at {w['environment']}" if w else "; none determined"
        if entry["adapt_stop"] == "capped":
            head += f"; adaptation stopped at its {entry['adapt_steps']}-step cap, not converged"
    lines = [head + ":"]
    poor = (entry or {}).get("poor_fit", {})
    reference = (entry or {}).get("reference_val_rel_l2", math.nan)
    for env, params in by_env.items():
        cells = [f"{p} {v['estimate']:.4g} ({v['true']:.4g}, {v['rel_error']:.1%})" if v.get("determined", True)
                 else f"{p} not determined by the fit (std. error {_percent(v['rel_std_error'])})"
                 for p, v in params.items()]
        flag = (f"  [poor fit: validation rel. L2 {poor[env]:.2e}, against {reference:.2e} in the training "
                "environments]") if env in poor else ""
        lines.append(f"  {env}: " + ", ".join(cells) + flag)
    return lines


def _percent(x: float) -> str:
    return "infinite" if not math.isfinite(x) else f"{x:.0%}"


def wandb_keys(summary: dict[str, Any]) -> dict[str, float]:
    """``identified/<set>/<p>_rel_error`` (mean over environments), ``.../<p>_max_rel_error`` and
    ``.../max_rel_error`` (over determined parameters), ``.../n_undetermined``, ``.../n_poor_fit``."""
    out: dict[str, float] = {}
    for s, by_env in summary.get("identified", {}).items():
        names = next(iter(by_env.values()))
        for p in names:
            errors = [params[p]["rel_error"] for params in by_env.values()]
            determined = [params[p]["rel_error"] for params in by_env.values() if params[p].get("determined", True)]
            out[f"identified/{s}/{p}_rel_error"] = float(np.mean(errors))
            out[f"identified/{s}/{p}_max_rel_error"] = float(max(determined)) if determined else math.nan
        entry = summary.get("identification", {}).get(s)
        if entry is not None:
            out[f"identified/{s}/max_rel_error"] = entry["worst"]["rel_error"] if entry["worst"] else math.nan
            out[f"identified/{s}/n_undetermined"] = float(sum(map(len, entry["undetermined"].values())))
            out[f"identified/{s}/n_poor_fit"] = float(len(entry["poor_fit"]))
    return out

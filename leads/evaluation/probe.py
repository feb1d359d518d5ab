"""What the environment contexts learned: a linear probe from contexts to physical parameters.

For methods with one context vector per environment, an affine map ``context -> parameters``
is fitted on the training environments and scored by R² on the adapted contexts of held-out
environments. There are often fewer training environments than context dimensions, so the fit
is ridge regression with a small penalty relative to the contexts' own spread (1e-3 of their
mean squared deviation): predictions do not change when the contexts are rescaled. R² near 1
means the contexts encode the physics linearly; it is NaN for a parameter that does not vary
within the set scored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from leads.envs.base import Env, System
from leads.models.forecaster import Forecaster

# Methods whose environments are described by one context vector, and where to find them.
CONTEXTS: dict[str, Callable[[torch.nn.Module], torch.Tensor]] = {
    "lowrank": lambda model: model.contexts,
    "coda": lambda model: model.contexts,
}
POOLED = "heldout"  # the name of the R² over all held-out sets together


@dataclass
class Probe:
    param_names: list[str]                            # parameters that vary across training environments
    train: tuple[np.ndarray, np.ndarray]              # contexts (n, r), parameters (n, p)
    sets: dict[str, tuple[np.ndarray, np.ndarray]]    # held-out set -> contexts, parameters
    weight: np.ndarray                                # (r, p)
    bias: np.ndarray                                  # (p,)
    r2: dict[str, dict[str, float]]                   # set (or POOLED) -> parameter -> R²


def contexts_of(module: Forecaster) -> np.ndarray | None:
    getter = CONTEXTS.get(module.cfg.method)
    return None if getter is None else getter(module.model).detach().double().cpu().numpy()


RIDGE = 1e-3


def fit_linear(c: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression ``p ≈ c @ weight + bias`` with a penalty scaled to the spread of ``c``."""
    c_mean, p_mean = c.mean(0), p.mean(0)
    cc = c - c_mean
    gram = cc.T @ cc
    lam = RIDGE * np.trace(gram) / max(c.shape[1], 1) or 1e-12
    weight = np.linalg.solve(gram + lam * np.eye(c.shape[1]), cc.T @ (p - p_mean))
    return weight, p_mean - c_mean @ weight


def r2_score(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """R² per column; NaN where the column is constant."""
    ss_tot = ((true - true.mean(0)) ** 2).sum(0)
    ss_res = ((true - pred) ** 2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1), np.nan)


def fit_probe(system: System, module: Forecaster, adapted: dict[str, tuple[list[Env], Forecaster]]) -> Probe | None:
    """Probe ``module``'s training contexts; score it on each ``adapted[set] = (envs, module)``.
    None for methods without contexts or when no parameter varies across training environments."""
    train_c = contexts_of(module) if module.residual else None  # without a residual its contexts are unused
    if train_c is None:
        return None
    train_p = system.env_tensor(system.train_envs).numpy()
    varying = train_p.std(0) > 0
    if not varying.any():
        return None
    names = [p for p, v in zip(system.param_names, varying) if v]
    train_p = train_p[:, varying]
    weight, bias = fit_linear(train_c, train_p)
    sets = {name: (contexts_of(m), system.env_tensor(envs).numpy()[:, varying]) for name, (envs, m) in adapted.items()}
    r2: dict[str, dict[str, float]] = {}
    for name, (c, p) in sets.items():
        r2[name] = dict(zip(names, r2_score(p, c @ weight + bias).tolist()))
    if sets:
        c, p = (np.concatenate(a) for a in zip(*sets.values()))
        r2[POOLED] = dict(zip(names, r2_score(p, c @ weight + bias).tolist()))
    return Probe(names, (train_c, train_p), sets, weight, bias, r2)


def probe_figure(probe: Probe, title: str = "") -> Figure:
    """Contexts in their first two principal directions (fitted on all contexts), one panel per
    parameter, coloured by its value; training environments as circles."""
    groups = {"train": probe.train, **probe.sets}
    allc = np.concatenate([c for c, _ in groups.values()])
    centred = allc - allc.mean(0)
    axes_pc = np.linalg.svd(centred, full_matrices=False)[2][:2] if len(allc) > 1 else np.eye(allc.shape[1])[:2]
    axes_pc = np.vstack([axes_pc, np.zeros((2 - len(axes_pc), allc.shape[1]))])  # rank-1 contexts
    markers = ["o", "^", "s", "D", "v", "P", "X"]
    n = len(probe.param_names)
    fig = Figure(figsize=(3.4 * n, 3.0))
    axes = fig.subplots(1, n, squeeze=False)
    for j, pname in enumerate(probe.param_names):
        ax = axes[0, j]
        values = np.concatenate([p[:, j] for _, p in groups.values()])
        norm = Normalize(values.min(), values.max())
        for k, (c, p) in enumerate(groups.values()):
            xy = (c - allc.mean(0)) @ axes_pc.T
            sc = ax.scatter(xy[:, 0], xy[:, 1], c=p[:, j], cmap="viridis", norm=norm,
                            marker=markers[k % len(markers)], edgecolors="k", linewidths=0.5)
        fig.colorbar(sc, ax=ax, label=pname)
        scores = ", ".join(f"{s} {v[pname]:.2f}" for s, v in probe.r2.items() if s != POOLED)
        ax.set_title(f"{pname}: R² {scores}" if scores else pname, fontsize=7)
        ax.set_xlabel("context PC1", fontsize=7)
        ax.set_ylabel("context PC2", fontsize=7)
        ax.tick_params(labelsize=6)
        handles = [Line2D([], [], ls="", marker=markers[k % len(markers)], color="0.6", markeredgecolor="k")
                   for k in range(len(groups))]
        ax.legend(handles, list(groups), fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def probe_rows(base: dict[str, Any], probe: Probe) -> list[dict[str, Any]]:
    """Results rows: split = held-out set (or ``heldout`` pooled), environment = parameter, metric r2."""
    return [{**base, "split": s, "environment": p, "metric": "probe_r2", "value": v, "std": float("nan"),
             "n_traj": None} for s, per in probe.r2.items() for p, v in per.items()]

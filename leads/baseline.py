"""The physical model a modeller would otherwise run, scored like a method (``run.py baseline``).

A system that is observed on a coarser grid than it is solved (``System.coarse_forecast``: for
qg_ocean, pyqg at the observed resolution) forecasts every test trajectory from its observed
initial state with the environment's true parameters, nothing learned and nothing adapted. Its
rows (method ``coarse_model``, physics-aware) go to ``results.jsonl`` beside the learned models', on
the same test splits (in-domain and each held-out set, ``data.observe`` included), so the
leaderboard shows what a learned model gains over it.
"""

from __future__ import annotations

import uuid

import torch

from leads.config.loading import system_of
from leads.config.schema import RunConfig
from leads.datasets.cache import ensure_split
from leads.datasets.h5 import load_split
from leads.envs.base import env_label, envs_key
from leads.evaluation.heldout import heldout_sets
from leads.evaluation.scoring import Scores, score_predictions
from leads.reporting.results import append_rows, git_commit, now, results_path, score_rows, study_hash

NAME = "coarse_model"


def score_baseline(cfg: RunConfig, chunk: int = 64) -> dict[str, Scores]:
    """Score the system's coarse physical model on ``cfg``'s test splits and append its rows.

    Returns:
        ``{split: Scores}`` for ``in_domain`` and each held-out set of ``cfg.adapt.sets``.
    """
    system = system_of(cfg)
    groups = {"in_domain": (system.train_envs, "test", None)}
    for name, envs in heldout_sets(cfg).items():
        groups[name] = (envs, f"test_{name}", None if name in system.heldout else envs)
    info = {"run_id": f"{NAME}-{cfg.profile}", "eval_id": uuid.uuid4().hex[:12], "time": now(),
            "system": system.name, "method": NAME, "external": False, "physics_aware": True, "seed": 0,
            "profile": cfg.profile, "train_seconds": 0.0, "train_steps": 0, "n_trained_params": 0,
            "git_commit": git_commit(), "config_hash": study_hash(cfg), "ckpt": None,
            "train_envs_key": envs_key(system, system.train_envs), "dt": system.dt, "horizon": system.horizon,
            "adapt_steps": 0, "adapt_best_step": None, "adapt_seconds": 0.0, "n_adapted_params": 0}
    rows, out = [], {}
    for split, (envs, file_split, custom) in groups.items():
        test = load_split(ensure_split(system, cfg.data, file_split, custom))
        states = test.states.flatten(0, 1)
        params = test.params.repeat_interleave(test.n_traj, dim=0)
        t = test.t.numpy()
        pred = torch.cat([system.coarse_forecast(states[i:i + chunk, 0].double(), params[i:i + chunk], t,
                                                 cfg.data.observe).float() for i in range(0, len(states), chunk)])
        pred[:, 0] = states[:, 0]  # the given state is given, not predicted
        scores = score_predictions(pred.unflatten(0, test.states.shape[:2]), test.states, t, system.horizon)
        out[split] = scores
        base = {**info, "kind": "in_domain" if split == "in_domain" else "heldout",
                "shots": None if split == "in_domain" else cfg.adapt.shots, "set_envs_key": envs_key(system, envs)}
        rows += score_rows(base, split, scores, [env_label(e) for e in envs])
    append_rows(results_path(cfg), rows)
    return out


__all__ = ["NAME", "score_baseline"]

"""What a modeller would otherwise use, scored like a method (``run.py baseline``).

Two forecasts that learn nothing and adapt nothing, from each test trajectory's observed initial
state: ``persistence`` (the state stays as it is; every system), and, for a system observed on a
coarser grid than it is solved, ``coarse_model``: its physical model run at the observed resolution
with the environment's true parameters (``System.coarse_forecast``; qg_ocean: pyqg at the observed
grid). Their rows go to ``results.jsonl`` beside the learned models', on the same test splits
(in-domain and each held-out set, ``data.observe`` included), so the leaderboard shows what a
learned model gains over each.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import numpy as np
import torch

from leads.config.loading import system_of
from leads.config.schema import RunConfig
from leads.datasets.cache import ensure_split
from leads.datasets.h5 import load_split
from leads.envs.base import System, env_label, envs_key
from leads.evaluation.heldout import heldout_sets
from leads.evaluation.scoring import Scores, score_predictions
from leads.reporting.keys import protocol_key
from leads.reporting.results import append_rows, git_commit, now, results_path, score_rows, study_hash

NAME = "coarse_model"
PERSISTENCE = "persistence"
# A forecaster: (initial states (B, *state), their parameter rows (B, n_params), times) -> (B, n_t, *state)
Forecast = Callable[[torch.Tensor, torch.Tensor, np.ndarray], torch.Tensor]


def has_coarse_model(system: System) -> bool:
    return type(system).coarse_forecast is not System.coarse_forecast


def baselines(system: System, observe: str | None) -> dict[str, Forecast]:
    """The baselines ``system`` has, by name."""
    out: dict[str, Forecast] = {PERSISTENCE: lambda u0, p, t: u0.unsqueeze(1).expand(-1, len(t), *u0.shape[1:])}
    if has_coarse_model(system):
        out[NAME] = lambda u0, p, t: system.coarse_forecast(u0.double(), p, t, observe).float()
    return out


def score_baseline(cfg: RunConfig, chunk: int = 64) -> dict[str, dict[str, Scores]]:
    """Score every baseline of the system on ``cfg``'s test splits and append their rows.

    Returns:
        ``{baseline: {split: Scores}}``, splits ``in_domain`` and each held-out set of ``cfg.adapt.sets``.
    """
    system = system_of(cfg)
    groups = {"in_domain": (system.train_envs, "test", None)}
    for name, envs in heldout_sets(cfg).items():
        groups[name] = (envs, f"test_{name}", None if name in system.heldout else envs)
    tests = {split: load_split(ensure_split(system, cfg.data, file_split, custom))
             for split, (_, file_split, custom) in groups.items()}
    rows, out = [], {}
    for method, forecast in baselines(system, cfg.data.observe).items():
        info = {"run_id": f"{method}-{cfg.profile}", "eval_id": uuid.uuid4().hex[:12], "time": now(),
                "system": system.name, "method": method, "external": False, "physics_aware": method == NAME,
                "seed": 0, "profile": cfg.profile, "protocol_key": protocol_key(cfg),
                # A baseline is not trained: it is one configuration per method under a protocol.
                "config_key": f"baseline-{method}", "train_seconds": 0.0, "train_steps": 0, "n_trained_params": 0,
                "git_commit": git_commit(), "config_hash": study_hash(cfg), "ckpt": None,
                "train_envs_key": envs_key(system, system.train_envs), "dt": system.dt, "horizon": system.horizon,
                "adapt_steps": 0, "adapt_best_step": None, "adapt_seconds": 0.0, "n_adapted_params": 0}
        out[method] = {}
        for split, (envs, _, _) in groups.items():
            test = tests[split]
            states = test.states.flatten(0, 1)
            params = test.params.repeat_interleave(test.n_traj, dim=0)
            t = test.t.numpy()
            pred = torch.cat([forecast(states[i:i + chunk, 0], params[i:i + chunk], t)
                              for i in range(0, len(states), chunk)])
            pred[:, 0] = states[:, 0]  # the given state is given, not predicted
            scores = score_predictions(pred.unflatten(0, test.states.shape[:2]), test.states, t, system.horizon)
            out[method][split] = scores
            base = {**info, "kind": "in_domain" if split == "in_domain" else "heldout",
                    "shots": None if split == "in_domain" else cfg.adapt.shots,
                    "set_envs_key": envs_key(system, envs)}
            rows += score_rows(base, split, scores, [env_label(e) for e in envs])
    append_rows(results_path(cfg), rows)
    return out


__all__ = ["NAME", "PERSISTENCE", "baselines", "has_coarse_model", "score_baseline"]

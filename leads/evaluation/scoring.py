"""Scoring a forecaster on stored trajectories, and loading a checkpoint to score.

Test trajectories run to twice the training horizon; errors inside the training horizon and
beyond it (time extrapolation) are reported separately, both excluding the given state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from leads.evaluation.metrics import mean_std, mse, relative_l2, relative_l2_per_step
from leads.models.forecaster import Forecaster

# Every per-trajectory metric of Scores, as stored in results rows.
METRICS = {
    "rel_l2": "relative L2 over (0, T]",
    "rel_l2_extrap": "relative L2 over (T, 2T] (time extrapolation)",
    "rel_l2_full": "relative L2 over (0, 2T], the whole test trajectory (GEPS' convention)",
    "mse": "MSE over (0, T]",
    "mse_t0": "MSE over [0, T] including t=0 (LEADS' convention)",
}


@dataclass
class Scores:
    """Per-trajectory errors; ``env`` gives each trajectory's environment index."""

    env: np.ndarray          # (N,)
    rel_l2: np.ndarray       # (N,) over (0, T]
    mse: np.ndarray          # (N,) over (0, T]
    rel_l2_extrap: np.ndarray  # (N,) over (T, 2T]; NaN when the data stop at T
    rel_l2_full: np.ndarray  # (N,) over (0, t_end]
    mse_t0: np.ndarray       # (N,) over [0, T], t=0 included
    per_step: np.ndarray     # (N, n_t - 1) relative L2 at each time t > 0
    t: np.ndarray

    def summary(self, key: str = "rel_l2") -> tuple[float, float]:
        return mean_std(getattr(self, key))

    def per_env(self, key: str = "rel_l2") -> dict[int, tuple[float, float]]:
        values = getattr(self, key)
        return {int(e): mean_std(values[self.env == e]) for e in np.unique(self.env)}


@torch.no_grad()
def predict(module: Forecaster, states: torch.Tensor, t: torch.Tensor, env: torch.Tensor,
            chunk: int = 64) -> torch.Tensor:
    """Rollouts from ``states[:, 0]`` over ``t``; ``states`` is ``(N, n_t, *state)``."""
    module.eval()
    device = module.u_mean.device
    out = []
    for i in range(0, len(states), chunk):
        u0 = states[i:i + chunk, 0].to(device)
        out.append(module(u0, t.to(device, u0.dtype), env[i:i + chunk].to(device)).cpu())
    return torch.cat(out)


def flatten_trajectories(states: torch.Tensor, shots: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(n_env, n_traj, n_t, ...)`` -> ``(n_env * k, n_t, ...)`` and env indices; keeps the first
    ``shots`` trajectories of each environment when given."""
    if shots is not None:
        states = states[:, :shots]
    n_env, n_traj = states.shape[:2]
    env = torch.arange(n_env).repeat_interleave(n_traj)
    return states.flatten(0, 1), env


def score(module: Forecaster, states: torch.Tensor, t: np.ndarray | torch.Tensor, train_horizon: float) -> Scores:
    """Roll the model out from the first state of each trajectory and score it.

    Args:
        module: the forecaster (its environment ``e`` is the ``e``-th environment of ``states``).
        states: ``(n_env, n_traj, n_t, *state)`` true trajectories.
        t: ``(n_t,)`` observation times.
        train_horizon: ``T``; errors over ``(0, T]`` and ``(T, t_end]`` are reported apart.

    Returns:
        ``Scores``: per-trajectory errors (``METRICS``), each excluding the given state unless
        its name says otherwise; ``summary(key)`` gives their mean and std.
    """
    t = np.asarray(t)
    flat, env = flatten_trajectories(states)
    pred = predict(module, flat, torch.as_tensor(t, dtype=flat.dtype), env)
    return score_predictions(pred.view_as(states), states, t, train_horizon)


def score_predictions(pred: torch.Tensor, states: torch.Tensor, t: np.ndarray | torch.Tensor,
                      train_horizon: float) -> Scores:
    """Score predicted trajectories ``pred`` against ``states``, both ``(n_env, n_traj, n_t, *state)``
    with entry 0 the given initial state (``score`` for a model's rollouts; also for predictions
    made elsewhere, ``leads.external``)."""
    t = np.asarray(t)
    flat, env = flatten_trajectories(states)
    pred = pred.reshape(flat.shape).to(flat.dtype)
    n_in = int(np.searchsorted(t, train_horizon + 1e-9))  # points in [0, T]
    in_p, in_y = pred[:, :n_in], flat[:, :n_in]
    if n_in < len(t):
        # (T, 2T]: the state at T is the start of this segment, excluded like t=0.
        extrap = relative_l2(pred[:, n_in - 1:], flat[:, n_in - 1:]).numpy()
    else:
        extrap = np.full(len(flat), np.nan)
    with_t0 = ((in_p - in_y).double() ** 2).flatten(1).mean(1)
    return Scores(env=env.numpy(), rel_l2=relative_l2(in_p, in_y).numpy(), mse=mse(in_p, in_y).numpy(),
                  rel_l2_extrap=extrap, rel_l2_full=relative_l2(pred, flat).numpy(), mse_t0=with_t0.numpy(),
                  per_step=relative_l2_per_step(pred, flat).numpy(), t=np.asarray(t))


def rollout_examples(module: Forecaster, states: torch.Tensor, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prediction and truth of the first trajectory of each environment, for figures."""
    first = states[:, 0]
    pred = predict(module, first, torch.as_tensor(t, dtype=first.dtype), torch.arange(len(first)))
    return pred.numpy(), first.numpy()

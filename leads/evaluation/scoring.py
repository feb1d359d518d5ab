"""Scoring a forecaster on stored trajectories, and loading a checkpoint to score.

Test trajectories run to twice the training horizon; errors inside the training horizon and
beyond it (time extrapolation) are reported separately, both excluding the given state.

A forecast that becomes non-finite (NaN or infinite in any entry) has diverged: it is scored up
to the last time at which it is finite, and ``Scores.diverged_at`` records the first time at
which it is not (NaN where it never diverged). Divergence is a result, reported beside the
scores (``leads.reporting``), never a reason to drop a model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from leads.evaluation.metrics import mean_std
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
    per_step: np.ndarray     # (N, n_t - 1) relative L2 at each time t > 0 (NaN from divergence on)
    t: np.ndarray
    diverged_at: np.ndarray | None = None  # (N,) first time the forecast is non-finite; NaN: never

    def __post_init__(self) -> None:
        if self.diverged_at is None:
            self.diverged_at = np.full(len(self.env), np.nan)

    @property
    def diverged(self) -> np.ndarray:
        """``(N,)`` whether each forecast became non-finite."""
        return np.isfinite(self.diverged_at)

    def summary(self, key: str = "rel_l2") -> tuple[float, float]:
        """Mean and std over the trajectories that have a score in ``key`` (a forecast that
        diverged before the metric's window has none)."""
        values = getattr(self, key)
        return mean_std(values[np.isfinite(values)])

    def per_env(self, key: str = "rel_l2") -> dict[int, tuple[float, float]]:
        values = getattr(self, key)
        return {int(e): mean_std(values[(self.env == e) & np.isfinite(values)]) for e in np.unique(self.env)}

    def divergence(self) -> str:
        """``""``, or how many forecasts diverged and from when, e.g. ``"3/32 diverged (first at t=140)"``."""
        n = int(self.diverged.sum())
        return "" if not n else f"{n}/{len(self.env)} diverged (first at t={float(np.nanmin(self.diverged_at)):g})"


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
    made elsewhere, ``leads.external``). A trajectory that becomes non-finite is scored on its
    times before that (module docstring)."""
    t = np.asarray(t)
    flat, env = flatten_trajectories(states)
    pred = pred.reshape(flat.shape)
    n, n_t = flat.shape[:2]
    if n_t < 2:
        raise ValueError("need (N, n_t >= 2, ...) trajectories: t=0 is excluded from scores")
    y = flat.reshape(n, n_t, -1).double()
    p = pred.reshape(n, n_t, -1).double()
    finite = torch.isfinite(p).all(2)  # (N, n_t)
    first_bad = torch.where(finite.all(1), torch.full((n,), n_t), (~finite).int().argmax(1))
    valid = torch.arange(n_t)[None, :] < first_bad[:, None]  # the times before divergence
    err2 = torch.where(valid, ((p - y) ** 2).sum(2), torch.zeros(()).double())
    y2 = (y ** 2).sum(2)
    n_in = int(np.searchsorted(t, train_horizon + 1e-9))  # points in [0, T]
    step = torch.arange(n_t)[None, :]

    def window(lo: int, hi: int) -> torch.Tensor:
        return valid & (step >= lo) & (step < hi)

    def rel(m: torch.Tensor) -> np.ndarray:
        out = ((err2 * m).sum(1) / (y2 * m).sum(1)).sqrt()
        return torch.where(m.any(1), out, torch.full_like(out, float("nan"))).numpy()

    def mean_sq(m: torch.Tensor) -> np.ndarray:
        count = m.sum(1) * y.shape[2]
        return torch.where(count > 0, (err2 * m).sum(1) / count.clamp_min(1),
                           torch.full((n,), float("nan"), dtype=torch.float64)).numpy()

    # (T, 2T]: the state at T is the start of this segment, excluded like t=0.
    extrap = rel(window(n_in, n_t)) if n_in < n_t else np.full(n, np.nan)
    per_step = torch.where(valid[:, 1:], (err2[:, 1:] / y2[:, 1:]).sqrt(), torch.full((), float("nan")).double())
    diverged_at = np.where(first_bad.numpy() < n_t, t[np.minimum(first_bad.numpy(), n_t - 1)], np.nan)
    return Scores(env=env.numpy(), rel_l2=rel(window(1, n_in)), mse=mean_sq(window(1, n_in)),
                  rel_l2_extrap=extrap, rel_l2_full=rel(window(1, n_t)), mse_t0=mean_sq(window(0, n_in)),
                  per_step=per_step.numpy(), t=t, diverged_at=diverged_at)


def rollout_examples(module: Forecaster, states: torch.Tensor, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prediction and truth of the first trajectory of each environment, for figures."""
    first = states[:, 0]
    pred = predict(module, first, torch.as_tensor(t, dtype=first.dtype), torch.arange(len(first)))
    return pred.numpy(), first.numpy()

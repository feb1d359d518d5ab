"""Forecast errors per trajectory, excluding the given initial state.

All functions take predictions and targets of shape ``(N, n_t, *state)`` whose entry 0 is the
initial state; scoring it would reward copying the input, so it is dropped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch


def _flat(pred: torch.Tensor, true: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if pred.shape != true.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(true.shape)}")
    if pred.dim() < 2 or pred.shape[1] < 2:
        raise ValueError("need (N, n_t >= 2, ...) trajectories: t=0 is excluded from scores")
    return pred[:, 1:].reshape(pred.shape[0], -1).double(), true[:, 1:].reshape(true.shape[0], -1).double()


def relative_l2(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """``||ŷ - y|| / ||y||`` over each whole trajectory, t = 0 excluded.

    Args:
        pred: forecasts ``(N, n_t, *state)``; entry 0 of the time axis is the given initial state.
        true: the true trajectories, of the same shape.

    Returns:
        ``(N,)``, one error per trajectory.
    """
    p, y = _flat(pred, true)
    return (p - y).norm(dim=1) / y.norm(dim=1)


def mse(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """Mean squared error over each trajectory, t = 0 excluded; arguments and result as for
    ``relative_l2``."""
    p, y = _flat(pred, true)
    return ((p - y) ** 2).mean(dim=1)


def relative_l2_per_step(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """``||ŷ(t) - y(t)|| / ||y(t)||`` at each time ``t > 0``: shape ``(N, n_t - 1)``."""
    if pred.shape != true.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target shape {tuple(true.shape)}")
    n, n_t = pred.shape[:2]
    p = pred[:, 1:].reshape(n, n_t - 1, -1).double()
    y = true[:, 1:].reshape(n, n_t - 1, -1).double()
    return (p - y).norm(dim=2) / y.norm(dim=2)


def mean_std(values: Sequence[float] | torch.Tensor) -> tuple[float, float]:
    """Mean and (population) standard deviation; std of a single value is 0."""
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    if v.numel() == 0:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(unbiased=False))

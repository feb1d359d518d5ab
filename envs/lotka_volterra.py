"""Lotka-Volterra predator-prey: x' = alpha x - beta x y, y' = delta x y - gamma y.

Environments vary the interaction rates (beta, delta) at fixed growth/death rates
(alpha, gamma), as in CoDA: nine training environments on {0.5, 0.75, 1}^2.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from envs.solvers import ODESystem


def _grid(betas: list[float], deltas: list[float]) -> list[dict[str, float]]:
    return [{"beta": b, "delta": d} for b in betas for d in deltas]


class LotkaVolterra(ODESystem):
    name = "lotka_volterra"
    param_names = ("beta", "delta")
    state_names = ("x", "y")
    positive = ("beta", "delta")
    positive_constants = ("alpha", "gamma")
    defaults: dict[str, Any] = {
        "alpha": 0.5,
        "gamma": 0.5,
        "train_envs": _grid([0.5, 0.75, 1.0], [0.5, 0.75, 1.0]),
        "heldout": {
            "interp": _grid([0.625, 0.875], [0.625, 0.875]),
            "extrap": _grid([0.375, 1.25], [0.375, 1.25]),
        },
        "ic_ranges": [[1.0, 2.0], [1.0, 2.0]],
        "dt": 0.5,
        "horizon": 10.0,
        "substeps": 16,
    }

    def param_ranges(self) -> dict[str, tuple[float, float]]:
        return {"beta": (0.0, math.inf), "delta": (0.0, math.inf)}

    def rhs(self, t: float | torch.Tensor, u: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        p = params.to(u)
        beta, delta = p[:, 0], p[:, 1]
        x, y = u[:, 0], u[:, 1]
        a, g = self.config["alpha"], self.config["gamma"]
        return torch.stack((a * x - beta * x * y, delta * x * y - g * y), dim=1)

"""Lotka-Volterra predator-prey: x' = alpha x - beta x y, y' = delta x y - gamma y.

All four rates are parameters. By default environments vary the interaction rates
(beta, delta) at alpha = gamma = 0.5, as in CoDA (nine training environments on
{0.5, 0.75, 1}^2); omitted rates come from ``param_defaults``, so the LEADS protocol, which
varies (alpha, gamma) at beta = delta = 0.5, is a config change.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from leads.envs.solvers import ODESystem


def _grid(betas: list[float], deltas: list[float]) -> list[dict[str, float]]:
    return [{"beta": b, "delta": d} for b in betas for d in deltas]


class LotkaVolterra(ODESystem):
    name = "lotka_volterra"
    param_names = ("alpha", "beta", "gamma", "delta")
    state_names = ("x", "y")
    positive = ("alpha", "beta", "gamma", "delta")
    defaults: dict[str, Any] = {
        "param_defaults": {"alpha": 0.5, "beta": 0.5, "gamma": 0.5, "delta": 0.5},
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
        return {p: (0.0, math.inf) for p in self.param_names}

    terms = {"growth": ("alpha",), "predation": ("beta",), "conversion": ("delta",), "death": ("gamma",)}

    def term_growth(self, t: Any, u: Tensor, p: dict[str, Any]) -> Tensor:
        return torch.stack((p["alpha"] * u[:, 0], torch.zeros_like(u[:, 1])), dim=1)

    def term_predation(self, t: Any, u: Tensor, p: dict[str, Any]) -> Tensor:
        return torch.stack((-p["beta"] * u[:, 0] * u[:, 1], torch.zeros_like(u[:, 1])), dim=1)

    def term_conversion(self, t: Any, u: Tensor, p: dict[str, Any]) -> Tensor:
        return torch.stack((torch.zeros_like(u[:, 0]), p["delta"] * u[:, 0] * u[:, 1]), dim=1)

    def term_death(self, t: Any, u: Tensor, p: dict[str, Any]) -> Tensor:
        return torch.stack((torch.zeros_like(u[:, 0]), -p["gamma"] * u[:, 1]), dim=1)

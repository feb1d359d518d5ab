"""Damped driven pendulum: theta'' + omega0^2 sin(theta) + alpha theta' = F cos(omega_f t).

Environments and initial states follow GEPS: four training environments (two damped, two
driven), theta(0) ~ U[0, 0.25) rad and theta'(0) ~ U[0, 1). The forcing makes the system
non-autonomous, so trajectories are only comparable when they start at the same time.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from leads.envs.solvers import ODESystem

_KEYS = ("alpha", "omega0", "omega_f", "F")


def _envs(rows: list[tuple[float, float, float, float]]) -> list[dict[str, float]]:
    return [dict(zip(_KEYS, row)) for row in rows]


class Pendulum(ODESystem):
    name = "pendulum"
    param_names = _KEYS
    state_names = ("theta", "theta_dot")
    defaults: dict[str, Any] = {
        "train_envs": _envs([(0.2, 0.5, 0.0, 0.0), (0.5, 0.5, 0.0, 0.0), (0.0, 0.7, 0.75, 0.2), (0.0, 0.5, 1.0, 0.1)]),
        "heldout": {
            # Inside the box spanned by the training environments, away from its corners.
            "interp": _envs(
                [(0.35, 0.6, 0.5, 0.15), (0.1, 0.55, 0.9, 0.05), (0.3, 0.65, 0.25, 0.1), (0.05, 0.6, 0.8, 0.15)]
            ),
            # GEPS' adaptation environments (omega0 = 0.75, 1 lie outside the training range).
            "extrap": _envs(
                [(0.5, 1.0, 0.3, 0.2), (0.5, 0.75, 0.7, 0.1), (0.1, 1.0, 1.0, 0.15), (0.1, 0.5, 0.5, 0.05)]
            ),
        },
        "ic_ranges": [[0.0, 0.25], [0.0, 1.0]],
        "dt": 0.5,
        "horizon": 25.0,
        "substeps": 50,
    }

    def param_ranges(self) -> dict[str, tuple[float, float]]:
        # Negative damping would pump energy in; the signs of omega0, omega_f and F are
        # conventions (omega0 enters squared, a negative F is a phase shift), fixed as >= 0.
        return {p: (0.0, math.inf) for p in self.param_names}

    terms = {"kinematics": (), "gravity": ("omega0",), "friction": ("alpha",), "forcing": ("F", "omega_f")}

    def term_kinematics(self, t: Any, u: Tensor, p: dict[str, Any]) -> Tensor:
        return torch.stack((u[:, 1], torch.zeros_like(u[:, 1])), dim=1)  # d(theta)/dt = theta_dot

    def term_gravity(self, t: Any, u: Tensor, p: dict[str, Any]) -> Tensor:
        return torch.stack((torch.zeros_like(u[:, 0]), -(p["omega0"] ** 2) * torch.sin(u[:, 0])), dim=1)

    def term_friction(self, t: Any, u: Tensor, p: dict[str, Any]) -> Tensor:
        return torch.stack((torch.zeros_like(u[:, 1]), -p["alpha"] * u[:, 1]), dim=1)

    def term_forcing(self, t: Any, u: Tensor, p: dict[str, Any]) -> Tensor:
        drive = p["F"] * torch.cos(p["omega_f"] * torch.as_tensor(t, dtype=u.dtype, device=u.device))
        return torch.stack((torch.zeros_like(u[:, 1]), drive.expand_as(u[:, 1])), dim=1)

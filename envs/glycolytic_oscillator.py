"""Glycolytic oscillator: the 7-species yeast glycolysis model of Daniels & Nemenman (2015),
with the constants and initial-state box of the public CoDA code.

Environments vary k1 (the rate of the first, ATP-inhibited reaction) and K1 (its inhibition
threshold); the inhibition term is k1 S1 S6 / (1 + (S6/K1)^q).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from leads.envs.solvers import ODESystem


def _grid(k1s: list[float], K1s: list[float]) -> list[dict[str, float]]:
    return [{"k1": a, "K1": b} for a in k1s for b in K1s]


_CONSTANTS = ("J0", "k2", "k3", "k4", "k5", "k6", "q", "N", "A", "kappa", "psi", "k")


class GlycolyticOscillator(ODESystem):
    name = "glycolytic_oscillator"
    param_names = ("k1", "K1")
    state_names = ("S1", "S2", "S3", "S4", "S5", "S6", "S7")
    # K1 divides S6: zero is impossible; k1 = 0 would switch the pathway off.
    positive = ("k1", "K1")
    positive_constants = _CONSTANTS
    defaults: dict[str, Any] = {
        "J0": 2.5,
        "k2": 6.0,
        "k3": 16.0,
        "k4": 100.0,
        "k5": 1.28,
        "k6": 12.0,
        "q": 4.0,
        "N": 1.0,
        "A": 4.0,
        "kappa": 13.0,
        "psi": 0.1,
        "k": 1.8,
        "train_envs": _grid([100.0, 90.0, 80.0], [1.0, 0.75, 0.5]),
        "heldout": {
            "interp": _grid([85.0, 95.0], [0.625, 0.875]),
            "extrap": _grid([75.0, 105.0], [0.4, 1.1]),
        },
        "ic_ranges": [
            [0.15, 1.60],
            [0.19, 2.16],
            [0.04, 0.20],
            [0.10, 0.35],
            [0.08, 0.30],
            [0.14, 2.67],
            [0.05, 0.10],
        ],
        "dt": 0.05,
        "horizon": 1.0,
        "substeps": 100,
    }

    def param_ranges(self) -> dict[str, tuple[float, float]]:
        return {"k1": (0.0, math.inf), "K1": (0.0, math.inf)}

    # One term per reaction or exchange of the model: its flux, with the stoichiometry it has.
    terms = {
        "influx": ("J0",),
        "inhibited_reaction": ("k1", "K1", "q"),
        "reaction_2": ("k2", "N"),
        "reaction_3": ("k3", "A"),
        "reaction_4": ("k4",),
        "reaction_6": ("k6",),
        "atp_consumption": ("k5",),
        "pyruvate_exchange": ("kappa", "psi"),
        "pyruvate_decay": ("k",),
    }
    constants = _CONSTANTS

    @staticmethod
    def _flux(u: Tensor, flux: Tensor, stoichiometry: dict[int, float]) -> Tensor:
        """``flux`` (B,) applied to the species of ``stoichiometry`` (index -> coefficient)."""
        flux = flux.expand_as(u[:, 0])
        return torch.stack([stoichiometry.get(i, 0.0) * flux for i in range(u.shape[1])], dim=1)

    def term_influx(self, t: Any, u: Tensor, p: dict[str, Any]) -> Tensor:
        return self._flux(u, torch.as_tensor(p["J0"], dtype=u.dtype, device=u.device), {0: 1.0})

    def term_inhibited_reaction(self, t: Any, u: Tensor, p: dict[str, Any]) -> Tensor:
        s1, s6 = u[:, 0], u[:, 5]
        v1 = p["k1"] * s1 * s6 / (1 + (s6 / p["K1"]) ** p["q"])  # ATP-inhibited first reaction
        return self._flux(u, v1, {0: -1.0, 1: 2.0, 5: -2.0})

    def term_reaction_2(self, t: Any, u: Tensor, p: dict[str, Any]) -> Tensor:
        return self._flux(u, p["k2"] * u[:, 1] * (p["N"] - u[:, 4]), {1: -1.0, 2: 1.0, 4: 1.0})

    def term_reaction_3(self, t: Any, u: Tensor, p: dict[str, Any]) -> Tensor:
        return self._flux(u, p["k3"] * u[:, 2] * (p["A"] - u[:, 5]), {2: -1.0, 3: 1.0, 5: 2.0})

    def term_reaction_4(self, t: Any, u: Tensor, p: dict[str, Any]) -> Tensor:
        return self._flux(u, p["k4"] * u[:, 3] * u[:, 4], {3: -1.0, 4: -1.0})

    def term_reaction_6(self, t: Any, u: Tensor, p: dict[str, Any]) -> Tensor:
        return self._flux(u, p["k6"] * u[:, 1] * u[:, 4], {1: -1.0, 4: -1.0})

    def term_atp_consumption(self, t: Any, u: Tensor, p: dict[str, Any]) -> Tensor:
        return self._flux(u, p["k5"] * u[:, 5], {5: -1.0})

    def term_pyruvate_exchange(self, t: Any, u: Tensor, p: dict[str, Any]) -> Tensor:
        leak = p["kappa"] * (u[:, 3] - u[:, 6])  # with the extracellular pool S7
        return torch.stack([torch.zeros_like(leak)] * 3 + [-leak] + [torch.zeros_like(leak)] * 2
                           + [p["psi"] * leak], dim=1)

    def term_pyruvate_decay(self, t: Any, u: Tensor, p: dict[str, Any]) -> Tensor:
        return self._flux(u, p["k"] * u[:, 6], {6: -1.0})

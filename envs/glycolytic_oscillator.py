"""Glycolytic oscillator: the 7-species yeast glycolysis model of Daniels & Nemenman (2015),
with the constants and initial-state box of the public CoDA code.

Environments vary k1 (the rate of the first, ATP-inhibited reaction) and K1 (its inhibition
threshold); the inhibition term is k1 S1 S6 / (1 + (S6/K1)^q).
"""

from __future__ import annotations

import math
from typing import Any

import torch

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

    def rhs(self, t: float | torch.Tensor, u: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        c = self.config
        p = params.to(u)
        k1, K1 = p[:, 0], p[:, 1]
        s1, s2, s3, s4, s5, s6, s7 = u.unbind(1)
        v1 = k1 * s1 * s6 / (1 + (s6 / K1) ** c["q"])  # ATP-inhibited first reaction
        v2 = c["k2"] * s2 * (c["N"] - s5)
        v3 = c["k3"] * s3 * (c["A"] - s6)
        v4 = c["k4"] * s4 * s5
        v6 = c["k6"] * s2 * s5
        leak = c["kappa"] * (s4 - s7)  # exchange of pyruvate with the extracellular pool
        return torch.stack(
            (
                c["J0"] - v1,
                2 * v1 - v2 - v6,
                v2 - v3,
                v3 - v4 - leak,
                v2 - v4 - v6,
                -2 * v1 + 2 * v3 - c["k5"] * s6,
                c["psi"] * leak - c["k"] * s7,
            ),
            dim=1,
        )

"""Physical systems: equations, environment sets and accurate batched solvers.

>>> from envs import get_system
>>> gs = get_system("gray_scott")
"""

from __future__ import annotations

from typing import Any

from envs.base import Env, System
from envs.errors import UserError
from envs.glycolytic_oscillator import GlycolyticOscillator
from envs.gray_scott import GrayScott
from envs.lotka_volterra import LotkaVolterra
from envs.navier_stokes import NavierStokes
from envs.pendulum import Pendulum

SYSTEMS: dict[str, type[System]] = {
    cls.name: cls for cls in (LotkaVolterra, GlycolyticOscillator, GrayScott, NavierStokes, Pendulum)
}


def get_system(name: str, **overrides: Any) -> System:
    """The system registered as ``name``, with config ``overrides`` applied."""
    if name not in SYSTEMS:
        raise UserError(f"unknown system '{name}'; choose one of: {', '.join(sorted(SYSTEMS))}")
    return SYSTEMS[name](**overrides)


__all__ = ["SYSTEMS", "Env", "System", "UserError", "get_system"]

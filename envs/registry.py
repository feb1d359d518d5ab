"""Physical systems: equations, environment sets and accurate batched solvers.

>>> from envs import get_system
>>> gs = get_system("gray_scott")
"""

from __future__ import annotations

from typing import Any

from leads.envs.base import Env, System
from leads.envs.burgers import Burgers
from leads.envs.errors import UserError
from leads.envs.glycolytic_oscillator import GlycolyticOscillator
from leads.envs.gray_scott import GrayScott
from leads.envs.kolmogorov import Kolmogorov
from leads.envs.lotka_volterra import LotkaVolterra
from leads.envs.navier_stokes import NavierStokes
from leads.envs.pendulum import Pendulum
from leads.envs.qg_ocean import QGOcean

SYSTEMS: dict[str, type[System]] = {
    cls.name: cls
    for cls in (LotkaVolterra, GlycolyticOscillator, GrayScott, NavierStokes, Pendulum, Burgers, Kolmogorov,
                QGOcean)
}


def get_system(name: str, **overrides: Any) -> System:
    """The system registered as ``name``, or declared by a system file.

    Args:
        name: a key of ``SYSTEMS``, e.g. ``"gray_scott"``; a system file's path
            (``systems/brusselator.yaml``, see ``leads.envs.equations``); or an equation system's
            name when ``overrides`` hold its whole system mapping (a run config's ``system``).
        overrides: values of the system's ``defaults`` to change (``dt=5``, ``train_envs=[...]``).

    Returns:
        The ``System``: equations, environment sets, initial conditions and batched solver.
    """
    if name in SYSTEMS:
        return SYSTEMS[name](**overrides)
    from leads.envs import equations

    if "equations" in overrides:
        return equations.system_from_config(name, overrides)
    if equations.is_system_file(name):
        return equations.load_system(name, **overrides)
    raise UserError(f"unknown system '{name}'; choose one of: {', '.join(sorted(SYSTEMS))}, or give a system "
                    "file's path (e.g. systems/fitzhugh_nagumo.yaml)")


def data_version(name: str) -> int:
    """The ``data_version`` of the system registered as ``name`` (1 for equation systems: their
    equations are part of their config, which every key hashes)."""
    return SYSTEMS[name].data_version if name in SYSTEMS else 1


__all__ = ["SYSTEMS", "Env", "System", "UserError", "data_version", "get_system"]

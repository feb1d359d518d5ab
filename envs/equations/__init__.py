"""Equations as the interface: a parametric system from its written equations.

A system file (YAML, docs/equations.md) declares the fields, the periodic grid (none for an
ODE), the parameters and their environments, the time step and horizon, the initial-state
generator and each field's right-hand side as a sum of named terms::

    equations:
      u: {diffusion: D_u*laplacian(u), reaction: -u*v**2, feed: F*(1 - u)}
      v: {diffusion: D_v*laplacian(v), reaction: u*v**2, feed: -F*v, kill: -k*v}

``load_system`` parses it with sympy (no ``eval``: ``grammar``), discretizes its operators
(``operators``), splits each equation for the exponential integrator (``split``) and returns a
generated ``System`` subclass (``system``) with the file's solver; its named terms are the
physics part of hybrid models like a hand-written system's.

>>> import leads
>>> system = leads.load_system("systems/fitzhugh_nagumo.yaml")

This module imports sympy only when a system file is read, so built-in systems never pay for it.
"""

from __future__ import annotations

import functools
import json
import os
from typing import TYPE_CHECKING, Any

from leads.envs.errors import UserError

if TYPE_CHECKING:
    from leads.envs.equations.system import EquationSystem

SUFFIXES = (".yaml", ".yml")


def is_system_file(env: str | os.PathLike[str]) -> bool:
    """Whether ``--env`` names a system file (``*.yaml``/``*.yml``) rather than a built-in system."""
    return str(env).endswith(SUFFIXES)


def load_system(source: str | os.PathLike[str], **overrides: Any) -> EquationSystem:
    """The system a system file declares.

    Args:
        source: a path to a ``.yaml``/``.yml`` system file, or its text (anything with a line
            break; it must then give ``name``).
        overrides: system keys to change (``dt=5``, ``solver={"method": "etdrk4", "step": 0.1}``).

    Returns:
        The generated ``System``: equations, environments, initial states and batched solver.
    """
    from leads.envs.equations.files import read_system_file

    sf = read_system_file(source)
    return system_from_config(sf.name, {**sf.system, **overrides}, sf.where)


def system_from_config(name: str, config: dict[str, Any], where: str | None = None) -> EquationSystem:
    """The system of a (possibly canonical) system mapping, e.g. a run config's ``system`` section.

    Args:
        name: the system's name (data, runs and results directories).
        config: its system keys.
        where: what errors name (default ``system '<name>'``).
    """
    _check_not_builtin(name, where)
    try:
        text = json.dumps(config)  # key order kept: it is the order of fields, parameters and terms
    except (TypeError, ValueError):
        raise UserError(f"{where or name}: the system holds values that are not numbers, text, lists or "
                        "mappings; fix the file") from None
    return _build(name, text, where or f"system '{name}'")()


@functools.lru_cache(maxsize=64)
def _build(name: str, config_json: str, where: str) -> type[EquationSystem]:
    from leads.envs.equations.spec import parse_spec
    from leads.envs.equations.system import build_class

    return build_class(name, parse_spec(json.loads(config_json), where))


def _check_not_builtin(name: str, where: str | None) -> None:
    from leads.envs.registry import SYSTEMS

    if name in SYSTEMS:
        raise UserError(f"{where or name}: name '{name}' is a built-in system's; its data, runs and results would mix "
                        f"with the built-in one's: set name: {name}_file (or another)")


__all__ = ["SUFFIXES", "is_system_file", "load_system", "system_from_config"]

"""Range checks of the run settings that no other layer checks before they are used.

Types are kept by :func:`leads.config.merge`; this catches values of the right type that would
fail late and deep (``train.val_every=0`` inside Lightning after data generation, ``train.lr``
NaN or ``null`` inside the optimizer) or silently (``train.max_steps=-1`` is "forever" to
Lightning). The model, data and system sections are checked by their own code.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from envs.errors import UserError

Rule = Callable[[Any], str | None]  # what is wrong with a value, or None


def _int(low: int, high: int | None = None) -> Rule:
    def check(v: Any) -> str | None:
        ok = isinstance(v, int) and not isinstance(v, bool) and v >= low and (high is None or v <= high)
        return None if ok else f"must be an integer >= {low}" + ("" if high is None else f" and <= {high}")
    return check


def _number(low: float, high: float = math.inf, *, open_low: bool = False, optional: bool = False) -> Rule:
    def check(v: Any) -> str | None:
        if v is None and optional:
            return None
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) \
            and (v > low if open_low else v >= low) and v <= high
        bound = f"> {low:g}" if open_low else f">= {low:g}"
        return None if ok else f"must be a finite number {bound}" + (f" and <= {high:g}" if high < math.inf else "")
    return check


def _choice(*options: str) -> Rule:
    def check(v: Any) -> str | None:
        return None if v in options else f"must be one of: {', '.join(options)}"
    return check


RULES: dict[str, Rule] = {
    "seed": _int(0, 2**32 - 1),  # Lightning's seed_everything range
    "num_nodes": _int(1),
    "train.max_steps": _int(1),
    "train.val_every": _int(1),
    "train.lr": _number(0, open_low=True),
    "train.weight_decay": _number(0),
    "train.grad_clip": _number(0, optional=True),
    "train.explode_factor": _number(1, open_low=True),
    "train.scheduler": _choice("cosine", "none"),
    "forecaster.solver": _choice("rk4", "euler"),
    "forecaster.substeps": _int(1),
    "forecaster.teacher_forcing.start": _number(0, 1),
    "forecaster.teacher_forcing.decay": _number(0, 1),
    "forecaster.teacher_forcing.every": _int(1),
    "adapt.shots": _int(1),
    "adapt.steps": _int(0),
    "adapt.lr": _number(0, open_low=True),
    "adapt.weights_lr": _number(0, open_low=True),
    "adapt.optimizer": _choice("auto", "adam", "lbfgs"),
    "adapt.val_every": _int(1),
    "adapt.patience": _int(1),
}


def _get(cfg: dict[str, Any], key: str) -> tuple[bool, Any]:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def check_values(cfg: dict[str, Any]) -> None:
    """Raise a one-line ``UserError`` naming the first setting of ``cfg`` out of its range."""
    for key, rule in RULES.items():
        present, value = _get(cfg, key)
        if present and (problem := rule(value)):
            raise UserError(f"config key '{key}' {problem}, got {value!r}")
    devices = cfg.get("devices")
    if isinstance(devices, int) and not isinstance(devices, bool) and devices == 0:
        raise UserError("config key 'devices' must not be 0 (use a count >= 1, or -1 for all)")

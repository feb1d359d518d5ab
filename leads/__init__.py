"""leads: dynamics that generalize across physical environments.

>>> import leads
>>> system = leads.get_system("lotka_volterra")
>>> mine = leads.load_system("systems/fitzhugh_nagumo.yaml")   # a system from its written equations
>>> model = leads.load_checkpoint("runs/lotka_volterra/<run>/checkpoints/best.ckpt")
>>> adapted = leads.adapt(model, adapt_split.states, val_split.states, adapt_split.t, ["new"])

Subpackages: ``leads.envs`` (physics), ``leads.datasets`` (storage), ``leads.models``,
``leads.training``, ``leads.evaluation``, ``leads.reporting``, ``leads.config``.
The names below are imported on first use, so ``import leads`` (and generating data) does not
pay for importing Lightning.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> module that defines it
_API = {
    "SYSTEMS": "leads.envs.registry",
    "env_label": "leads.envs.base",
    "get_system": "leads.envs.registry",
    "load_system": "leads.envs.equations",
    "System": "leads.envs.base",
    "Env": "leads.envs.base",
    "UserError": "leads.envs.errors",
    "ensure_dataset": "leads.datasets.cache",
    "ensure_split": "leads.datasets.cache",
    "load_split": "leads.datasets.h5",
    "Trajectories": "leads.datasets.h5",
    "load_config": "leads.config.loading",
    "RunConfig": "leads.config.schema",
    "METHODS": "leads.models.methods",
    "build_model": "leads.models.methods",
    "Forecaster": "leads.models.forecaster",
    "PhysicsPart": "leads.models.physics",
    "rollout": "leads.models.rollout",
    "load_checkpoint": "leads.training.checkpoints",
    "train": "leads.training.train",
    "adapt": "leads.evaluation.adaptation",
    "score": "leads.evaluation.scoring",
    "Scores": "leads.evaluation.scoring",
    "relative_l2": "leads.evaluation.metrics",
    "mse": "leads.evaluation.metrics",
}

__all__ = [
    "Env",
    "Forecaster",
    "METHODS",
    "PhysicsPart",
    "RunConfig",
    "SYSTEMS",
    "Scores",
    "System",
    "Trajectories",
    "UserError",
    "adapt",
    "build_model",
    "env_label",
    "ensure_dataset",
    "ensure_split",
    "get_system",
    "load_checkpoint",
    "load_config",
    "load_split",
    "load_system",
    "mse",
    "relative_l2",
    "rollout",
    "score",
    "train",
]

if TYPE_CHECKING:
    from leads.config.loading import load_config
    from leads.config.schema import RunConfig
    from leads.datasets.cache import ensure_dataset, ensure_split
    from leads.datasets.h5 import Trajectories, load_split
    from leads.envs.base import Env, System, env_label
    from leads.envs.equations import load_system
    from leads.envs.errors import UserError
    from leads.envs.registry import SYSTEMS, get_system
    from leads.evaluation.adaptation import adapt
    from leads.evaluation.metrics import mse, relative_l2
    from leads.evaluation.scoring import Scores, score
    from leads.models.forecaster import Forecaster
    from leads.models.methods import METHODS, build_model
    from leads.models.rollout import rollout
    from leads.training.checkpoints import load_checkpoint
    from leads.training.train import train


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'leads' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))

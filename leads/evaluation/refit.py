"""Refitting the training environments' own parameters after training (``adapt.refit_train``).

Training moves the shared weights and every environment's parameters together with Adam, so at
the end the training environments' contexts can be less accurate than what adaptation's
full-batch L-BFGS finds for a new environment with the same shared weights: the Gray-Scott
hybrid with a linear residual scored 2.75e-3 in-domain against 1.39e-3 on new environments
(docs/benchmarks.md). A refit gives the training environments the same treatment as new ones: the
shared weights are held, each training environment's parameters are fitted from their trained
values on its first ``adapt.refit_train`` training trajectories, and each keeps the value of the
check where its own error on the in-domain validation split was lowest (the trained value when
no step improves it). Test trajectories are never read.
"""

from __future__ import annotations

import torch

from leads.config.loading import system_of
from leads.config.schema import RunConfig
from leads.datasets.cache import ensure_split
from leads.datasets.h5 import load_split
from leads.evaluation.adaptation import Adapted, adapt_to_new_environments
from leads.models.forecaster import Forecaster


def refit_training_environments(module: Forecaster, cfg: RunConfig,
                                progress: bool | None = None) -> Adapted:
    """Fit ``module``'s training-environment parameters again with its shared weights held.

    Args:
        module: a trained forecaster; left untouched (the result holds a refitted copy).
        cfg: the run config; ``adapt.refit_train`` trajectories per environment of the ``train``
            split are fitted, stopping and selection on the ``val`` split, with ``adapt``'s
            optimizer, steps, patience and checks.
        progress: show progress (False: nothing).

    Returns:
        ``Adapted`` whose module is the refitted copy; ``shots`` is ``adapt.refit_train``.
    """
    system = system_of(cfg)
    shots = int(cfg.adapt.refit_train)
    # Only the trajectories fitted are read: the GEPS code's Gray-Scott has 256 per environment.
    train = load_split(ensure_split(system, cfg.data, "train", progress=progress), trajectories=shots)
    val = load_split(ensure_split(system, cfg.data, "val", progress=progress))
    t = torch.as_tensor(train.t, dtype=train.states.dtype)
    return adapt_to_new_environments(module, train.states, val.states, t, list(module.env_names), cfg.adapt,
                                     shots, envs=list(system.train_envs),
                                     progress=progress, label="training environments (refit)", reset=False)

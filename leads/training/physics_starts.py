"""The multi-start fit of the known terms' parameters during training (``physics.start_after``).

With a residual, the search cannot run before training: the untrained residual is noise, and the
known terms alone get fitted to what the missing ones do. After some steps the residual carries
what it can, and each environment's parameters are searched with it held
(``Forecaster.search_physics``).
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch


class SearchPhysicsAfter(pl.Callback):
    """Runs ``module.search_physics`` on the training trajectories before training step ``after``.

    Args:
        states: ``(n_env, n_traj, n_t, *state)`` training trajectories; ``t`` their times.
        starts, steps, seed: as ``Forecaster.search_physics``.
        after: the training step before which it runs (a run resumed past it does not repeat it:
            the searched values are in its checkpoint).
    """

    def __init__(self, states: torch.Tensor, t: torch.Tensor, starts: int, steps: int, seed: int, after: int) -> None:
        self.states, self.t = states, t
        self.starts, self.steps, self.seed, self.after = starts, steps, seed, after

    def on_train_batch_start(self, trainer: pl.Trainer, module: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step == self.after:
            module.search_physics(self.states, self.t, self.starts, self.steps, self.seed)

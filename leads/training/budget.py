"""A training budget in CPU seconds: stop before the run's clock passes ``train.max_cpu_seconds``.

A budget in steps is a budget in CPU time only on the machine it was sized on: the same
Gray-Scott step cost 0.118 CPU s on one 2-core machine and 0.071 on another (docs/benchmarks.md).
``train.max_cpu_seconds`` states the budget itself. ``max_steps`` still ends training and sets
the learning-rate schedule, so on a slower machine the budget stops a run earlier in its
schedule, at a higher learning rate: the steps a run trained are in its ``state.json`` and its
results rows (``train_steps``).

The run's clock (:class:`~leads.training.checkpoints.TrainClock`) counts training and
validation, survives a resume, and is what ``train_cpu_seconds`` reports. Training stops after
the step past which the validation due there (if any), one more step and the final validation
would pass the budget, each costed as the last one measured: where steps and validations cost
what they did before, the clock ends at or under the budget, one step short of passing it.
"""

from __future__ import annotations

from typing import Any

from pytorch_lightning.callbacks import Callback

from leads.training.checkpoints import TrainClock


class CPUBudget(Callback):
    """Stop training before ``clock`` reaches ``max_cpu_seconds``.

    Args:
        max_cpu_seconds: the budget, in CPU seconds of the training process (every thread).
        clock: the run's training clock.
        announce: print one line when the budget stops a run.
    """

    def __init__(self, max_cpu_seconds: float, clock: TrainClock, announce: bool = True) -> None:
        self.budget = float(max_cpu_seconds)
        self.clock = clock
        self.announce = announce
        self.step_cost = 0.0
        self.val_cost = 0.0
        self._step_start = 0.0
        self._val_start = 0.0

    def on_train_batch_start(self, trainer: Any, *args: Any) -> None:
        self._step_start = self.clock.cpu_seconds()

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        now = self.clock.cpu_seconds()
        self.step_cost = now - self._step_start
        every = getattr(trainer, "val_check_batch", None)
        due = isinstance(every, int) and every > 0 and trainer.global_step % every == 0  # validates after this step
        # Stopping here costs the validation it makes; going on costs the one due (if any), a
        # step, and the validation at the stop after it.
        over = now + self.val_cost * (1 + due) + self.step_cost > self.budget
        # Every rank must stop at the same step (its clock is its own process's): any rank's
        # budget stops all of them, as early stopping does.
        if trainer.strategy.reduce_boolean_decision(over, all=False) and not trainer.should_stop:
            trainer.should_stop = True  # Lightning validates (and checkpoints) at a requested stop
            if self.announce and trainer.is_global_zero:
                print(f"train.max_cpu_seconds: stopping at step {trainer.global_step} of {trainer.max_steps}, "
                      f"{now:.0f} of {self.budget:.0f} CPU s spent", flush=True)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._val_start = self.clock.cpu_seconds()

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self.val_cost = self.clock.cpu_seconds() - self._val_start

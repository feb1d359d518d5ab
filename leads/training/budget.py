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
would pass the budget. A step is costed as the most expensive of the last ``STEP_WINDOW``
steps and a validation as the most expensive of the last ``VAL_WINDOW``, each validation
measured up to the next training step so that the checkpoints it writes are counted too: where
costs stay within what was measured, the clock ends at or under the budget; where the final
validation costs more than any before it, the clock passes the budget by that difference,
which the run's summary states beside one step's cost.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from pytorch_lightning.callbacks import Callback

from leads.training.checkpoints import TrainClock

STEP_WINDOW = 20
VAL_WINDOW = 3


class CPUBudget(Callback):
    """Stop training before ``clock`` reaches ``max_cpu_seconds``.

    Args:
        max_cpu_seconds: the budget, in CPU seconds of the training process (every thread).
        clock: the run's training clock.
        announce: print one line when the budget stops a run.

    After training, ``stopped`` says whether the budget ended it and ``step_cost`` is the CPU
    cost of the last step.
    """

    def __init__(self, max_cpu_seconds: float, clock: TrainClock, announce: bool = True) -> None:
        self.budget = float(max_cpu_seconds)
        self.clock = clock
        self.announce = announce
        self.step_cost = 0.0
        self.stopped = False
        self._steps: deque[float] = deque(maxlen=STEP_WINDOW)
        self._vals: deque[float] = deque(maxlen=VAL_WINDOW)
        self._step_start = 0.0
        self._val_start: float | None = None

    @property
    def val_cost(self) -> float:
        return max(self._vals, default=0.0)

    def _end_validation(self) -> None:
        if self._val_start is not None:
            self._vals.append(self.clock.cpu_seconds() - self._val_start)
            self._val_start = None

    def on_train_batch_start(self, trainer: Any, *args: Any) -> None:
        self._end_validation()  # a validation lasts until training goes on: its checkpoints included
        self._step_start = self.clock.cpu_seconds()

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        now = self.clock.cpu_seconds()
        self.step_cost = now - self._step_start
        self._steps.append(self.step_cost)
        step = max(self._steps)
        every = getattr(trainer, "val_check_batch", None)
        due = isinstance(every, int) and every > 0 and trainer.global_step % every == 0  # validates after this step
        # Stopping here costs the validation it makes; going on costs the one due (if any), a
        # step, and the validation at the stop after it.
        over = now + self.val_cost * (1 + due) + step > self.budget
        # Every rank must stop at the same step (its clock is its own process's): any rank's
        # budget stops all of them, as early stopping does.
        if trainer.strategy.reduce_boolean_decision(over, all=False) and not trainer.should_stop:
            trainer.should_stop = True  # Lightning validates (and checkpoints) at a requested stop
            self.stopped = True
            if self.announce and trainer.is_global_zero:
                print(f"train.max_cpu_seconds={self.budget:g}: stopping at step {trainer.global_step} of "
                      f"{trainer.max_steps}, {now:.1f} CPU s spent (a step costs {step:.3g} s, a validation "
                      f"{self.val_cost:.3g} s: one more would pass the budget)", flush=True)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.sanity_checking:
            self._val_start = self.clock.cpu_seconds()

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._end_validation()

"""Training progress in optimizer steps, and quieting what other libraries print on every run.

Lightning's own bar counts batches per epoch, and our epochs are a few dozen balanced windows,
so it shows "Epoch 14" of a run that has no meaningful epochs; this callback counts steps out of
``max_steps`` with the training loss and the latest validation error, as a bar on a terminal and
as plain lines in a log (``leads.datasets.progress``).
"""

from __future__ import annotations

import logging
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback

from leads.datasets.progress import Progress

# Lightning's info lines on every run ("GPU available: False", "TPU available", an advert for
# another logger) come from these loggers; warnings and errors still get through.
CHATTY_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
                  "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


def quiet_third_party() -> None:
    """Silence informational lines other libraries print on every run (called when a run starts,
    never at import)."""
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


class TrainProgress(Callback):
    """Steps done out of ``max_steps``, the training loss and the last validation error.

    Args:
        label: what is trained, e.g. ``"gray_scott lowrank seed 0"``.
        enabled: False shows nothing (``LEADS_PROGRESS`` still wins).
    """

    LOSS_EVERY = 10  # steps between reads of the loss (each read synchronises a GPU)

    def __init__(self, label: str, enabled: bool | None = None) -> None:
        self.label, self.enabled = label, enabled
        self.bar: Progress | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        self.bar = Progress(f"training {self.label}", int(trainer.max_steps), "steps", enabled=self.enabled)
        self.bar.set(trainer.global_step)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.bar is None:
            return
        info = {}
        if trainer.global_step % self.LOSS_EVERY == 0 and "train/loss" in trainer.callback_metrics:
            info["loss"] = float(trainer.callback_metrics["train/loss"])
        self.bar.set(trainer.global_step, **info)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.bar is not None and "val/rel_l2" in trainer.callback_metrics:
            self.bar.set(trainer.global_step, val_rel_l2=float(trainer.callback_metrics["val/rel_l2"]))
            self.bar.line_now()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if self.bar is not None:
            self.bar.__exit__(type(exception), exception, None)
            self.bar = None

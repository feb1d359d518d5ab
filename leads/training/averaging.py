"""An exponential moving average of the weights, validated and checkpointed in their place.

``train.ema: d`` keeps ``w̄ ← d w̄ + (1 - d) w`` after every optimizer step (Lightning's
``WeightAveraging`` over ``torch.optim.swa_utils``). Validation, the learning-curve's test
scores and the checkpoint's ``state_dict`` hold the average, so the checkpoint chosen on
validation is an averaged model; the raw weights travel in the checkpoint for ``--resume``.
Averaging smooths the last steps of Adam's walk around a minimum, where a constant learning
rate (LEADS' recipe, ``scheduler: none``) never settles.
"""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.callbacks import WeightAveraging
from torch.optim.swa_utils import get_ema_multi_avg_fn


class EMAWeights(WeightAveraging):
    """``train.ema``'s average. The average stays in place until ``on_validation_end`` (Lightning
    swaps it back at the end of the validation epoch), so callbacks that score the model there,
    such as ``LearningCurve``, score the same weights as validation; place it after them."""

    def __init__(self, decay: float) -> None:
        super().__init__(multi_avg_fn=get_ema_multi_avg_fn(decay))
        self.decay = decay

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        pass  # swapped back in on_validation_end instead

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_epoch_end(trainer, pl_module)

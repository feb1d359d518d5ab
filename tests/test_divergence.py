"""A loss that turns NaN or explodes stops the run with a clear message and keeps the last
good checkpoint."""

from __future__ import annotations

import pytest
import torch
from tiny import tiny_config

from leads.models.forecaster import Forecaster, TrainingDiverged
from leads.training.train import train


def _poison_env_1_from_step(step: int, value: float, monkeypatch) -> None:
    original = Forecaster.vector_field

    def poisoned(self, u, env):
        out = original(self, u, env)
        if self.training and self.global_step >= step:
            out = torch.where((env == 1).view(-1, *[1] * (out.dim() - 1)), out * value, out)
        return out

    monkeypatch.setattr(Forecaster, "vector_field", poisoned)


@pytest.mark.parametrize("value, what", [(float("nan"), "non-finite"), (1e6, "exploded")])
def test_divergence_stops_with_step_and_environment(value, what, tmp_path, monkeypatch):
    cfg = tiny_config("lotka_volterra", tmp_path, "train.max_steps=20", "train.val_every=2",
                      "data.batch_size=18", "train.grad_clip=0")
    _poison_env_1_from_step(5, value, monkeypatch)
    with pytest.raises(TrainingDiverged) as e:
        train(cfg, progress=False)
    msg = str(e.value)
    assert what in msg and "at step 5" in msg and "beta=0.5,gamma=0.5,delta=0.75" in msg
    assert "\n" not in msg
    last = next((tmp_path / "runs").rglob("last.ckpt"))
    saved = torch.load(last, map_location="cpu", weights_only=False)
    assert saved["global_step"] == 4  # written at the last validation before the failure
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())

"""train.ema: the checkpoint chosen on validation holds the moving average that validation saw."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from tiny import tiny_config

from leads.config.loading import load_config
from leads.config.schema import RunConfig
from leads.envs.errors import UserError
from leads.models.forecaster import Forecaster
from leads.training.curves import read_curve
from leads.training.train import _test_split, train

DECAY = 0.5  # far from 1, so that the average and the raw weights differ visibly after a few steps


class RecordWeights(pl.Callback):
    """The raw weights after every optimizer step."""

    def __init__(self) -> None:
        self.after_step: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_batch_end(self, trainer, pl_module, *args) -> None:
        self.after_step[trainer.global_step] = {k: v.detach().clone() for k, v in pl_module.named_parameters()}


def _cfg(tmp_path, *extra: str) -> RunConfig:
    return tiny_config("lotka_volterra", tmp_path, "train.max_steps=6", "train.val_every=3",
                       f"train.ema={DECAY}", *extra)


def test_the_best_checkpoint_is_the_average_that_validation_and_the_curve_scored(tmp_path):
    from leads.evaluation.scoring import score

    recorder = RecordWeights()
    run = train(_cfg(tmp_path), progress=False, callbacks=[recorder], test_curve=True)
    ckpt = torch.load(run.best_ckpt, map_location="cpu", weights_only=False)
    step = ckpt["global_step"]
    # w̄_1 = w_1, then w̄_k = d w̄_(k-1) + (1 - d) w_k
    average = dict(recorder.after_step[1])
    for k in range(2, step + 1):
        average = {n: DECAY * average[n] + (1 - DECAY) * recorder.after_step[k][n] for n in average}
    for name, value in average.items():
        assert torch.allclose(ckpt["state_dict"][name], value, rtol=1e-5, atol=1e-7), name
        assert torch.equal(ckpt["current_model_state"][name], recorder.after_step[step][name]), name
    assert any(not torch.equal(average[n], recorder.after_step[step][n]) for n in average)
    # what validation scored and what the curve's test column scored are the checkpoint's weights
    module = Forecaster.load_from_checkpoint(str(run.best_ckpt), map_location="cpu")
    states, t, horizon = _test_split(run.module.cfg)
    (entry,) = [e for e in read_curve(run.run_dir) if e["step"] == step]
    assert entry["test"]["rel_l2"] == pytest.approx(score(module, states, t, horizon).summary("rel_l2")[0], rel=1e-5)
    assert entry["val_rel_l2"] == pytest.approx(run.best_val_rel_l2, rel=1e-6)


def test_a_resumed_run_keeps_its_average(tmp_path, monkeypatch):
    whole = train(_cfg(tmp_path / "a"), progress=False)
    original = Forecaster.training_step

    def crash_at_4(self, batch, idx):
        if self.global_step == 4:
            raise RuntimeError("simulated crash")
        return original(self, batch, idx)

    monkeypatch.setattr(Forecaster, "training_step", crash_at_4)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(_cfg(tmp_path / "b"), progress=False)
    monkeypatch.setattr(Forecaster, "training_step", original)
    resumed = train(_cfg(tmp_path / "b"), resume=True, progress=False)  # the same (shared) data as a
    a = torch.load(whole.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    b = torch.load(resumed.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert a["global_step"] == b["global_step"] == 6
    for key in ("state_dict", "current_model_state"):
        assert a[key].keys() == b[key].keys()
        assert all(torch.equal(a[key][n], b[key][n]) for n in a[key]), key


def test_a_decay_outside_zero_one_is_a_user_error():
    with pytest.raises(UserError, match=r"train.ema.*\(0, 1\)"):
        load_config("lotka_volterra", "quick", ["train.ema=1.5"])

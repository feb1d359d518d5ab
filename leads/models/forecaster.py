"""The LightningModule: a learned vector field, normalised, integrated by the forecaster.

The network sees states scaled per channel to unit spread and predicts time derivatives in
units of the data's typical rate of change; both scales are measured on the training split
once and stored as buffers, so a checkpoint alone rebuilds the model.
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch

from leads.config.schema import RunConfig
from leads.envs.errors import UserError
from leads.evaluation.metrics import relative_l2
from leads.models.methods import build_model
from leads.models.rollout import rollout, teacher_forcing_probability


class TrainingDiverged(UserError):
    """The loss became NaN or exploded; the last good checkpoint is kept."""


class Forecaster(pl.LightningModule):
    """A method's model as a vector field, integrated over observation times, trained by Lightning.

    Args:
        cfg: the run configuration (``RunConfig`` or its plain form); the forecaster uses its
            ``model``, ``methods``/``method``, ``forecaster``, ``train`` and ``seed`` parts and
            keeps the whole plain form in the checkpoint, so the run can be traced from it.
        state_shape: the shape of one state, e.g. ``(2, 32, 32)``.
        env_names: one label per training environment (``env_label`` of its parameters).
    """

    def __init__(self, cfg: RunConfig | dict[str, Any], state_shape: tuple[int, ...], env_names: list[str]) -> None:
        super().__init__()
        cfg = RunConfig.of(cfg)
        self.save_hyperparameters({"cfg": cfg.to_dict(), "state_shape": list(state_shape), "env_names": env_names})
        self.cfg = cfg
        self.env_names = list(env_names)
        self.model = build_model(cfg.model.to_dict(), cfg.method_settings, tuple(state_shape), len(env_names))
        stat_shape = (state_shape[0],) + (1,) * (len(state_shape) - 1)
        self.register_buffer("u_mean", torch.zeros(stat_shape))
        self.register_buffer("u_std", torch.ones(stat_shape))
        self.register_buffer("du_std", torch.ones(stat_shape))
        self._first_loss: float | None = None
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []

    # ------------------------------------------------------------------ model
    @torch.no_grad()
    def fit_normalization(self, states: torch.Tensor, t: torch.Tensor) -> None:
        """Per-channel scales from training trajectories ``(N, n_t, C, ...)``; none (physical
        units) with ``forecaster.normalize: false``."""
        if not self.cfg.forecaster.normalize:
            return
        c = states.shape[2]
        x = states.transpose(0, 2).reshape(c, -1).double()
        dx = (states[:, 1:] - states[:, :-1]) / (t[1:] - t[:-1]).view(1, -1, *[1] * (states.dim() - 2))
        dx = dx.transpose(0, 2).reshape(c, -1).double()
        tiny = torch.finfo(torch.float32).tiny ** 0.5
        self.u_mean.copy_(x.mean(1).view_as(self.u_mean))
        self.u_std.copy_(x.std(1).clamp_min(tiny).view_as(self.u_std))
        self.du_std.copy_(dx.std(1).clamp_min(tiny).view_as(self.du_std))

    def vector_field(self, u: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
        return self.du_std * self.model((u - self.u_mean) / self.u_std, env)

    def forward(self, u0: torch.Tensor, t: torch.Tensor, env: torch.Tensor, **kw: Any) -> torch.Tensor:
        fc = self.cfg.forecaster
        return rollout(self.vector_field, u0, t, env, method=fc.solver, substeps=fc.substeps, **kw)

    # ------------------------------------------------------------------ training
    def teacher_forcing(self) -> float:
        tf = self.cfg.forecaster.teacher_forcing
        return teacher_forcing_probability(self.global_step, tf.start, tf.decay, tf.every)

    def objective(self, pred: torch.Tensor, states: torch.Tensor,
                  env: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-trajectory MSE of ``pred`` against ``states`` (t > 0) in normalised units, so
        channels of different magnitude weigh alike, and the method's penalty on the observed
        states (e.g. LEADS' ||g_e(x)||). Training and adaptation minimise the same objective."""
        per_sample = (((pred[:, 1:] - states[:, 1:]) / self.u_std.unsqueeze(0)) ** 2).flatten(1).mean(1)
        raw = states.flatten(0, 1)
        return per_sample, self.model.penalty((raw - self.u_mean) / self.u_std, env.repeat_interleave(states.shape[1]),
                                              raw=raw, out_scale=self.du_std)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        states, t, env = batch["states"], batch["t"], batch["env"]
        t = t[0] if t.dim() > 1 else t
        eps = self.teacher_forcing()
        draws = self._teacher_forcing_draws(len(t), len(env), states.device)
        pred = self(states[:, 0], t, env, truth=states, teacher_forcing=eps, draws=draws)
        per_sample, penalty = self.objective(pred, states, env)
        data_loss = per_sample.mean()
        loss = data_loss + penalty
        self._check_loss(loss, per_sample, env)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(env))
        self.log("train/mse", data_loss, batch_size=len(env))
        self.log("train/penalty", penalty, batch_size=len(env))
        self.log("train/teacher_forcing", eps, batch_size=len(env))
        return loss

    def _teacher_forcing_draws(self, n_t: int, batch: int, device: torch.device) -> torch.Tensor:
        """Where teacher forcing restarts is a function of the seed, the step and the sample's
        position in the global batch only (not of a global RNG stream), so a run resumed from a
        checkpoint and a DDP rank (its share: positions rank, rank + world, ...) draw exactly what
        an uninterrupted single-process run draws."""
        trainer = self._trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + int(self.global_step))
        draws = torch.rand((max(n_t - 2, 0), batch * world), generator=g)
        return draws[:, rank::world].to(device)

    def _check_loss(self, loss: torch.Tensor, per_sample: torch.Tensor, env: torch.Tensor) -> None:
        value = float(loss.detach())
        if self._first_loss is None and math.isfinite(value):
            self._first_loss = max(value, 1e-12)
        factor = self.cfg.train.explode_factor
        exploded = self._first_loss is not None and value > factor * self._first_loss
        local = not math.isfinite(value) or exploded
        stop = local
        if self._trainer is not None and self._trainer.world_size > 1:
            # Under DDP all processes stop together: one stopping alone would leave the others in an all-reduce.
            stop = self._trainer.strategy.reduce_boolean_decision(local, all=False)
        if not stop:
            return
        bad = (~torch.isfinite(per_sample)) | (per_sample > factor * (self._first_loss or 1.0))
        envs = sorted({self.env_names[i] for i in env[bad].tolist()}) or [
            "(penalty term)" if local else "(in another DDP process's share of the batch)"]
        what = ("became non-finite" if not math.isfinite(value) else f"exploded to {value:.3g}") if local \
            else "diverged"
        raise TrainingDiverged(
            f"training loss {what} at step {self.global_step} (environments: {'; '.join(envs)}); "
            f"the last good checkpoint is kept — lower train.lr or raise forecaster.substeps"
        )

    def configure_optimizers(self) -> Any:
        tc = self.cfg.train  # scheduler is one of cosine | none (checked by the config)
        opt = torch.optim.Adam(self.model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        if tc.scheduler == "none":
            return opt
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=tc.max_steps, eta_min=tc.lr * 0.01)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ------------------------------------------------------------------ validation
    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        states, t, env = batch["states"], batch["t"], batch["env"]
        t = t[0] if t.dim() > 1 else t
        pred = self(states[:, 0], t, env)
        self._val.append((relative_l2(pred, states).float(), env))

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        err = torch.cat([e for e, _ in self._val])
        env = torch.cat([v for _, v in self._val])
        self._val.clear()
        err = torch.nan_to_num(err, nan=1e6, posinf=1e6)
        # Gathered over DDP ranks so every process selects the same checkpoint.
        err = self.all_gather(err).flatten() if self.trainer.world_size > 1 else err
        env = self.all_gather(env).flatten() if self.trainer.world_size > 1 else env
        self.log("val/rel_l2", err.mean(), prog_bar=True, sync_dist=False)
        for i, name in enumerate(self.env_names):
            sel = err[env == i]
            if len(sel):
                self.log(f"val_env/{name}", sel.mean(), sync_dist=False)

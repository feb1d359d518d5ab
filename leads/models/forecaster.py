"""The LightningModule: a learned vector field, normalised, integrated by the forecaster.

The network sees states scaled per channel to unit spread and predicts time derivatives in
units of the data's typical rate of change; both scales are measured on the training split
once and stored as buffers, so a checkpoint alone rebuilds the model.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pytorch_lightning as pl
import torch

from leads.config.loading import system_of
from leads.config.schema import RunConfig
from leads.envs.errors import UserError
from leads.envs.solvers import rk4_step
from leads.envs.spectral import ETDRK4
from leads.evaluation.metrics import relative_l2
from leads.models.latent import LatentEncoder, augmented_shape
from leads.models.methods import build_model
from leads.models.physics import PhysicsPart, residual_fields
from leads.models.rollout import STEPPERS, rollout, teacher_forcing_probability

# Trajectories per environment that the multi-start fit of the known terms' parameters uses.
SEARCH_TRAJECTORIES = 8


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
        # Partially observed data (data.observe): hidden channels inferred from the observed state.
        latent = cfg.forecaster.latent_channels
        self.encoder = LatentEncoder(cfg.model.to_dict(), tuple(state_shape), latent) if latent else None
        model_shape = augmented_shape(tuple(state_shape), latent)
        self.model = build_model(cfg.model.to_dict(), cfg.method_settings, model_shape, len(env_names))
        self.physics: PhysicsPart | None = None
        if cfg.physics.terms and (cfg.data.observe or latent):
            raise UserError("physics.terms act on the whole state, but data.observe / forecaster.latent_channels "
                            "make the model's state partly hidden; drop physics.terms (null) for these runs")
        if cfg.physics.terms:
            system = system_of(cfg)
            self.physics = PhysicsPart(system, cfg.physics.terms, system.train_envs, cfg.physics.params)
            if cfg.physics.integrator == "etdrk4" and not system.spectral_terms:
                raise UserError(f"physics.integrator=etdrk4 needs a known term that is linear and diagonal in "
                                f"Fourier space, which {system.name} does not have; use physics.integrator=joint")
            if not cfg.physics.residual and not self.physics.learned_names:
                raise UserError(f"physics.residual=false with physics.params={cfg.physics.params} leaves nothing "
                                "to learn in these terms; use physics.params=learned or keep the residual")
        self.residual = cfg.physics.residual
        # A system's declared learned terms put the residual in their fields' equations only.
        fields = residual_fields(self.physics.system, self.physics.terms) if self.physics is not None else None
        if fields is None:
            self.residual_mask: torch.Tensor | None = None
        else:
            shape = (len(fields),) + (1,) * (len(state_shape) - 1)
            self.register_buffer("residual_mask", fields.float().view(shape), persistent=False)
        # APHYNITY's lambda: the weight of the trajectory loss against ||residual||^2 (see objective).
        self.register_buffer("aphynity_lambda", torch.tensor(float(cfg.physics.lambda_0)))
        stat_shape = (state_shape[0],) + (1,) * (len(state_shape) - 1)
        self.register_buffer("u_mean", torch.zeros(stat_shape))
        self.register_buffer("u_std", torch.ones(stat_shape))
        self.register_buffer("du_std", torch.ones(stat_shape))
        # The network as a fit calls it (training steps, validation, the learning curve's test
        # scores): torch.compile'd from fit start to teardown with train.compile (a function, so
        # neither a submodule nor in the state dict); None: eager. Adaptation (torch.func
        # transforms), evaluation after training and checkpoints always see the eager model.
        self._compiled_network: Any = None
        self._first_loss: float | None = None
        self._data_loss: torch.Tensor | None = None
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
        if self.encoder is not None:  # hidden channels change at the observed ones' rate per spread
            self.encoder.rate_scale.copy_((self.du_std / self.u_std).mean())

    def vector_field(self, u: torch.Tensor, env: torch.Tensor, t: float | torch.Tensor = 0.0) -> torch.Tensor:
        """``du/dt`` in physical units: the known terms (if any) plus the learned residual."""
        du = self.residual_field(u, env)
        return du + self.physics(t, u, env) if self.physics is not None else du

    def residual_field(self, u: torch.Tensor, env: torch.Tensor, t: float | torch.Tensor = 0.0) -> torch.Tensor | float:
        """The learned part of ``du/dt`` in physical units (0 without a residual)."""
        if not self.residual:
            return 0.0
        network = self._compiled_network or self.model
        if self.encoder is None:
            out = self.du_std * network((u - self.u_mean) / self.u_std, env)
            return out if self.residual_mask is None else out * self.residual_mask
        c = self.u_mean.shape[0]  # observed channels first, then the hidden ones (normalised units)
        out = network(torch.cat(((u[:, :c] - self.u_mean) / self.u_std, u[:, c:]), dim=1), env)
        return torch.cat((self.du_std * out[:, :c], self.encoder.rate_scale * out[:, c:]), dim=1)

    def with_latent(self, states: torch.Tensor) -> torch.Tensor:
        """Observed states ``(B, [T,] C, ...)`` with their hidden channels (inferred) appended."""
        assert self.encoder is not None
        series = states if states.dim() == self.u_mean.dim() + 2 else states.unsqueeze(1)
        z = self.encoder.encode_series((series - self.u_mean) / self.u_std)
        out = torch.cat((series, z), dim=2)
        return out if series is states else out[:, 0]

    def forward(self, u0: torch.Tensor, t: torch.Tensor, env: torch.Tensor, t0: torch.Tensor | None = None,
                physics_env: torch.Tensor | None = None, **kw: Any) -> torch.Tensor:
        """Rollouts from ``u0`` over the times ``t`` (``t0``: each sample's start time, for
        non-autonomous known terms when samples start at different times; ``physics_env``: the
        row of the known terms' parameters of each sample, when not ``env``)."""
        fc = self.cfg.forecaster
        if self.encoder is not None:  # integrate the hidden channels too; return the observed ones
            if kw.get("truth") is not None:  # a teacher-forced restart infers them, as a forecast's start
                kw["truth"] = self.with_latent(kw["truth"])
            pred = rollout(self.vector_field, self.with_latent(u0), t, env, method=fc.solver, substeps=fc.substeps,
                           **kw)
            return pred[:, :, : u0.shape[1]]
        if self.physics is None:
            return rollout(self.vector_field, u0, t, env, method=fc.solver, substeps=fc.substeps, **kw)
        pc = self.cfg.physics
        dt = float((t[1:] - t[:-1]).max()) if len(t) > 1 else 0.0
        # Known terms can be stiff on the observation step (Gray-Scott at dt=10): RK4 substeps as
        # many as physics.substeps asks for, and at least what their current parameters need.
        n_phys = max(pc.substeps, self.physics.stable_substeps(dt))
        penv = env if physics_env is None else physics_env
        if pc.integrator == "etdrk4":
            return self._etdrk4_rollout(u0, t, env, penv, max(fc.substeps, pc.substeps), t0=t0, **kw)
        known = self.physics.field(penv, u0.dtype)  # parameters looked up once per rollout
        if pc.integrator == "joint" or not self.residual:

            def joint(u: torch.Tensor, env: torch.Tensor, s: float | torch.Tensor) -> torch.Tensor:
                return self.residual_field(u, env) + known(s, u)

            # The known terms alone take RK4 (their accuracy is measured for it) whatever steps the network.
            return rollout(joint, u0, t, env, method=fc.solver if self.residual else "rk4",
                           substeps=max(fc.substeps, n_phys), time_dependent=True, t0=t0, **kw)
        # Strang splitting: half a step of the known terms (n_phys/2 RK4 substeps per interval),
        # one step of the residual, half a step of the known terms. The network is evaluated as
        # often as without physics; with a zero residual this is the known terms' own RK4 flow.
        inner = max(1, math.ceil(n_phys / (2 * fc.substeps)))

        def physics_flow(s: float | torch.Tensor, u: torch.Tensor, h: float | torch.Tensor) -> torch.Tensor:
            for j in range(inner):
                u = rk4_step(known, s + j * h / inner, u, h / inner)
            return u

        def strang_step(field: Any, s: float | torch.Tensor, u: torch.Tensor, h: float | torch.Tensor) -> torch.Tensor:
            u = physics_flow(s, u, h / 2)
            u = STEPPERS[fc.solver](field, s, u, h)
            return physics_flow(s + h / 2, u, h / 2)

        return rollout(self.residual_field, u0, t, env, method=strang_step, substeps=fc.substeps,
                       time_dependent=True, t0=t0, **kw)

    def search_physics(self, states: torch.Tensor, t: torch.Tensor, starts: int, steps: int = 100,
                       seed: int = 0, lr: float = 0.05, max_trajectories: int = SEARCH_TRAJECTORIES) -> None:
        """Multi-start fit of the known terms' learned parameters, before gradient descent on the
        whole model: ``starts`` starting values per environment (the current one, and the others
        log-uniform in [1/4, 4] times it, parameter by parameter), each fitted by ``steps`` Adam
        steps on the environment's own trajectories with the rest of the model held, all starts
        in one batch; the best fit of each environment is kept. Fitting a frequency (the
        pendulum's forcing) from one start is non-convex once the phase error over the horizon
        passes pi; one of several starts lands in the right basin.

        Args:
            states: ``(n_env, n_traj, n_t, *state)`` trajectories of the environments (the first
                ``max_trajectories`` of each are used).
            t: ``(n_t,)`` their observation times.
            starts: starting values per environment (1: nothing done).
            steps: Adam steps from each start, at learning rate ``lr`` (parameters are scaled to ~1).
            seed: seeds the starting values.
        """
        if self.physics is None or starts <= 1 or not self.physics.learned_names:
            return
        part = self.physics
        device = part.theta.device
        states = states[:, :max_trajectories].to(device, self.u_mean.dtype)
        n_env, n_traj = states.shape[:2]
        start = part.theta.detach().clone()
        generator = torch.Generator().manual_seed(seed)
        factor = torch.exp((2 * torch.rand(starts, *start.shape, generator=generator, dtype=torch.float64) - 1)
                           * math.log(4)).to(start)
        factor[0] = 1.0
        # One row of parameters per (start, environment); the model's own environment rows are shared.
        many = copy.deepcopy(part)
        many.theta = torch.nn.Parameter((start * factor).flatten(0, 1))
        many.fixed = part.fixed.repeat(starts, 1)
        x = states.flatten(0, 1).repeat(starts, 1, *[1] * (states.dim() - 3))
        env = torch.arange(n_env, device=device).repeat_interleave(n_traj).repeat(starts)
        row = env + n_env * torch.arange(starts, device=device).repeat_interleave(n_env * n_traj)
        t = t.to(device, x.dtype)
        opt = torch.optim.Adam([many.theta], lr=lr)
        self.physics = many
        try:
            with torch.enable_grad():
                for i in range(steps + 1):
                    per_sample, _ = self.objective(self(x[:, 0], t, env, physics_env=row), x, env)
                    per_sample = torch.where(torch.isfinite(per_sample), per_sample, torch.inf)
                    if i == steps:  # the last rollout scores the fits
                        break
                    finite = per_sample.isfinite()
                    if not finite.any():
                        break
                    (grad,) = torch.autograd.grad(per_sample[finite].sum(), [many.theta], allow_unused=True)
                    many.theta.grad = torch.zeros_like(many.theta) if grad is None else grad.nan_to_num(0.0)
                    opt.step()
        finally:
            self.physics = part
        loss = per_sample.detach().new_zeros(starts * n_env).index_add(0, row, per_sample.detach()).view(starts, n_env)
        best = loss.argmin(0)
        fitted = many.theta.detach().view(starts, n_env, -1)[best, torch.arange(n_env, device=device)]
        # An environment none of whose fits stayed finite keeps its start.
        ok = loss.min(0).values.isfinite().unsqueeze(1)
        with torch.no_grad():
            part.theta.copy_(torch.where(ok, fitted, start))

    def _etdrk4_rollout(self, u0: torch.Tensor, t: torch.Tensor, env: torch.Tensor, physics_env: torch.Tensor,
                        substeps: int, **kw: Any) -> torch.Tensor:
        """ETDRK4 (Cox & Matthews) on ``du/dt = L u + N(u)``: ``L`` the known terms that are
        linear and diagonal in Fourier space (diffusion), taken exactly; ``N`` the other known
        terms plus the residual. Gray-Scott's diffusion makes RK4 unstable at dt = 10, and what
        limits the step is then the reaction: at 4 steps per dt this is ~10x more accurate than
        RK4 at the same number of network evaluations (docs/physics.md)."""
        assert self.physics is not None
        known = self.physics.field(physics_env, u0.dtype, skip=self.physics.spectral_terms)
        L = self.physics.symbol(physics_env)
        size = u0.shape[-2:]
        schemes: dict[float, ETDRK4] = {}

        def nonlinear(vh: torch.Tensor, s: float | torch.Tensor) -> torch.Tensor:
            u = torch.fft.irfft2(vh, s=size)
            return torch.fft.rfft2(self.residual_field(u, env) + known(s, u))

        def etd_step(field: Any, s: float | torch.Tensor, u: torch.Tensor, h: float) -> torch.Tensor:
            key = round(h, 12)
            if key not in schemes:  # one set of coefficients per step size and rollout
                schemes[key] = ETDRK4(L, h).to(u.dtype, u.device)
            return torch.fft.irfft2(schemes[key].step(torch.fft.rfft2(u), nonlinear, s), s=size)

        return rollout(self.residual_field, u0, t, env, method=etd_step, substeps=substeps,
                       time_dependent=True, **kw)

    # ------------------------------------------------------------------ environments
    @property
    def adapts_weights(self) -> bool:
        """Whether adaptation fits weight tensors (Adam at ``adapt.weights_lr``)."""
        return self.residual and self.model.adapts_weights

    def env_parameters(self) -> list[torch.nn.Parameter]:
        """What adaptation to new environments fits: the method's environment parameters (with
        a residual) and the known terms' physical parameters (learned ones)."""
        own = list(self.model.env_parameters()) if self.residual else []
        return own + (self.physics.env_parameters() if self.physics is not None else [])

    def trained_parameters(self) -> list[torch.nn.Parameter]:
        """Everything training fits: the method's network (with a residual) and learned physics."""
        return (list(self.model.parameters()) if self.residual else []) + self.encoder_parameters() + \
            self.physics_parameters()

    def encoder_parameters(self) -> list[torch.nn.Parameter]:
        return list(self.encoder.parameters()) if self.encoder is not None else []

    def physics_parameters(self) -> list[torch.nn.Parameter]:
        return self.physics.env_parameters() if self.physics is not None else []

    def reset_environments(self, envs: list[Any] | int, init: str = "default") -> None:
        """Fresh environment parameters for new environments (their parameter mappings, or
        their number when no part needs them), shared ones kept."""
        n = envs if isinstance(envs, int) else len(envs)
        self.model.reset_environments(n, init=init)
        if self.physics is not None:
            self.physics.reset_environments(envs)

    # ------------------------------------------------------------------ training
    def on_fit_start(self) -> None:
        """With ``train.compile``, the network through ``torch.compile`` for this fit: a step
        1.3-1.5x cheaper on CPU with the same values to ~1e-7 (``benchmarks/step_variants.py``).
        Set here, after callbacks' setup (``train.ema`` copies the module there), so no copy
        holds a function that calls this module's network."""
        if self.cfg.train.compile:
            self._compiled_network = torch.compile(self.model.forward)

    def teardown(self, stage: str) -> None:
        self._compiled_network = None  # also after a failed fit: what follows uses the eager model

    def teacher_forcing(self) -> float:
        tf = self.cfg.forecaster.teacher_forcing
        return teacher_forcing_probability(self.global_step, tf.start, tf.decay, tf.every)

    def residuals(self, pred: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        """``(n, m)``: each trajectory's errors at t > 0 in normalised units, flattened; the
        objective's trajectory term is the mean of their squares (Gauss-Newton fits them)."""
        return ((pred[:, 1:] - states[:, 1:]) / self.u_std.unsqueeze(0)).flatten(1)

    def objective(self, pred: torch.Tensor, states: torch.Tensor,
                  env: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-trajectory MSE of ``pred`` against ``states`` (t > 0) in normalised units, so
        channels of different magnitude weigh alike, and the penalty on the observed states:
        the method's own (e.g. LEADS' ||g_e(x)||) and, for a hybrid model, APHYNITY's
        ``||residual(x)||^2 / lambda`` (the residual's rate per state scale), which keeps the
        residual the smallest correction the data need. Training and adaptation minimise the same objective."""
        per_sample = self.residuals(pred, states).square().mean(1)
        if not self.residual:
            return per_sample, per_sample.new_zeros(())
        raw = states.flatten(0, 1)
        x, env_x = (raw - self.u_mean) / self.u_std, env.repeat_interleave(states.shape[1])
        out_scale = self.du_std
        if self.encoder is not None:  # the method's penalty sees the model's whole (augmented) state
            z = self.encoder(x)
            x, raw = torch.cat((x, z), dim=1), torch.cat((raw, z), dim=1)
            out_scale = torch.cat((self.du_std, self.encoder.rate_scale.expand(z.shape[1], *self.du_std.shape[1:])))
        penalty = self.model.penalty(x, env_x, raw=raw, out_scale=out_scale)
        if self.physics is not None:
            # The residual as a rate of the normalised state (physical rate / state scale): in the
            # units the trajectory loss measures states in, as APHYNITY's raw-unit objective. In the
            # model's output units (rate / rate scale) it weighs (u_std / du_std)^2 more (~1e4 on
            # Gray-Scott, whose known terms nearly balance, so the total rate is small).
            residual = self.model(x, env_x) * (self.du_std / self.u_std)
            if self.residual_mask is not None:  # only the fields it acts on
                residual = residual * self.residual_mask
            penalty = penalty + residual.square().mean() / self.aphynity_lambda
        return per_sample, penalty

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        states, t, env = batch["states"], batch["t"], batch["env"]
        t0 = t[:, 0] if t.dim() > 1 else None  # windows start at different times
        t = t[0] - t[0, 0] if t.dim() > 1 else t
        eps = self.teacher_forcing()
        draws = self._teacher_forcing_draws(len(t), len(env), states.device)
        pred = self(states[:, 0], t, env, t0=t0, truth=states, teacher_forcing=eps, draws=draws)
        per_sample, penalty = self.objective(pred, states, env)
        data_loss = per_sample.mean()
        self._data_loss = data_loss.detach()
        loss = data_loss + penalty
        self._check_loss(loss, per_sample, env)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(env))
        self.log("train/mse", data_loss, batch_size=len(env))
        self.log("train/penalty", penalty, batch_size=len(env))
        self.log("train/teacher_forcing", eps, batch_size=len(env))
        if self.physics is not None:
            self.log("train/aphynity_lambda", self.aphynity_lambda, batch_size=len(env))
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """APHYNITY's update ``lambda += tau_2 * trajectory loss`` (all-reduced under DDP, so
        every process keeps the same lambda)."""
        if self.physics is None or not self.residual or self._data_loss is None:
            return
        loss = self._data_loss
        if self._trainer is not None and self._trainer.world_size > 1:
            loss = self._trainer.strategy.reduce(loss, reduce_op="mean")
        self.aphynity_lambda += self.cfg.physics.tau_2 * loss.to(self.aphynity_lambda)

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
        # The known terms' parameters are physical constants: no weight decay pulls them to 0.
        network = (list(self.model.parameters()) if self.residual else []) + self.encoder_parameters()
        groups = [{"params": network, "weight_decay": tc.weight_decay},
                  {"params": self.physics_parameters(), "weight_decay": 0.0}]
        opt = torch.optim.Adam([g for g in groups if g["params"]], lr=tc.lr)
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

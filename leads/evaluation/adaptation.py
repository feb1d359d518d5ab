"""Adaptation to environments never seen in training.

Only environment-specific parameters are fitted (contexts for ``lowrank``/``coda``, factors
for ``lora``, ``g_e`` for ``leads``, a whole network for ``per_env``); ``erm`` has none and is
scored zero-shot. Fitting uses ``k`` trajectories per new environment and keeps the parameters
that did best on separate validation trajectories, never on test data.

The optimizer (``adapt.optimizer``, default ``auto``): full-batch L-BFGS with a strong-Wolfe line
search, one iteration per step, for the few numbers of a context (it reaches in a handful of
iterations what Adam needs tens of steps for); Adam, as in training, for weight tensors.

A step that makes the rollout loss non-finite (a whole network moved too far for a long
rollout) is undone: the last finite parameters are restored and the learning rate is divided by
``BACKTRACK_FACTOR``, at most ``MAX_BACKTRACKS`` times, rather than ending adaptation at the
initial weights.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from leads.config.schema import AdaptConfig
from leads.envs.errors import UserError
from leads.evaluation.metrics import relative_l2
from leads.evaluation.scoring import flatten_trajectories
from leads.models.forecaster import Forecaster

LINE_SEARCH_EVALS = 20
BACKTRACK_FACTOR = 10.0
MAX_BACKTRACKS = 6


@dataclass
class Adapted:
    module: Forecaster     # a copy: shared parameters as trained, fresh environments adapted
    steps: int             # optimisation steps taken
    best_step: int         # the step whose parameters were kept (0: the initialisation)
    seconds: float
    best_val_rel_l2: float
    n_adapted_params: int  # per environment
    shots: int
    lr: float = math.nan   # the learning rate in use at the end (lower than at the start after backtracking)
    optimizer: str = ""


def adapt_to_new_environments(
    module: Forecaster,
    adapt_states: torch.Tensor,
    val_states: torch.Tensor,
    t: torch.Tensor,
    env_names: list[str],
    cfg: AdaptConfig | Mapping[str, Any] | None = None,
    shots: int | None = None,
    on_check: Callable[[int, Forecaster], None] | None = None,
    envs: list[dict[str, float]] | None = None,
) -> Adapted:
    """Fit fresh environment-specific parameters for ``len(env_names)`` new environments.

    Args:
        module: a trained forecaster; left untouched (the result holds an adapted copy).
        adapt_states: ``(n_env, n_traj, n_t, *state)`` trajectories to fit; the first ``shots``
            of each environment are used.
        val_states: ``(n_env, n_val, n_t, *state)`` trajectories that choose the step to keep
            (checked every ``cfg.val_every`` steps, stopping after ``cfg.patience`` checks
            without improvement). Never pass test trajectories here.
        t: ``(n_t,)`` observation times.
        env_names: one label per new environment.
        cfg: the ``adapt`` settings (default: the module's own run config).
        shots: trajectories per environment to fit (default ``cfg.shots``).
        on_check: called as ``on_check(step, current)`` at step 0 and at every validation
            check (benchmarks trace the error with it); its time is not counted.
        envs: the new environments' parameters, needed only by known terms fixed to their true
            values (``physics.params: true_values``); learned ones are identified by adaptation.

    Returns:
        ``Adapted``: the adapted copy, the steps taken and kept, seconds, the best validation
        error and the number of parameters adapted per environment.
    """
    start = time.perf_counter()
    cfg = AdaptConfig.of(module.cfg.adapt if cfg is None else cfg)
    shots = cfg.shots if shots is None else shots
    _check(adapt_states, val_states, env_names, shots)
    device = module.u_mean.device
    new = copy.deepcopy(module)
    new.env_names = list(env_names)
    new.reset_environments(list(envs) if envs is not None else len(env_names), init=cfg.init)
    new.to(device)
    for p in new.parameters():
        p.requires_grad_(False)
    params = new.env_parameters()
    n_per_env = sum(p.numel() for p in params) // len(env_names)
    if not params:  # zero-shot method
        return Adapted(new.eval(), 0, 0, time.perf_counter() - start, math.nan, 0, shots)
    for p in params:
        p.requires_grad_(True)

    x, env = (a.to(device) for a in flatten_trajectories(adapt_states, shots))
    xv, envv = (a.to(device) for a in flatten_trajectories(val_states))
    t = t.to(device, x.dtype)
    optimizer = _optimizer_name(cfg, new.adapts_weights)
    # L-BFGS finds its step by line search: its lr is the first trial step, 1 unless backtracked.
    lr = 1.0 if optimizer == "lbfgs" else float(cfg.weights_lr if new.adapts_weights else cfg.lr)
    # Physical parameters (scaled to ~1) take the step of a context even when weights are adapted.
    physical = {id(p) for p in new.physics_parameters()}
    ratio = 1.0 if optimizer == "lbfgs" else float(cfg.lr) / lr

    def make(lr: float) -> torch.optim.Optimizer:
        return _make_optimizer(optimizer, params, lr, physical, ratio)

    opt = make(lr)

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = _loss(new, x, t, env)
        if torch.isfinite(loss):
            loss.backward()
        return loss

    excluded = 0.0

    def val_error(step: int) -> float:
        nonlocal excluded
        new.eval()
        with torch.no_grad():
            err = float(relative_l2(new(xv[:, 0], t, envv), xv).mean())
        if on_check is not None:
            paused = time.perf_counter()
            on_check(step, new)
            excluded += time.perf_counter() - paused
        return err if math.isfinite(err) else math.inf

    best, best_step, best_state, since, step = val_error(0), 0, _snapshot(params), 0, 0
    last_finite, backtracks = best_state, 0
    for step in range(1, cfg.steps + 1):
        new.train()
        before = _snapshot(params)
        if optimizer == "adam":
            loss = closure()
            if torch.isfinite(loss):
                opt.step()
        else:
            loss = opt.step(closure)  # the loss before the step; the line search may leave a bad point
        if torch.isfinite(loss):
            last_finite = before
        if not torch.isfinite(loss) or not all(bool(torch.isfinite(p).all()) for p in params):
            if backtracks == MAX_BACKTRACKS:
                break
            backtracks += 1
            _restore(params, last_finite)
            lr /= BACKTRACK_FACTOR
            opt = make(lr)  # fresh state: the old one led here
            continue
        if step % cfg.val_every == 0:
            err = val_error(step)
            if err < best:
                best, best_step, best_state, since = err, step, _snapshot(params), 0
            else:
                since += 1
                if since >= cfg.patience:
                    break
    _restore(params, best_state)
    for p in params:
        p.requires_grad_(False)
    seconds = time.perf_counter() - start - excluded
    return Adapted(new.eval(), step, best_step, seconds, best, n_per_env, shots, lr, optimizer)


def _loss(module: Forecaster, x: torch.Tensor, t: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
    # The training objective, without teacher forcing.
    per_sample, penalty = module.objective(module(x[:, 0], t, env), x, env)
    return per_sample.mean() + penalty


def _check(adapt_states: torch.Tensor, val_states: torch.Tensor, env_names: list[str], shots: int) -> None:
    n_env, n_adapt = adapt_states.shape[:2]
    if isinstance(shots, bool) or not isinstance(shots, int) or not 1 <= shots <= n_adapt:
        raise UserError(f"adaptation shots={shots!r} must be an integer in [1, {n_adapt}] "
                        f"(data.n_adapt={n_adapt} trajectories per environment); raise data.n_adapt for more")
    if val_states.shape[1] < 1:
        raise UserError("adaptation needs validation trajectories to choose when to stop; set data.n_adapt_val >= 1")
    if not n_env == val_states.shape[0] == len(env_names):
        raise UserError(f"adaptation got {n_env} environments of adaptation data, {val_states.shape[0]} of "
                        f"validation data and {len(env_names)} names; they must agree")


def _optimizer_name(cfg: AdaptConfig, adapts_weights: bool) -> str:
    name = cfg.optimizer  # auto | adam | lbfgs, checked by AdaptConfig
    if name == "auto":
        # A handful of context numbers: full-batch quasi-Newton converges in a few iterations;
        # whole networks: Adam, as in training.
        return "adam" if adapts_weights else "lbfgs"
    return name


def _make_optimizer(name: str, params: list[torch.nn.Parameter], lr: float, physical: Collection[int] = (),
                    physical_ratio: float = 1.0) -> torch.optim.Optimizer:
    if name == "adam":
        groups = [{"params": [p for p in params if id(p) not in physical], "lr": lr},
                  {"params": [p for p in params if id(p) in physical], "lr": lr * physical_ratio}]
        return torch.optim.Adam([g for g in groups if g["params"]], lr=lr)
    # One iteration per step, but room for the line search: max_eval defaults to 1.25 * max_iter,
    # which at max_iter=1 leaves the line search no evaluation and the step at zero.
    return torch.optim.LBFGS(params, lr=lr, max_iter=1, max_eval=LINE_SEARCH_EVALS + 1, history_size=10,
                             line_search_fn="strong_wolfe")


def _snapshot(params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def _restore(params: list[torch.nn.Parameter], values: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for p, v in zip(params, values, strict=True):
            p.copy_(v)


adapt = adapt_to_new_environments  # the public name (``leads.adapt``)

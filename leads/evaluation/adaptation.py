"""Adaptation to environments never seen in training.

Only environment-specific parameters are fitted (contexts for ``lowrank``/``coda``, factors
for ``lora``, ``g_e`` for ``leads``, a whole network for ``per_env``); ``erm`` has none and is
scored zero-shot. Fitting uses ``k`` trajectories per new environment and keeps the parameters
that did best on separate validation trajectories, never on test data.

Environments are independent problems (each has its own parameters and its own trajectories),
so when every environment parameter is stacked with one row per environment, which is the case
for every built-in method, each environment keeps its own best row: the one of the validation
check where *its* validation error was lowest. Adaptation stops once the mean of those kept
errors has not fallen by ``adapt.min_rel_improvement`` (relative) for ``adapt.patience`` checks.
The same independence lets several held-out sets be adapted in one optimisation
(:func:`split_environments` then gives each set its own module; ``leads.evaluation.heldout``).

The optimizer (``adapt.optimizer``, default ``auto``: Adam for weight tensors, L-BFGS for
contexts, Levenberg-Marquardt for physical parameters alone) is one of
``leads.evaluation.optimizers.OPTIMIZERS``; this module drives it: validation checks, the rows
kept, patience and backtracking.

Adaptation says why it stopped (``Adapted.stop``, one of ``STOPS``): ``converged`` (the optimizer
found no step that lowers the objective), ``plateau`` (validation stopped improving: the
patience rule above), ``capped`` (the step budget ran out first: the parameters may still be
far from the optimum, and are never reported as converged) or ``non_finite`` (every backtrack
below left the finite region). Where the model has learned physical parameters, their standard
errors from the fit say how well the fitted trajectories determine each one
(``leads.evaluation.identifiability``).

A step that makes the rollout loss non-finite (a whole network moved too far for a long
rollout) is undone: the last finite parameters are restored and the learning rate is divided by
``BACKTRACK_FACTOR``, at most ``MAX_BACKTRACKS`` times, rather than ending adaptation at the
initial weights.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from leads.config.schema import AdaptConfig
from leads.datasets.progress import Progress
from leads.envs.errors import UserError
from leads.evaluation.identifiability import relative_standard_errors
from leads.evaluation.metrics import relative_l2
from leads.evaluation.optimizers import AdaptOptimizer, Problem, optimizer_for
from leads.evaluation.optimizers import torch_optimizer as _make_optimizer  # noqa: F401 (tests build one)
from leads.evaluation.scoring import flatten_trajectories
from leads.models.forecaster import Forecaster

BACKTRACK_FACTOR = 10.0
MAX_BACKTRACKS = 6
STOPS = ("converged", "plateau", "capped", "non_finite", "nothing_to_fit")
CONVERGED = ("converged", "plateau")  # the stops that are not cut short


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
    val_rel_l2_per_env: list[float] | None = None  # each environment's kept validation error
    stop: str = "nothing_to_fit"  # why adaptation stopped: one of STOPS
    # per environment, each learned physical parameter's standard error from the fit relative to
    # its value (inf: the fitted trajectories do not determine it); None without learned physics
    physics_rel_std_errors: list[list[float]] | None = None

    @property
    def converged(self) -> bool:
        """Whether adaptation stopped at a minimum or a validation plateau, not at its step cap."""
        return self.stop in CONVERGED


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
    progress: bool | None = None,
    label: str = "new environments",
    reset: bool = True,
) -> Adapted:
    """Fit fresh environment-specific parameters for ``len(env_names)`` new environments.

    Args:
        module: a trained forecaster; left untouched (the result holds an adapted copy).
        adapt_states: ``(n_env, n_traj, n_t, *state)`` trajectories to fit; the first ``shots``
            of each environment are used.
        val_states: ``(n_env, n_val, n_t, *state)`` trajectories that choose the step to keep
            (checked every ``cfg.val_every`` steps, stopping after ``cfg.patience`` checks
            without improvement; ``weights_steps`` and ``weights_patience`` instead of ``steps``
            and ``patience`` where weight tensors are adapted, when set). Never pass test
            trajectories here.
        t: ``(n_t,)`` observation times.
        env_names: one label per new environment.
        cfg: the ``adapt`` settings (default: the module's own run config).
        shots: trajectories per environment to fit (default ``cfg.shots``).
        on_check: called as ``on_check(step, current)`` at step 0 and at every validation
            check (benchmarks trace the error with it); its time is not counted.
        envs: the new environments' parameters, needed only by known terms fixed to their true
            values (``physics.params: true_values``); learned ones are identified by adaptation.
        progress: show progress (``leads.datasets.progress``; False: nothing).
        label: what is adapted, for the progress lines.
        reset: start from fresh environment parameters (``cfg.init``) after a search of the known
            terms' parameters; False: from ``module``'s own, which must be for ``env_names``
            (refitting the training environments, ``leads.evaluation.refit``).

    Returns:
        ``Adapted``: the adapted copy, the steps taken and kept, seconds, the best validation
        error and the number of parameters adapted per environment.
    """
    start = time.perf_counter()
    cfg = AdaptConfig.of(module.cfg.adapt if cfg is None else cfg)
    shots = cfg.shots if shots is None else shots
    _check(adapt_states, val_states, env_names, shots)
    new = _copy_for(module, env_names, envs, cfg.init, reset)
    params = new.env_parameters()
    n_env = len(env_names)
    n_per_env = sum(p.numel() for p in params) // n_env
    device = new.u_mean.device
    xv, envv = (a.to(device) for a in flatten_trajectories(val_states))
    if not params:  # zero-shot method: nothing to fit, its validation error is still reported
        by_env = validation_errors_by_env(new, xv, t.to(device, xv.dtype), envv, n_env)
        return Adapted(new.eval(), 0, 0, time.perf_counter() - start, float(by_env.mean()), 0, shots,
                       val_rel_l2_per_env=by_env.tolist())
    for p in params:
        p.requires_grad_(True)

    x, env = (a.to(device) for a in flatten_trajectories(adapt_states, shots))
    t = t.to(device, x.dtype)
    # Several starting values of the known terms' parameters (physics.starts), fitted on the
    # fitting trajectories with the method's own starting environment parameters held.
    pc = new.cfg.physics
    if reset:  # a refit starts from trained values: nothing to search
        new.search_physics(adapt_states[:, :shots], t, int(pc.starts), int(pc.start_steps), int(new.cfg.seed))
    problem = Problem(new, params, x, t, env, n_env, lambda: _loss(new, x, t, env),
                      stacked_by_environment(params, n_env), {id(p) for p in new.physics_parameters()})
    kind = optimizer_for(cfg, problem)
    kind.check(problem)
    validation = _Validation(new, xv, t, envv, n_env, on_check)
    n_steps = _for_weights(cfg, "steps", new.adapts_weights)
    bar = Progress(f"adapting {label} ({n_env} environments, {n_per_env} parameters each)", n_steps, "steps",
                   enabled=progress)
    step, best_step, best, lr, stop = _descend(problem, kind, cfg, validation, n_steps,
                                               _for_weights(cfg, "patience", new.adapts_weights), bar)
    for p in params:
        p.requires_grad_(False)
    paused = time.perf_counter()  # a diagnosis of the fit, not part of it
    rel_se = relative_standard_errors(new, x, t, env, n_env)
    validation.excluded += time.perf_counter() - paused
    seconds = time.perf_counter() - start - validation.excluded
    kept = float(best.mean())
    bar.close(f"{step} steps in {seconds:.0f} s ({stop}), validation relative L2 {kept:.3g} "
              f"(kept rows up to step {best_step})")
    return Adapted(new.eval(), step, best_step, seconds, kept, n_per_env, shots, lr, kind.name,
                   [float(e) for e in best], stop, None if rel_se is None else rel_se.tolist())


def _copy_for(module: Forecaster, env_names: list[str], envs: list[dict[str, float]] | None, init: str,
              reset: bool) -> Forecaster:
    """A copy of ``module`` for ``env_names``, every parameter held: with fresh environment
    parameters (``reset``) or its own (which must be for ``env_names``)."""
    new = copy.deepcopy(module)
    if reset:
        new.env_names = list(env_names)
        new.reset_environments(list(envs) if envs is not None else len(env_names), init=init)
    elif list(env_names) != list(module.env_names):
        raise ValueError(f"refitting {module.env_names} needs their own names, got {env_names}")
    new.to(module.u_mean.device)
    for p in new.parameters():
        p.requires_grad_(False)
    return new


class _Validation:
    """Each environment's mean validation error at the current parameters, ``on_check`` called
    beside it (its seconds, ``excluded``, are not counted as adaptation's)."""

    def __init__(self, module: Forecaster, xv: torch.Tensor, t: torch.Tensor, envv: torch.Tensor, n_env: int,
                 on_check: Callable[[int, Forecaster], None] | None) -> None:
        self.module, self.xv, self.t, self.envv, self.n_env, self.on_check = module, xv, t, envv, n_env, on_check
        self.excluded = 0.0

    def __call__(self, step: int) -> torch.Tensor:
        """``(n_env,)`` mean validation relative L2 per environment (inf where not finite)."""
        by_env = validation_errors_by_env(self.module, self.xv, self.t, self.envv, self.n_env)
        if self.on_check is not None:
            paused = time.perf_counter()
            self.on_check(step, self.module)
            self.excluded += time.perf_counter() - paused
        return by_env


def _descend(problem: Problem, kind: type[AdaptOptimizer], cfg: AdaptConfig, validation: _Validation,
             n_steps: int, patience: int, bar: Progress) -> tuple[int, int, torch.Tensor, float, str]:
    """Up to ``n_steps`` steps of ``kind``, validation checked every ``cfg.val_every`` steps and
    when the optimizer stalls; the kept parameters (each environment's best row when
    ``problem.stacked``, else the best check's) are left in ``problem.params``.

    Returns:
        The steps taken, the last step whose parameters were kept, the kept validation error
        per environment, the learning rate in use at the end and why it stopped (``STOPS``).
    """
    params = problem.params
    lr = kind.start_lr(cfg, problem.module.adapts_weights)
    opt = kind(problem, lr, cfg)
    best = validation(0)  # per environment: the error of the row kept so far
    best_state, best_step, step = _snapshot(params), 0, 0
    reference, since = float(best.mean()), 0  # the kept mean at the last significant improvement
    last_finite, backtracks = best_state, 0
    bar.update(0, val_rel_l2=float(best.mean()))
    stop = "capped"
    for step in range(1, n_steps + 1):
        problem.module.train()
        before = _snapshot(params)
        loss = opt.step()
        if torch.isfinite(loss):
            last_finite = before
        if not torch.isfinite(loss) or not all(bool(torch.isfinite(p).all()) for p in params):
            if backtracks == MAX_BACKTRACKS:
                stop = "non_finite"
                break
            backtracks += 1
            _restore(params, last_finite)
            lr /= BACKTRACK_FACTOR
            opt = kind(problem, lr, cfg)  # fresh state: the old one led here
            continue
        if step % cfg.val_every == 0 or opt.stalled:
            err = validation(step)
            if problem.stacked:
                better = err < best
                if bool(better.any()):
                    _keep_rows(best_state, params, better)
                    best, best_step = torch.where(better, err, best), step
            elif float(err.mean()) < float(best.mean()):
                best, best_step, best_state = err, step, _snapshot(params)
            kept = float(best.mean())
            if kept < reference * (1.0 - cfg.min_rel_improvement):
                reference, since = kept, 0
            else:
                since += 1
            bar.set(step, val_rel_l2=kept)
            if since >= patience or opt.stalled:
                stop = "converged" if opt.stalled else "plateau"
                break
        else:
            bar.set(step)
    _restore(params, best_state)
    return step, best_step, best, lr, stop


def stacked_by_environment(params: list[torch.nn.Parameter], n_env: int) -> bool:
    """Whether every environment parameter holds one row per environment (its first dimension),
    so that environments can be kept, selected and split row by row."""
    return bool(params) and all(p.dim() > 0 and p.shape[0] == n_env for p in params)


def split_environments(module: Forecaster, adapted: Forecaster, groups: list[list[int]],
                       envs: list[list[dict[str, float]]] | None = None) -> list[Forecaster]:
    """One forecaster per group of ``adapted``'s environments (row indices), each a copy of the
    trained ``module`` whose environment parameters are those rows of ``adapted``.

    Args:
        module: the trained forecaster ``adapted`` was adapted from (its shared parameters).
        adapted: the forecaster adapted to all environments at once.
        groups: for each output, the indices of its environments in ``adapted``.
        envs: for each group, its environments' parameters (known terms with true values need them).
    """
    names = adapted.env_names
    out = []
    for g, rows in enumerate(groups):
        part = copy.deepcopy(module)
        part.env_names = [names[i] for i in rows]
        part.reset_environments(envs[g] if envs is not None else len(rows))
        part.to(adapted.u_mean.device)
        index = torch.as_tensor(rows, dtype=torch.long, device=adapted.u_mean.device)
        with torch.no_grad():
            for mine, joint in zip(part.env_parameters(), adapted.env_parameters(), strict=True):
                mine.copy_(joint.index_select(0, index))
        for p in part.parameters():
            p.requires_grad_(False)
        out.append(part.eval())
    return out


def validation_errors_by_env(module: Forecaster, xv: torch.Tensor, t: torch.Tensor, envv: torch.Tensor,
                             n_env: int) -> torch.Tensor:
    """``(n_env,)`` float64 on the CPU: each environment's mean validation relative L2 (inf where
    a rollout is not finite)."""
    module.eval()
    with torch.no_grad():
        err = relative_l2(module(xv[:, 0], t, envv), xv).double()
    err = torch.where(torch.isfinite(err), err, torch.full_like(err, math.inf))
    counts = torch.bincount(envv, minlength=n_env).clamp_min(1).double()
    return (err.new_zeros(n_env).index_add(0, envv, err) / counts).cpu()


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


def _for_weights(cfg: AdaptConfig, name: str, adapts_weights: bool) -> int:
    """``cfg.<name>``, or ``cfg.weights_<name>`` for methods that adapt weight tensors when it is
    set: Adam on a network takes more, and noisier, steps than L-BFGS on a context."""
    own = getattr(cfg, f"weights_{name}") if adapts_weights else None
    return int(own if own is not None else getattr(cfg, name))


def _snapshot(params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def _keep_rows(kept: list[torch.Tensor], params: list[torch.nn.Parameter], rows: torch.Tensor) -> None:
    """Copy the current values of the environments where ``rows`` is True into ``kept``."""
    for k, p in zip(kept, params, strict=True):
        mask = rows.to(p.device).view(-1, *([1] * (p.dim() - 1)))
        k.copy_(torch.where(mask, p.detach(), k))


def _restore(params: list[torch.nn.Parameter], values: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for p, v in zip(params, values, strict=True):
            p.copy_(v)


adapt = adapt_to_new_environments  # the public name (``leads.adapt``)

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

The optimizer (``adapt.optimizer``, default ``auto``): full-batch L-BFGS with a strong-Wolfe line
search, one iteration per step, for the few numbers of a context (it reaches in a handful of
iterations what Adam needs tens of steps for); Adam, as in training, for weight tensors.
``gauss_newton`` (Levenberg-Marquardt, ``leads.evaluation.gauss_newton``) for contexts and
physical parameters: each step costs about one L-BFGS step and, near the optimum, goes much
further; adaptation stops when it finds no step that lowers the objective.

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
from leads.datasets.progress import Progress
from leads.envs.errors import UserError
from leads.evaluation.gauss_newton import LevenbergMarquardt
from leads.evaluation.metrics import relative_l2
from leads.evaluation.scoring import flatten_trajectories
from leads.models.forecaster import Forecaster

LINE_SEARCH_EVALS = 20
BACKTRACK_FACTOR = 10.0
MAX_BACKTRACKS = 6
# A non-finite L-BFGS trial point is scored as this many times the step's starting loss (+ 1).
WALL_FACTOR = 1.0e3


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
    device = module.u_mean.device
    new = copy.deepcopy(module)
    if reset:
        new.env_names = list(env_names)
        new.reset_environments(list(envs) if envs is not None else len(env_names), init=cfg.init)
    elif list(env_names) != list(module.env_names):
        raise ValueError(f"refitting {module.env_names} needs their own names, got {env_names}")
    new.to(device)
    for p in new.parameters():
        p.requires_grad_(False)
    params = new.env_parameters()
    n_per_env = sum(p.numel() for p in params) // len(env_names)
    xv, envv = (a.to(device) for a in flatten_trajectories(val_states))
    n_env = len(env_names)
    if not params:  # zero-shot method: nothing to fit, its validation error is still reported
        by_env = _val_errors_by_env(new, xv, t.to(device, xv.dtype), envv, n_env)
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
    optimizer = _optimizer_name(cfg, new.adapts_weights)
    n_steps = _for_weights(cfg, "steps", new.adapts_weights)
    patience = _for_weights(cfg, "patience", new.adapts_weights)
    # L-BFGS finds its step by line search: its lr is the first trial step, 1 unless backtracked.
    lr = 1.0 if optimizer in ("lbfgs", "gauss_newton") else float(cfg.weights_lr if new.adapts_weights else cfg.lr)
    # Physical parameters (scaled to ~1) take the step of a context even when weights are adapted.
    physical = {id(p) for p in new.physics_parameters()}
    ratio = 1.0 if optimizer in ("lbfgs", "gauss_newton") else float(cfg.lr) / lr

    if optimizer == "gauss_newton" and (new.adapts_weights or not stacked_by_environment(params, n_env)):
        what = "weight tensors" if new.adapts_weights else "parameters without one row per environment"
        raise UserError(f"adapt.optimizer=gauss_newton fits a few parameters per environment; method "
                        f"'{new.cfg.method}' adapts {what}: use adapt.optimizer=auto or lbfgs")

    def make(lr: float) -> torch.optim.Optimizer | LevenbergMarquardt:
        if optimizer == "gauss_newton":
            return LevenbergMarquardt(new, params, x, t, env, n_env)
        return _make_optimizer(optimizer, params, lr, physical, ratio)

    opt = make(lr)

    evaluations: list[float] = []  # losses met in the current step (the first is its start)

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        loss = _loss(new, x, t, env)
        if torch.isfinite(loss):
            loss.backward()
        elif optimizer == "lbfgs" and evaluations:
            # A line-search trial point whose rollout blew up. Its zero gradient would make torch's
            # strong-Wolfe search take it for a minimum and fail (an empty bracket); a high finite
            # loss makes the search step back inside the region where the loss is finite.
            loss = torch.tensor(WALL_FACTOR * evaluations[0] + 1.0)
        evaluations.append(float(loss.detach()))
        return loss

    excluded = 0.0
    per_env = stacked_by_environment(params, n_env)

    def val_errors(step: int) -> torch.Tensor:
        """``(n_env,)`` mean validation relative L2 per environment (inf where not finite)."""
        nonlocal excluded
        by_env = _val_errors_by_env(new, xv, t, envv, n_env)
        if on_check is not None:
            paused = time.perf_counter()
            on_check(step, new)
            excluded += time.perf_counter() - paused
        return by_env

    best = val_errors(0)  # per environment: the error of the row kept so far
    best_state, best_step, step = _snapshot(params), 0, 0
    reference, since = float(best.mean()), 0  # the kept mean at the last significant improvement
    last_finite, backtracks = best_state, 0
    bar = Progress(f"adapting {label} ({n_env} environments, {n_per_env} parameters each)", n_steps, "steps",
                   enabled=progress)
    bar.update(0, val_rel_l2=float(best.mean()))
    for step in range(1, n_steps + 1):
        new.train()
        before = _snapshot(params)
        if optimizer == "adam":
            loss = closure()
            if torch.isfinite(loss):
                opt.step()
        else:
            evaluations.clear()
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
        # Levenberg-Marquardt found no step that lowers the objective: it is at its minimum.
        stalled = isinstance(opt, LevenbergMarquardt) and opt.stalled
        if step % cfg.val_every == 0 or stalled:
            err = val_errors(step)
            if per_env:
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
            if since >= patience or stalled:
                break
        else:
            bar.set(step)
    _restore(params, best_state)
    for p in params:
        p.requires_grad_(False)
    seconds = time.perf_counter() - start - excluded
    kept = float(best.mean())
    bar.close(f"{step} steps in {seconds:.0f} s, validation relative L2 {kept:.3g} (kept rows up to step {best_step})")
    return Adapted(new.eval(), step, best_step, seconds, kept, n_per_env, shots, lr, optimizer,
                   [float(e) for e in best])


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


def _val_errors_by_env(module: Forecaster, xv: torch.Tensor, t: torch.Tensor, envv: torch.Tensor,
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
    # No absolute tolerances: L-BFGS's defaults skip the step once the largest gradient entry is
    # below 1e-7 (or the directional derivative above -1e-9), and the joint loss (a mean over
    # every environment, in normalised units) is that small while one environment is still far
    # from its optimum: Lotka-Volterra's (beta, delta) = (1.25, 1.25) stalled with alpha 24% off.
    # Validation decides when to stop.
    return torch.optim.LBFGS(params, lr=lr, max_iter=1, max_eval=LINE_SEARCH_EVALS + 1, history_size=10,
                             tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe")


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

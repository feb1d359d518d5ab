"""The optimizers of adaptation (``adapt.optimizer``): one class each, by name in ``OPTIMIZERS``.

- ``lbfgs``: full-batch L-BFGS with a strong-Wolfe line search, one iteration per step, for the
  few numbers of a context (it reaches in a handful of iterations what Adam needs tens of steps for);
- ``adam``: Adam, as in training, for weight tensors;
- ``gauss_newton``: Levenberg-Marquardt (``leads.evaluation.gauss_newton``) for contexts and
  physical parameters: each step costs about one L-BFGS step and, near the optimum, goes much
  further; it reports when it finds no step that lowers the objective (``stalled``).

``auto`` picks one by the kind of parameters adapted (:func:`optimizer_for`, ``AUTO``). Every optimizer is built
from the problem it fits (:class:`Problem`) and a learning rate, and takes one step per call of
``step()``, returning the objective before the step; adaptation (``leads.evaluation.adaptation``)
drives it, checks validation and backtracks when a step leaves the finite region.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import ClassVar

import torch

from leads.config.schema import AdaptConfig
from leads.envs.errors import UserError
from leads.evaluation.gauss_newton import LevenbergMarquardt
from leads.models.forecaster import Forecaster

LINE_SEARCH_EVALS = 20
# A non-finite L-BFGS trial point is scored as this many times the step's starting loss (+ 1).
WALL_FACTOR = 1.0e3


@dataclass
class Problem:
    """What adaptation fits: ``params`` of ``module`` on the trajectories ``x`` (``(n, n_t, *state)``,
    environments ``env``, times ``t``), minimising ``loss()``."""

    module: Forecaster
    params: list[torch.nn.Parameter]
    x: torch.Tensor
    t: torch.Tensor
    env: torch.Tensor
    n_env: int
    loss: Callable[[], torch.Tensor]  # the objective at the current parameters, differentiable
    stacked: bool                     # every parameter has one row per environment
    physical: Collection[int] = ()    # ids of the known terms' physical parameters among params


class AdaptOptimizer:
    """One step per call of :meth:`step` on ``problem.params``, at learning rate ``lr``."""

    name: ClassVar[str]
    stalled: bool = False  # found no step that lowers the objective: at a minimum, adaptation stops

    def __init__(self, problem: Problem, lr: float, cfg: AdaptConfig) -> None:
        self.problem = problem

    @staticmethod
    def start_lr(cfg: AdaptConfig, adapts_weights: bool) -> float:
        """The learning rate adaptation starts at (divided when it backtracks)."""
        return 1.0

    @classmethod
    def check(cls, problem: Problem) -> None:
        """A one-line ``UserError`` when this optimizer cannot fit ``problem``."""

    def step(self) -> torch.Tensor:
        """One step; returns the objective before it (non-finite: adaptation backtracks)."""
        raise NotImplementedError


class Adam(AdaptOptimizer):
    name = "adam"

    def __init__(self, problem: Problem, lr: float, cfg: AdaptConfig) -> None:
        super().__init__(problem, lr, cfg)
        # Physical parameters (scaled to ~1) take the step of a context even when weights are
        # adapted, scaled down with the rest when adaptation backtracks.
        ratio = float(cfg.lr) / self.start_lr(cfg, problem.module.adapts_weights)
        self.opt = torch_optimizer("adam", problem.params, lr, problem.physical, ratio)

    @staticmethod
    def start_lr(cfg: AdaptConfig, adapts_weights: bool) -> float:
        return float(cfg.weights_lr if adapts_weights else cfg.lr)

    def step(self) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=True)
        loss = self.problem.loss()
        if torch.isfinite(loss):
            loss.backward()
            self.opt.step()
        return loss.detach()


class LBFGS(AdaptOptimizer):
    """Its step is found by line search: its learning rate is the first trial step, 1 unless backtracked."""

    name = "lbfgs"

    def __init__(self, problem: Problem, lr: float, cfg: AdaptConfig) -> None:
        super().__init__(problem, lr, cfg)
        self.opt = torch_optimizer("lbfgs", problem.params, lr)
        self.evaluations: list[float] = []  # losses met in the current step (the first is its start)

    def _closure(self) -> torch.Tensor:
        self.opt.zero_grad(set_to_none=True)
        loss = self.problem.loss()
        if torch.isfinite(loss):
            loss.backward()
        elif self.evaluations:
            # A line-search trial point whose rollout blew up. Its zero gradient would make torch's
            # strong-Wolfe search take it for a minimum and fail (an empty bracket); a high finite
            # loss makes the search step back inside the region where the loss is finite.
            loss = torch.tensor(WALL_FACTOR * self.evaluations[0] + 1.0)
        self.evaluations.append(float(loss.detach()))
        return loss

    def step(self) -> torch.Tensor:
        self.evaluations.clear()
        return self.opt.step(self._closure)  # the loss before the step; the line search may leave a bad point


class GaussNewton(AdaptOptimizer):
    name = "gauss_newton"

    def __init__(self, problem: Problem, lr: float, cfg: AdaptConfig) -> None:
        super().__init__(problem, lr, cfg)
        p = problem
        self.lm = LevenbergMarquardt(p.module, p.params, p.x, p.t, p.env, p.n_env)

    @classmethod
    def check(cls, problem: Problem) -> None:
        module = problem.module
        if module.adapts_weights or not problem.stacked:
            what = "weight tensors" if module.adapts_weights else "parameters without one row per environment"
            raise UserError(f"adapt.optimizer=gauss_newton fits a few parameters per environment; method "
                            f"'{module.cfg.method}' adapts {what}: use adapt.optimizer=auto or lbfgs")

    @property
    def stalled(self) -> bool:  # type: ignore[override]
        return self.lm.stalled

    def step(self) -> torch.Tensor:
        return self.lm.step()


OPTIMIZERS: dict[str, type[AdaptOptimizer]] = {o.name: o for o in (Adam, LBFGS, GaussNewton)}


# What ``auto`` adapts each kind of environment parameters with (:func:`parameter_kind`):
# - weight tensors: Adam, as in training;
# - contexts (with or without physical parameters beside them): L-BFGS, which reaches in a
#   handful of iterations what Adam needs tens of steps for;
# - physical parameters alone (known terms without a network): Levenberg-Marquardt, which
#   converges where L-BFGS stalls. Lotka-Volterra with complete physics, held-out environments
#   of interp, extrap and (beta, delta) = (1.4, 0.3) adapted together from one trajectory each:
#   Levenberg-Marquardt stopped at a minimum after 17 steps with every rate within 8e-5 of the
#   truth; L-BFGS left (beta, delta) = (1.25, 1.25) with alpha 20% off (docs/identification.md).
AUTO = {"weights": "adam", "contexts": "lbfgs", "physical": "gauss_newton"}


def parameter_kind(module: Forecaster) -> str:
    """What ``module`` adapts on a new environment: ``weights`` (a method that adapts weight
    tensors), ``contexts`` (a method's few numbers per environment, physical parameters beside
    them or not) or ``physical`` (only the known terms' parameters: no network, or one without
    environment parameters)."""
    if module.adapts_weights:
        return "weights"
    if module.residual and module.model.env_parameters():
        return "contexts"
    return "physical"


def optimizer_for(cfg: AdaptConfig, problem: Problem) -> type[AdaptOptimizer]:
    """The optimizer ``cfg.optimizer`` names (checked by ``AdaptConfig``); ``auto``: ``AUTO`` of
    the problem's :func:`parameter_kind` (L-BFGS where Levenberg-Marquardt cannot fit the
    parameters: a method of one's own without one row per environment)."""
    name = cfg.optimizer
    if name == "auto":
        name = AUTO[parameter_kind(problem.module)]
        if name == "gauss_newton" and not problem.stacked:
            name = "lbfgs"
    return OPTIMIZERS[name]


def torch_optimizer(name: str, params: list[torch.nn.Parameter], lr: float, physical: Collection[int] = (),
                    physical_ratio: float = 1.0) -> torch.optim.Optimizer:
    """The torch optimizer behind ``adam`` (``physical`` parameters at ``physical_ratio`` times
    ``lr``) or ``lbfgs``."""
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

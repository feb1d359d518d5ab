"""Levenberg-Marquardt for the few parameters of each environment (``adapt.optimizer: gauss_newton``).

The adaptation objective is a mean of squared rollout errors (plus the method's penalty), and an
environment has few parameters (a context of 2-16 numbers, a few physical constants), so its
Gauss-Newton matrix ``J^T J`` is small and cheap to solve. ``J`` comes from forward-mode
differentiation of the rollout, one direction per parameter of an environment, batched by
``torch.func.vmap``: direction ``j`` moves parameter ``j`` of every environment at once, and
since an environment's trajectories depend only on its own parameters, each environment reads
its own column from its own trajectories. On the Gray-Scott hybrid (8 numbers per environment)
the whole Jacobian cost about 2.4 forward-and-backward passes, the price of one L-BFGS step with
its line search (docs/benchmarks.md), while a Gauss-Newton step goes much further near the optimum.

Each step solves ``(H_e + mu diag(H_e)) delta_e = -g_e`` for every environment ``e`` (``H_e`` the
Gauss-Newton matrix of its trajectory term, ``g_e`` the gradient of the whole objective, the
penalty's included; the penalty's curvature is left to the damping) and keeps the step when the
objective falls; otherwise ``mu`` grows and the step is solved again, with the same Jacobian, up
to a damping at which the step is a tiny gradient step: when even that does not lower the
objective, the step reports that it stalled.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import functional_call, jvp, vmap

from leads.models.forecaster import Forecaster

# A cautious first step (between Gauss-Newton's and a gradient step): from 1e-3 the first full
# Gauss-Newton steps of the pendulum's new environments jumped to worse basins of the forcing
# frequency (validation 0.32 against 0.25 from 1, seed 0); Gray-Scott took 14 steps instead of 9.
MU_START = 1.0
MU_UP = 10.0      # after a rejected trial
MU_DOWN = 3.0     # after an accepted one
MU_MIN = 1.0e-9
# A step tries larger and larger damping until the objective falls; at MU_MAX the step is a tiny
# gradient step (Marquardt's scaling), so when even that fails the parameters are at a minimum
# to the rollout's precision and adaptation stops.
MU_MAX = 1.0e8


class LevenbergMarquardt:
    """One damped Gauss-Newton step per call of :meth:`step`, on ``params`` (one row per environment).

    Args:
        module: the forecaster being adapted; ``params`` are its environment parameters.
        params: the parameters fitted, each ``(n_env, ...)``.
        x: ``(n, n_t, *state)`` the trajectories fitted; ``env``: ``(n,)`` their environments.
        t: ``(n_t,)`` observation times.
        n_env: the number of environments.
    """

    def __init__(self, module: Forecaster, params: list[torch.nn.Parameter], x: torch.Tensor, t: torch.Tensor,
                 env: torch.Tensor, n_env: int) -> None:
        self.module, self.params, self.x, self.t, self.env, self.n_env = module, params, x, t, env, n_env
        by_id = {id(p): name for name, p in module.named_parameters()}
        self.names = [by_id[id(p)] for p in params]
        self.sizes = [p[0].numel() for p in params]
        self.mu = MU_START
        self.stalled = False  # the last step found no trial that lowers the objective

    def _rollout(self, values: list[torch.Tensor]) -> torch.Tensor:
        named = dict(zip(self.names, values, strict=True))
        return functional_call(self.module, named, (self.x[:, 0], self.t, self.env))

    def _basis(self) -> list[torch.Tensor]:
        """Per parameter, ``(P, n_env, ...)`` tangents: direction ``j`` moves entry ``j`` of every row."""
        total, out, offset = sum(self.sizes), [], 0
        for p, k in zip(self.params, self.sizes, strict=True):
            b = torch.zeros(total, p.shape[0], k, dtype=p.dtype, device=p.device)
            b[offset:offset + k] = torch.eye(k, dtype=p.dtype, device=p.device).unsqueeze(1)
            out.append(b.view(total, *p.shape))
            offset += k
        return out

    def linearised(self, values: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """At the current parameters (``values``: a copy of them, when the caller has one): the
        rollouts ``(n, n_t, *state)``, the residuals ``(n, m)`` (float64) and their derivatives
        ``(P, n, m)`` along each parameter of an environment (float64)."""
        module, x = self.module, self.x
        values = [p.detach().clone() for p in self.params] if values is None else values

        def rollout_and_tangent(*directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return jvp(self._rollout, (values,), (list(directions),))

        with torch.no_grad():
            pred, J = vmap(rollout_and_tangent, out_dims=(None, 0))(*self._basis())  # J: (P, n, n_t, *state)
        # The residuals are linear in the prediction: their derivative along direction j is J_j
        # at t > 0 in normalised units.
        r = module.residuals(pred, x).double()                                      # (n, m)
        Jr = (J[:, :, 1:] / module.u_std.unsqueeze(0)).flatten(2).double()          # (P, n, m)
        return pred, r, Jr

    def least_squares(self, values: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor,
                                                                               torch.Tensor]:
        """Per environment, the trajectory term as a least-squares problem: ``J^T J``
        ``(n_env, P, P)``, the residual sum of squares ``(n_env,)`` and the number of residuals
        ``(n_env,)`` (float64)."""
        _, r, Jr = self.linearised(values)
        onehot = torch.nn.functional.one_hot(self.env, self.n_env).double()        # (n, n_env)
        jtj = torch.einsum("pnm,qnm,ne->epq", Jr, Jr, onehot)
        return jtj, onehot.T @ r.square().sum(1), onehot.sum(0) * r.shape[1]

    def normal_equations(self, values: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor,
                                                                                   torch.Tensor]:
        """At the current parameters (``values``: a copy of them, when the caller has one): the
        objective, and per environment the Gauss-Newton matrix ``(n_env, P, P)`` of its trajectory
        term and the gradient ``(n_env, P)`` of the whole objective."""
        module, x, env = self.module, self.x, self.env
        pred, r, Jr = self.linearised(values)
        scale = 2.0 / r.numel()  # d/dtheta of mean_n mean_m r^2
        onehot = torch.nn.functional.one_hot(env, self.n_env).double()             # (n, n_env)
        H = scale * torch.einsum("pnm,qnm,ne->epq", Jr, Jr, onehot)                 # (n_env, P, P)
        g = scale * torch.einsum("pnm,nm,ne->ep", Jr, r, onehot)                    # (n_env, P)
        per_sample, penalty = module.objective(pred, x, env)
        if penalty.requires_grad:  # the penalty is on the observed states: its gradient costs no rollout
            grads = torch.autograd.grad(penalty, self.params, allow_unused=True)
            g = g + torch.cat([g.new_zeros(self.n_env, k) if d is None else d.reshape(self.n_env, k).double()
                               for d, k in zip(grads, self.sizes, strict=True)], 1)
        return (per_sample.mean() + penalty).detach(), H, g

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor:
        """Take one step (``closure`` is not used); returns the objective before it, as
        ``torch.optim.LBFGS.step`` does."""
        module, x, env = self.module, self.x, self.env
        values = [p.detach().clone() for p in self.params]  # restored when no trial lowers the objective
        loss, H, g = self.normal_equations(values)
        if not (torch.isfinite(loss) and torch.isfinite(g).all() and torch.isfinite(H).all()):
            return loss  # adaptation's backtracking restores the last finite parameters
        diag = torch.diagonal(H, dim1=-2, dim2=-1)
        # Marquardt's scaling, with a floor so that a direction the data do not see still moves a little.
        diag = torch.maximum(diag, diag.amax(-1, keepdim=True) * 1e-9).clamp_min(1e-300)
        while self.mu <= MU_MAX:
            delta = torch.linalg.solve(H + torch.diag_embed(self.mu * diag), -g.unsqueeze(-1)).squeeze(-1)
            self._set(values, delta)
            with torch.no_grad():
                per_sample, penalty = module.objective(module(x[:, 0], self.t, env), x, env)
                trial = per_sample.mean() + penalty
            if torch.isfinite(trial) and trial < loss:
                self.mu = max(self.mu / MU_DOWN, MU_MIN)
                return loss
            self.mu *= MU_UP
        self._set(values, None)
        self.mu = MU_MAX
        self.stalled = True
        return loss

    def _set(self, values: list[torch.Tensor], delta: torch.Tensor | None) -> None:
        """The parameters to ``values`` (moved by ``delta``, ``(n_env, P)``, when given)."""
        offset = 0
        with torch.no_grad():
            for p, v, k in zip(self.params, values, self.sizes, strict=True):
                p.copy_(v if delta is None else v + delta[:, offset:offset + k].to(v.dtype).view_as(v))
                offset += k

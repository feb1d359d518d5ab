"""Batched time integrators, and the part shared by the small ODE systems.

The integrators take ``f(t, u) -> du/dt`` on a whole batch ``u`` of shape ``(B, *state)``;
per-sample physical parameters reach ``f`` through a closure. They compute in the dtype and
on the device of ``u0`` and return the states at the observation times, ``(B, n_t, *state)``.

- ``rk4``: classic fixed-step Runge-Kutta 4, ``substeps`` steps per observation interval.
- ``dopri5``: embedded Dormand-Prince 5(4) with a step size per sample, so one stiff
  trajectory does not slow the error control of the others. ``f`` then receives ``t`` as a
  ``(B,)`` tensor (each sample is at its own time); with ``rk4`` it is a float.

``ODESystem`` is a ``System`` whose state is a small vector: initial states drawn uniformly
in a box, one generator per seed, and an ``rk4`` solve at a configured number of substeps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from leads.envs.base import System, seed_rng
from leads.envs.errors import UserError

RHS = Callable[[Any, torch.Tensor], torch.Tensor]


def _times(t_obs: Sequence[float] | np.ndarray | torch.Tensor) -> list[float]:
    if isinstance(t_obs, torch.Tensor):
        t_obs = t_obs.detach().cpu().numpy()
    t = np.asarray(t_obs, dtype=np.float64)
    if t.ndim != 1 or t.size == 0 or not np.all(np.isfinite(t)):
        raise ValueError(f"observation times must be a non-empty 1-D finite array, got shape {t.shape}")
    if np.any(np.diff(t) <= 0):
        raise ValueError("observation times must be strictly increasing")
    return t.tolist()


def _plus(u: torch.Tensor, c: float | torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``u + c k``, one fused operation when ``c`` is a Python number (``torch.add``'s alpha):
    the number of operations per stage is what a small state's step costs."""
    return torch.add(u, k, alpha=c) if isinstance(c, (int, float)) else u + c * k


def rk4_step(f: RHS, t: float, u: torch.Tensor, h: float) -> torch.Tensor:
    k1 = f(t, u)
    k2 = f(t + h / 2, _plus(u, h / 2, k1))
    k3 = f(t + h / 2, _plus(u, h / 2, k2))
    k4 = f(t + h, _plus(u, h, k3))
    return _plus(u, h / 6, k1 + 2 * (k2 + k3) + k4)


def euler_step(f: RHS, t: float, u: torch.Tensor, h: float) -> torch.Tensor:
    return u + h * f(t, u)


def rk4(f: RHS, u0: torch.Tensor, t_obs: Sequence[float] | np.ndarray | torch.Tensor, substeps: int) -> torch.Tensor:
    """States at ``t_obs`` (``t_obs[0]`` is the time of ``u0``), ``(B, n_t, *state)``."""
    if isinstance(substeps, bool) or not isinstance(substeps, (int, np.integer)) or substeps < 1:
        raise ValueError(f"substeps must be a positive integer, got {substeps!r}")
    t = _times(t_obs)
    u, out = u0, [u0]
    for t0, t1 in zip(t[:-1], t[1:]):
        h = (t1 - t0) / substeps
        for i in range(substeps):
            # t0 + i*h rather than a running sum, so times carry no accumulated round-off.
            u = rk4_step(f, t0 + i * h, u, h)
        out.append(u)
    return torch.stack(out, dim=1)


# Dormand & Prince (1980) tableau; the 7th stage is the first of the next step (FSAL).
_A = (
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_C = (1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
# 5th-order minus embedded 4th-order weights: the local error estimate.
_E = (
    35 / 384 - 5179 / 57600,
    0.0,
    500 / 1113 - 7571 / 16695,
    125 / 192 - 393 / 640,
    -2187 / 6784 + 92097 / 339200,
    11 / 84 - 187 / 2100,
    -1 / 40,
)


def dopri5(
    f: RHS,
    u0: torch.Tensor,
    t_obs: Sequence[float] | np.ndarray | torch.Tensor,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 1_000_000,
) -> torch.Tensor:
    """Adaptive states at ``t_obs``, ``(B, n_t, *state)``; each sample controls its own step.

    Steps are shortened to land exactly on observation times (no interpolation), so the
    outputs carry the same local accuracy as every other step.
    """
    t_list = _times(t_obs)
    B, n_t = u0.shape[0], len(t_list)
    dev = u0.device
    times = torch.tensor(t_list, dtype=u0.dtype, device=dev)
    out = u0.new_empty((B, n_t, *u0.shape[1:]))
    out[:, 0] = u0

    def per_sample(x: torch.Tensor) -> torch.Tensor:  # (B,) -> broadcastable over the state
        return x.view(B, *([1] * (u0.dim() - 1)))

    def rms(x: torch.Tensor) -> torch.Tensor:
        return x.pow(2).flatten(1).mean(1).sqrt()

    t = times[0].expand(B).clone()
    nxt = torch.ones(B, dtype=torch.long, device=dev)  # index of each sample's next output
    u, k1 = u0, f(t, u0)
    # Initial step (Hairer, Norsett & Wanner, II.4): the size that moves u by ~1% of its scale.
    scale = atol + rtol * u0.abs()
    d0, d1 = rms(u0 / scale), rms(k1 / scale)
    h = torch.where((d0 > 1e-5) & (d1 > 1e-5), 0.01 * d0 / d1.clamp_min(1e-300), torch.full_like(d0, 1e-6))
    for _ in range(max_steps):
        active = nxt < n_t
        if not bool(active.any()):
            return out
        target = times[nxt.clamp(max=n_t - 1)]
        h_try = torch.where(active, torch.minimum(h, target - t), torch.zeros_like(h))
        hb = per_sample(h_try)
        k = [k1]
        for a_row, c in zip(_A, _C):
            y = u + hb * sum(a * ki for a, ki in zip(a_row, k) if a != 0.0)
            k.append(f(t + c * h_try, y))
        y5 = y  # the last stage is evaluated at the 5th-order solution (FSAL)
        err = hb * sum(e * ki for e, ki in zip(_E, k) if e != 0.0)
        err_norm = rms(err / (atol + rtol * torch.maximum(u.abs(), y5.abs())))
        accept = active & (err_norm <= 1.0)
        if not bool(torch.isfinite(err_norm[active]).all()):
            raise FloatingPointError("dopri5: the solution became non-finite")
        u = torch.where(per_sample(accept), y5, u)
        k1 = torch.where(per_sample(accept), k[-1], k1)
        landed = accept & (h_try >= target - t)
        t = torch.where(landed, target, torch.where(accept, t + h_try, t))
        idx = landed.nonzero().squeeze(1)
        out[idx, nxt[idx]] = u[idx]
        nxt = nxt + landed.long()
        # Standard controller: safety 0.9, step change limited to [0.2, 10] per step.
        h_new = h_try * (0.9 * err_norm.clamp_min(1e-10).pow(-0.2)).clamp(0.2, 10.0)
        # A step cut short to land on an output time says nothing against the longer one.
        h_new = torch.where(landed, torch.maximum(h, h_new), h_new)
        h = torch.where(active, h_new, h)
        if bool((active & (h <= 1e-12 * t.abs().clamp_min(1.0))).any()):
            raise FloatingPointError("dopri5: step size underflow (the problem may be too stiff)")
    raise RuntimeError(f"dopri5: more than {max_steps} steps; loosen rtol/atol or check the system")


class ODESystem(System):
    """A ``System`` with a vector state integrated by ``rk4``.

    Its ``defaults`` must also hold ``ic_ranges`` (one ``[low, high]`` per state component:
    initial states are uniform in that box) and ``substeps`` (rk4 steps per ``dt``).
    ``positive`` names parameters that must be strictly positive (a closed range cannot say
    so); ``positive_constants`` names config constants that must be.
    """

    positive: tuple[str, ...] = ()
    positive_constants: tuple[str, ...] = ()

    @property
    def state_shape(self) -> tuple[int, ...]:
        return (len(self.state_names),)

    def check_env(self, env: dict[str, float]) -> None:
        super().check_env(env)
        env = self.complete_env(env)
        for p in self.positive:
            if env[p] <= 0:
                raise UserError(f"{self.name} parameter {p}={env[p]} must be strictly positive")

    def sample_initial_states(self, seeds: Sequence[int]) -> torch.Tensor:
        ranges = np.asarray(self.config["ic_ranges"], dtype=np.float64)
        # One generator per seed: a trajectory's initial state never depends on its batch.
        rows = [seed_rng(s).uniform(ranges[:, 0], ranges[:, 1]) for s in seeds]
        return torch.from_numpy(np.stack(rows) if rows else np.zeros((0, len(ranges))))

    def solve(self, u0: torch.Tensor, params: torch.Tensor, t: np.ndarray) -> torch.Tensor:
        if u0.dim() != 2 or u0.shape[1:] != self.state_shape or params.shape != (u0.shape[0], len(self.param_names)):
            raise ValueError(
                f"{self.name}.solve expects u0 (B, {self.state_shape[0]}) and params "
                f"(B, {len(self.param_names)}), got {tuple(u0.shape)} and {tuple(params.shape)}"
            )
        u0 = u0.to(torch.float64)
        params = params.to(device=u0.device, dtype=torch.float64)
        return rk4(lambda s, u: self.rhs(s, u, params), u0, t, self.config["substeps"])

    @property
    def solver_description(self) -> str:
        n = self.config["substeps"]
        return f"rk4, h={self.dt / n:g} ({n} substeps per observation), float64"

    def _check_config(self) -> None:
        super()._check_config()
        c = self.config
        n = c["substeps"]
        if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
            raise UserError(f"system.substeps={n!r} of {self.name} must be a positive integer")
        try:
            ranges = np.asarray(c["ic_ranges"], dtype=np.float64)
        except (TypeError, ValueError):
            ranges = np.zeros(0)
        if ranges.shape != (len(self.state_names), 2) or not (
            np.all(np.isfinite(ranges)) and np.all(ranges[:, 0] <= ranges[:, 1])
        ):
            raise UserError(
                f"system.ic_ranges of {self.name} must list one finite [low, high] per state "
                f"component ({', '.join(self.state_names)})"
            )
        for key in self.positive_constants:
            v = c[key]
            if not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < float("inf")):
                raise UserError(f"system.{key}={v!r} of {self.name} must be a positive number")




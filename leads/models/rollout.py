"""Time integration of a learned vector field, with teacher forcing.

The model maps ``(u, env) -> du/dt``; a forecast integrates it from the first state over the
observation times with fixed-step RK4 (``substeps`` steps per observation interval). During
training each trajectory restarts from the true state at each observation with probability
``teacher_forcing`` (LEADS' scheme): early in training this keeps rollouts near the data,
later the model must follow its own predictions.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from leads.envs.solvers import euler_step, rk4_step

VectorField = Callable[..., torch.Tensor]  # f(u, env), or f(u, env, time) when time_dependent

# The steppers are the solvers' own; a learned field alone is autonomous and ignores the time.
STEPPERS = {"rk4": rk4_step, "euler": euler_step}


def rollout(
    f: VectorField,
    u0: torch.Tensor,
    t: torch.Tensor,
    env: torch.Tensor,
    *,
    method: str | Callable[..., torch.Tensor] = "rk4",
    substeps: int = 1,
    truth: torch.Tensor | None = None,
    teacher_forcing: float = 0.0,
    generator: torch.Generator | None = None,
    draws: torch.Tensor | None = None,
    time_dependent: bool = False,
    t0: torch.Tensor | None = None,
) -> torch.Tensor:
    """Integrate ``du/dt = f(u, env)`` from ``u0`` over the observation times ``t``.

    Args:
        f: the vector field, ``f(u, env) -> du/dt`` on a batch.
        u0: ``(B, *state)`` initial states; ``env`` ``(B,)`` their environment indices.
        t: ``(n_t,)`` observation times, shared by the batch.
        method: ``rk4`` or ``euler`` (or a stepper ``step(field, time, u, h)``), ``substeps``
            steps per observation interval.
        truth: ``(B, n_t, *state)``; with ``teacher_forcing > 0`` each sample restarts from
            the truth with that probability at each observation (independently per sample and
            step); ``draws`` (``(n_t - 2, B)`` uniforms) decides it instead of fresh random numbers.
        time_dependent: call ``f(u, env, time)`` with the time of each evaluation (non-autonomous
            known terms, e.g. a forcing), ``time`` a float or, with ``t0``, a ``(B,)`` tensor.
        t0: ``(B,)`` the time of each sample's first state, when samples start at different
            times (training windows); ``t`` then gives the offsets ``t - t[0]``.

    Returns:
        ``(B, n_t, *state)``; entry 0 is ``u0`` itself.
    """
    step = STEPPERS[method] if isinstance(method, str) else method

    def field(s: float | torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return f(x, env, s) if time_dependent else f(x, env)

    # Times as Python floats: a step size that is a 0-d tensor costs a tensor op at every use
    # (h / 2, t + h, ...), dozens per interval when known terms are substepped.
    times = t.tolist() if isinstance(t, torch.Tensor) else [float(s) for s in t]

    def time(i: int, j: int, h: float) -> float | torch.Tensor:
        if not time_dependent:
            return 0.0  # the learned field is autonomous
        offset = (times[i] - times[0]) + j * h
        return t0 + offset if t0 is not None else times[i] + j * h

    states = [u0]
    u = u0
    shape = (u0.shape[0],) + (1,) * (u0.dim() - 1)
    for i in range(len(t) - 1):
        h = (times[i + 1] - times[i]) / substeps
        for j in range(substeps):
            u = step(field, time(i, j, h), u, h)
        states.append(u)
        if truth is not None and teacher_forcing > 0 and i + 1 < len(t) - 1:
            draw = torch.rand(shape, device=u.device, generator=generator) if draws is None else draws[i].view(shape)
            u = torch.where(draw < teacher_forcing, truth[:, i + 1], u)
    return torch.stack(states, dim=1)


def teacher_forcing_probability(step: int, start: float, decay: float, every: int) -> float:
    """LEADS' schedule: ``start * decay ** (step // every)``."""
    return float(start * decay ** (step // max(every, 1)))

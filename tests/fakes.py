"""A tiny system with an exact solution, for testing datasets/ without the real physics, and
``decay_data``: ready-made trajectories for adaptation tests.

``LinearDecay``: ``dx/dt = -a x``, ``dy/dt = -b y`` (pointwise on a ``grid x grid`` field when
``grid > 0``), solved in closed form, so generated data can be checked exactly.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from leads.envs.base import System


class LinearDecay(System):
    name = "linear_decay"
    param_names = ("a", "b")
    state_names = ("x", "y")
    defaults: dict[str, Any] = {
        "train_envs": [{"a": 0.5, "b": 1.0}, {"a": 1.0, "b": 0.5}, {"a": 1.5, "b": 1.5}],
        "heldout": {
            "interp": [{"a": 0.75, "b": 0.75}],
            "extrap": [{"a": 2.0, "b": 2.5}, {"a": 0.1, "b": 0.2}],
        },
        "dt": 0.1,
        "horizon": 1.0,
        "grid": 0,
        # Seconds slept in every solve call, so that concurrent generation really overlaps.
        "solve_delay": 0.0,
    }
    solve_calls = 0  # class-wide, counts generation work within one process

    @property
    def state_shape(self) -> tuple[int, ...]:
        g = self.config["grid"]
        return (2, g, g) if g else (2,)

    def sample_initial_states(self, seeds: Sequence[int]) -> torch.Tensor:
        gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
        out = [1.0 + torch.rand(self.state_shape, generator=g, dtype=torch.float64) for g in gens]
        return torch.stack(out) if out else torch.empty((0, *self.state_shape), dtype=torch.float64)

    def _rates(self, params: torch.Tensor) -> torch.Tensor:
        return params.reshape(params.shape[0], 2, *([1] * (len(self.state_shape) - 1)))

    def rhs(self, t: float | torch.Tensor, u: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
        return -self._rates(params) * u

    def solve(self, u0: torch.Tensor, params: torch.Tensor, t: np.ndarray) -> torch.Tensor:
        type(self).solve_calls += 1
        time.sleep(self.config["solve_delay"])
        tt = torch.as_tensor(t - t[0], dtype=u0.dtype, device=u0.device)
        tt = tt.reshape(1, -1, *([1] * len(self.state_shape)))
        return u0[:, None] * torch.exp(-self._rates(params)[:, None] * tt)

    @property
    def solver_description(self) -> str:
        return "exact exponential solution"


def exact_states(system: LinearDecay, params: torch.Tensor, seeds: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Reference states ``(n_env, n_traj, n_t, *state)`` float64, computed independently of datasets/."""
    n_env, n_traj = seeds.shape
    out = np.empty((n_env, n_traj, len(t), *system.state_shape))
    for e in range(n_env):
        a, b = params[e].tolist()
        for j in range(n_traj):
            u0 = system.sample_initial_states([int(seeds[e, j])])[0].numpy()
            for k, tk in enumerate(t):
                out[e, j, k, 0] = u0[0] * np.exp(-a * (tk - t[0]))
                out[e, j, k, 1] = u0[1] * np.exp(-b * (tk - t[0]))
    return out


def generate_in_child(data_cfg: dict, split: str, barrier: Any, queue: Any) -> None:
    """Entry point of a spawned process for the concurrency test: report (generated, reason)."""
    from leads.datasets.cache import prepare_split

    system = LinearDecay(solve_delay=0.3)
    barrier.wait()
    status = prepare_split(system, data_cfg, split, progress=False)
    queue.put((status.generated, status.reason))


def decay_data(n_env: int, n_traj: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth 2-state trajectories ``(n_env, n_traj, 6, 2)`` with an environment-dependent rate,
    and their times."""
    g = torch.Generator().manual_seed(seed)
    t = torch.linspace(0, 1, 6)
    rate = 0.5 + torch.arange(n_env, dtype=torch.float32).view(-1, 1, 1, 1)
    x0 = 1 + torch.rand(n_env, n_traj, 1, 2, generator=g)
    return x0 * torch.exp(-rate * t.view(1, 1, -1, 1)), t

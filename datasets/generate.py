"""Solve every (environment, trajectory) of a split in batches through ``system.generate``."""

from __future__ import annotations

import numpy as np
import torch

from leads.datasets.progress import Progress
from leads.datasets.splits import SplitSpec
from leads.envs.base import System
from leads.envs.errors import UserError


def generate_states(
    system: System,
    spec: SplitSpec,
    batch_size: int,
    *,
    progress: bool | None = None,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """States of ``spec`` as float32 ``(n_env, n_traj, n_t, *state_shape)``.

    Rows of all environments share solver calls (each row carries its own parameters), so a
    split costs ``ceil(n_env * n_traj / batch_size)`` calls whatever its number of environments.
    ``progress=None``: a bar on a terminal, plain lines elsewhere (``datasets/progress.py``);
    False: nothing.
    """
    device = torch.device("cpu") if device is None else torch.device(device)
    n_env, n_traj = spec.seeds.shape
    n_t, shape = len(spec.t), tuple(system.state_shape)
    params = torch.as_tensor(spec.meta.params, dtype=torch.float64)
    flat_seeds = spec.seeds.reshape(-1)
    flat_env = np.repeat(np.arange(n_env), n_traj)
    out = np.empty((n_env * n_traj, n_t, *shape), dtype=np.float32)
    with Progress(f"generating {system.name}/{spec.name}", len(flat_seeds), "trajectories", enabled=progress,
                  start_line=False) as bar:
        for start in range(0, len(flat_seeds), batch_size):
            rows = slice(start, min(start + batch_size, len(flat_seeds)))
            p = params[flat_env[rows]].to(device)
            sol = system.generate([int(s) for s in flat_seeds[rows]], p, spec.t, device)
            expected = (len(p), n_t, *shape)
            if tuple(sol.shape) != expected:
                raise RuntimeError(
                    f"{system.name}.solve returned shape {tuple(sol.shape)}, expected {expected}"
                )
            # Checked after the cast: values finite in float64 can still overflow float32.
            sol32 = sol.detach().to(torch.float32).cpu()
            bad = ~torch.isfinite(sol32.reshape(len(p), -1)).all(dim=1)
            if bad.any():
                row = start + int(bad.nonzero()[0, 0])
                raise UserError(
                    f"{system.name} produced NaN/inf states in split {spec.name} for environment "
                    f"{spec.envs[flat_env[row]]} (seed {int(flat_seeds[row])}); the solution diverges: "
                    "change this environment's parameters, dt or the solver step"
                )
            out[rows] = sol32.numpy()
            bar.update(len(p))
    return out.reshape(n_env, n_traj, n_t, *shape)

"""Adaptation to environments never seen in training.

Only environment-specific parameters are fitted (contexts for ``lowrank``/``coda``, factors
for ``lora``, ``g_e`` for ``leads``, a whole network for ``per_env``); ``erm`` has none and is
scored zero-shot. Fitting uses ``k`` trajectories per new environment and stops on separate
validation trajectories, never on test data.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import torch

from leads.evaluate import flatten_trajectories
from leads.metrics import relative_l2
from leads.module import Forecaster


@dataclass
class Adapted:
    module: Forecaster
    steps: int
    seconds: float
    best_val_rel_l2: float
    n_adapted_params: int


def adapt_to_new_environments(
    module: Forecaster,
    adapt_states: torch.Tensor,
    val_states: torch.Tensor,
    t: torch.Tensor,
    env_names: list[str],
    cfg: dict[str, Any],
    shots: int | None = None,
) -> Adapted:
    """Fit fresh environment-specific parameters for ``len(env_names)`` new environments.

    ``adapt_states`` / ``val_states`` are ``(n_env, n_traj, n_t, *state)``; the first ``shots``
    (default ``cfg["shots"]``) adaptation trajectories of each environment are used.
    """
    start = time.perf_counter()
    shots = cfg["shots"] if shots is None else shots
    new = copy.deepcopy(module).to(module.u_mean.device)
    new.env_names = list(env_names)
    new.model.reset_environments(len(env_names), init=cfg["init"])
    for p in new.parameters():
        p.requires_grad_(False)
    params = list(new.model.env_parameters())
    for p in params:
        p.requires_grad_(True)
    n_params = sum(p.numel() for p in params)
    if not params:  # zero-shot method
        return Adapted(new.eval(), 0, time.perf_counter() - start, float("nan"), 0)

    device = new.u_mean.device
    x, env = flatten_trajectories(adapt_states, shots)
    xv, envv = flatten_trajectories(val_states)
    x, env, xv, envv, t = x.to(device), env.to(device), xv.to(device), envv.to(device), t.to(device, x.dtype)
    opt = torch.optim.Adam(params, lr=cfg["lr"])

    def val_error() -> float:
        new.eval()
        with torch.no_grad():
            return float(relative_l2(new(xv[:, 0], t, envv), xv).mean())

    best, best_state, since, step = val_error(), _snapshot(params), 0, 0
    for step in range(1, cfg["steps"] + 1):
        new.train()
        opt.zero_grad(set_to_none=True)
        pred = new(x[:, 0], t, env)
        loss = (((pred[:, 1:] - x[:, 1:]) / new.u_std.unsqueeze(0)) ** 2).mean()
        if not torch.isfinite(loss):
            break
        loss.backward()
        opt.step()
        if step % cfg["val_every"] == 0:
            err = val_error()
            if err < best:
                best, best_state, since = err, _snapshot(params), 0
            else:
                since += 1
                if since >= cfg["patience"]:
                    break
    with torch.no_grad():
        for p, s in zip(params, best_state):
            p.copy_(s)
    for p in params:
        p.requires_grad_(False)
    return Adapted(new.eval(), step, time.perf_counter() - start, best, n_params // max(len(env_names), 1))


def _snapshot(params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]

"""Models from other codebases: export the evaluation inputs, score predictions made elsewhere.

``export_inputs`` writes one HDF5 file with what a model needs to be evaluated like ours, and
nothing it must not see (no test trajectory beyond its initial state):

    /                        attrs: system, profile, dt, horizon (T), format, how to answer
    /in_domain/envs          (n_env, n_params) training environments (attrs: param_names)
    /in_domain/t             (n_t,) observation times of the test trajectories, [0, 2T]
    /in_domain/initial_states  (n_env, n_test, *state) where each test trajectory starts
    /heldout/<set>/envs, t, initial_states     the same for each held-out set
    /heldout/<set>/adapt_states  (n_env, shots, n_t_adapt, *state) trajectories to adapt on
    /heldout/<set>/adapt_t       (n_t_adapt,) their times, [0, T]
    /heldout/<set>/val_states    (n_env, n_val, n_t_adapt, *state) to stop adaptation on

A predictions file has the same groups, each with ``envs`` copied from the inputs and
``pred`` ``(n_env, n_test, n_t, *state)``. ``score_predictions_file`` checks it against the
inputs and the test targets, scores it with the metrics of our own runs (entry 0 is replaced by
the given initial state), and appends result rows marked ``external`` under the model's name,
so it ranks on the leaderboard beside ours.
"""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from leads.config.loading import system_of
from leads.config.schema import RunConfig
from leads.datasets.atomic import atomic_write
from leads.datasets.cache import ensure_split
from leads.datasets.h5 import Trajectories, load_split
from leads.envs.base import Env, System, env_label, envs_key
from leads.envs.errors import UserError
from leads.evaluation.heldout import heldout_sets
from leads.evaluation.scoring import Scores, score_predictions
from leads.reporting.results import append_rows, git_commit, now, results_path, score_rows, study_hash

FORMAT = "leads-external-1"


def _splits(cfg: RunConfig) -> dict[str, tuple[list[Env], dict[str, Trajectories | None]]]:
    """group -> (environments, {"test": ..., "adapt": ..., "val": ...}) of this config."""
    system = system_of(cfg)
    out: dict[str, Any] = {"in_domain": (system.train_envs, {"test": load_split(ensure_split(system, cfg.data,
                                                                                             "test"))})}
    for name, envs in heldout_sets(cfg).items():
        custom = None if name in system.heldout else envs
        out[f"heldout/{name}"] = (envs, {kind: load_split(ensure_split(system, cfg.data, f"{kind}_{name}", custom))
                                         for kind in ("test", "adapt", "val")})
    return out


def export_inputs(cfg: RunConfig, path: str | Path) -> Path:
    """Write the evaluation inputs of ``cfg`` (its test splits and held-out sets) to ``path``.

    Args:
        cfg: the run configuration whose protocol is exported (profile, sets, shots).
        path: a new HDF5 file; an existing one is never overwritten.

    Returns:
        ``path``.
    """
    path = Path(path)
    if path.exists():
        raise UserError(f"{path} already exists; remove it or choose another --out")
    system = system_of(cfg)
    with atomic_write(path, ".h5.tmp") as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(format=FORMAT, system=system.name, profile=cfg.profile, dt=system.dt,
                       horizon=system.horizon, shots=cfg.adapt.shots,
                       answer="predictions file: for each group, envs (copied) and pred (n_env, n_test, n_t, *state)")
        for group, (envs, splits) in _splits(cfg).items():
            g = f.create_group(group)
            test = splits["test"]
            g["envs"] = system.env_tensor(envs).numpy()
            g["envs"].attrs["param_names"] = list(system.param_names)
            g["t"] = test.t.numpy()
            g["initial_states"] = test.states[:, :, 0].numpy()
            if "adapt" in splits:
                g["adapt_states"] = splits["adapt"].states[:, :cfg.adapt.shots].numpy()
                g["adapt_t"] = splits["adapt"].t.numpy()
                g["val_states"] = splits["val"].states.numpy()
    return path


def _read_predictions(path: Path, group: str, expected_envs: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    with h5py.File(path, "r") as f:
        if group not in f or "pred" not in f[group] or "envs" not in f[group]:
            raise UserError(f"{path}: no {group}/pred and {group}/envs; answer every group of the exported inputs")
        envs, pred = f[group]["envs"][()], f[group]["pred"]
        if envs.shape != expected_envs.shape or not np.allclose(envs, expected_envs, rtol=1e-9, atol=0):
            raise UserError(f"{path}: {group}/envs are not the environments of this protocol's {group}; "
                            "predict for the environments of the exported inputs, in their order")
        if tuple(pred.shape) != shape:
            raise UserError(f"{path}: {group}/pred has shape {tuple(pred.shape)}; expected {shape} "
                            "(n_env, n_test, n_t, *state) as in the exported inputs")
        values = torch.from_numpy(np.asarray(pred[()], dtype=np.float32))
    if not bool(torch.isfinite(values).all()):
        raise UserError(f"{path}: {group}/pred holds non-finite values")
    return values


def score_predictions_file(cfg: RunConfig, path: str | Path, name: str, seed: int = 0) -> dict[str, Scores]:
    """Score the predictions file ``path`` of the external model ``name``; append its rows.

    Args:
        cfg: the run configuration whose protocol was exported.
        path: the predictions file (see the module docstring).
        name: the model's name on the leaderboard.
        seed: the model's seed (rows of several seeds give mean ± std).

    Returns:
        ``{group: Scores}`` for ``in_domain`` and each held-out set.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"predictions file {path} does not exist")
    if not name or any(c in name for c in "/\\\n"):
        raise UserError(f"--name {name!r}: give the model a plain name, e.g. my_fno")
    system = system_of(cfg)
    splits = _splits(cfg)
    info = _external_info(cfg, system, name, seed)
    rows, out = [], {}
    for group, (envs, parts) in splits.items():
        test = parts["test"]
        pred = _read_predictions(path, group, system.env_tensor(envs).numpy(), tuple(test.states.shape))
        pred[:, :, 0] = test.states[:, :, 0]  # the given state is given, not predicted
        scores = score_predictions(pred, test.states, test.t.numpy(), system.horizon)
        out[group] = scores
        split = "in_domain" if group == "in_domain" else group.split("/", 1)[1]
        base = {**info, "kind": "in_domain" if split == "in_domain" else "heldout",
                "shots": None if split == "in_domain" else cfg.adapt.shots, "set_envs_key": envs_key(system, envs)}
        rows += score_rows(base, split, scores, [env_label(e) for e in envs])
    append_rows(results_path(cfg), rows)
    return out


def _external_info(cfg: RunConfig, system: System, name: str, seed: int) -> dict[str, Any]:
    return {"run_id": f"external-{name}-s{seed}", "eval_id": uuid.uuid4().hex[:12], "time": now(),
            "system": system.name, "method": name, "external": True, "physics_aware": False, "seed": seed,
            "profile": cfg.profile, "train_seconds": math.nan, "train_steps": None, "n_trained_params": None,
            "git_commit": git_commit(), "config_hash": study_hash(cfg), "ckpt": None,
            "train_envs_key": envs_key(system, system.train_envs), "dt": system.dt, "horizon": system.horizon,
            "adapt_steps": None, "adapt_best_step": None, "adapt_seconds": None, "n_adapted_params": None}

"""Models from other codebases: export the evaluation inputs (and the training data), score
predictions made elsewhere.

``export_inputs`` writes one HDF5 file with what a model needs to be evaluated like ours, and
nothing it must not see (no test trajectory beyond its initial state):

    /                        attrs: system, profile, protocol, protocol_key, dt, horizon (T),
                             shots, format, how to answer
    /in_domain/envs          (n_env, n_params) training environments (attrs: param_names)
    /in_domain/t             (n_t,) observation times of the test trajectories, [0, 2T]
    /in_domain/initial_states  (n_env, n_test, *state) where each test trajectory starts
    /heldout/<set>/envs, t, initial_states     the same for each held-out set
    /heldout/<set>/adapt_states  (n_env, shots, n_t_adapt, *state) trajectories to adapt on
    /heldout/<set>/adapt_t       (n_t_adapt,) their times, [0, T]
    /heldout/<set>/val_states    (n_env, n_val, n_t_adapt, *state) to stop adaptation on

With ``training_data`` it also holds the protocol's training and validation trajectories, the
very ones our models train and choose checkpoints on:

    /train/envs, /train/t, /train/states   (n_env, n_train, n_t_train, *state) on [0, T]
    /val/envs, /val/t, /val/states         (n_env, n_val, n_t_train, *state)

A predictions file has the in-domain and held-out groups, each with ``envs`` copied from the
inputs and ``pred`` ``(n_env, n_test, n_t, *state)``. ``score_predictions_file`` checks it
against the inputs and the test targets and scores it with the metrics of our own runs (entry 0
is replaced by the given initial state; a forecast that becomes non-finite is scored up to
where it is finite and marked diverged). It writes result rows marked ``external`` under the
model's name and what the user declared of its training budget, so it ranks on the leaderboard
of the protocol beside ours; scoring the same name and seed again replaces its rows.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from leads.config.loading import config_hash, system_of
from leads.config.schema import RunConfig
from leads.datasets.atomic import atomic_write
from leads.datasets.cache import ensure_split
from leads.datasets.h5 import Trajectories, load_split
from leads.envs.base import Env, System, env_label, envs_key
from leads.envs.errors import UserError
from leads.evaluation.heldout import heldout_sets
from leads.evaluation.scoring import Scores, score_predictions
from leads.reporting.keys import protocol_key, protocol_of
from leads.reporting.results import append_rows, git_commit, now, results_path, score_rows, study_hash

FORMAT = "leads-external-1"
DOCS = "docs/external_models.md"


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


def training_files(cfg: RunConfig) -> dict[str, Path]:
    """The cached files of the protocol's training and validation splits (generated if missing),
    in the documented format (docs/data_format.md)."""
    system = system_of(cfg)
    return {split: ensure_split(system, cfg.data, split) for split in ("train", "val")}


def check_out_path(path: Path, flag: str = "--out") -> None:
    """A one-line ``UserError`` unless ``path`` is a new file whose directory exists or can be
    made, and can be written."""
    fix = f"choose another {flag}"
    if path.exists() or path.is_symlink():
        raise UserError(f"{flag} {path} already exists; remove it or {fix}")
    blocker = next((p for p in path.parents if p.exists() or p.is_symlink()), None)
    if blocker is not None and not blocker.is_dir():
        raise UserError(f"{flag} {path}: {blocker} is a file, not a directory; {fix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path.parent, prefix=".write-check-"):
            pass
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        raise UserError(f"{flag} {path}: {e.filename or path.parent} cannot be written ({reason}); {fix}") from None


def export_inputs(cfg: RunConfig, path: str | Path, training_data: bool = False) -> Path:
    """Write the evaluation inputs of ``cfg`` (its test splits and held-out sets) to ``path``.

    Args:
        cfg: the run configuration whose protocol is exported (profile, sets, shots).
        path: a new HDF5 file; an existing one is never overwritten.
        training_data: also write the training and validation trajectories (``/train``, ``/val``).

    Returns:
        ``path``.
    """
    path = Path(path)
    check_out_path(path)
    system = system_of(cfg)
    splits = _splits(cfg)  # generated (if missing) before the output file is opened
    train = {name: load_split(p) for name, p in training_files(cfg).items()} if training_data else {}
    protocol = protocol_of(cfg)
    with atomic_write(path, ".h5.tmp") as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(format=FORMAT, system=system.name, profile=cfg.profile, protocol=protocol.name,
                       protocol_key=protocol.key, dt=system.dt, horizon=system.horizon, shots=cfg.adapt.shots,
                       answer="predictions file: for each group, envs (copied) and pred (n_env, n_test, n_t, *state)")
        for group, (envs, parts) in splits.items():
            g = f.create_group(group)
            test = parts["test"]
            g["envs"] = system.env_tensor(envs).numpy()
            g["envs"].attrs["param_names"] = list(system.param_names)
            g["t"] = test.t.numpy()
            g["initial_states"] = test.states[:, :, 0].numpy()
            if "adapt" in parts:
                g["adapt_states"] = parts["adapt"].states[:, :cfg.adapt.shots].numpy()
                g["adapt_t"] = parts["adapt"].t.numpy()
                g["val_states"] = parts["val"].states.numpy()
        for name, data in train.items():
            g = f.create_group(name)
            g["envs"] = data.params.numpy()
            g["envs"].attrs["param_names"] = list(system.param_names)
            g["t"] = data.t.numpy()
            g["states"] = data.states.numpy()
    return path


def _condensed(e: BaseException) -> str:
    """One line of an error: HDF5's own messages span several lines and repeat themselves."""
    text = " ".join(str(e).split())
    return (text[:160] + "...") if len(text) > 160 else text


def _read_predictions(f: h5py.File, path: Path, group: str, expected_envs: np.ndarray,
                      shape: tuple[int, ...]) -> torch.Tensor:
    if group not in f or not isinstance(f[group], h5py.Group) or "pred" not in f[group] or "envs" not in f[group]:
        raise UserError(f"{path}: no {group}/pred and {group}/envs; answer every group of the exported inputs")
    envs, pred = f[group]["envs"][()], f[group]["pred"]
    if np.shape(envs) != expected_envs.shape or not np.allclose(envs, expected_envs, rtol=1e-9, atol=0):
        raise UserError(f"{path}: {group}/envs are not the environments of this protocol's {group}; "
                        "predict for the environments of the exported inputs, in their order")
    if tuple(pred.shape) != shape:
        raise UserError(f"{path}: {group}/pred has shape {tuple(pred.shape)}; expected {shape} "
                        "(n_env, n_test, n_t, *state) as in the exported inputs")
    try:
        values = np.asarray(pred[()], dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise UserError(f"{path}: {group}/pred does not hold numbers ({_condensed(e)}); write floats") from None
    return torch.from_numpy(values)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class ScoredFile:
    """A scored predictions file: ``{group: Scores}`` for ``in_domain`` and each held-out set
    (``heldout/<set>``), the rows written and how many rows of an earlier scoring they replaced."""

    scores: dict[str, Scores]
    rows: list[dict[str, Any]]
    replaced: int


def score_predictions_file(cfg: RunConfig, path: str | Path, name: str, seed: int = 0,
                           train_steps: int | None = None, train_seconds: float | None = None) -> ScoredFile:
    """Score the predictions file ``path`` of the external model ``name``; write its rows.

    Args:
        cfg: the run configuration whose protocol was exported.
        path: the predictions file (see the module docstring).
        name: the model's name on the leaderboard.
        seed: the model's seed (rows of several seeds give mean ± std).
        train_steps, train_seconds: the training budget the user declares for it, shown beside
            its numbers (never measured here).

    Returns:
        ``ScoredFile``. Rows of an earlier scoring of the same name, seed and declared budget are
        replaced, never repeated.
    """
    path = Path(path)
    if path.is_dir():
        raise UserError(f"predictions file {path} is a directory; pass the HDF5 file written for the exported inputs")
    if not path.is_file():
        raise UserError(f"predictions file {path} does not exist")
    if not name or any(c in name for c in "/\\\n") or name != name.strip():
        raise UserError(f"--name {name!r}: give the model a plain name, e.g. my_fno")
    for flag, value in (("--train-steps", train_steps), ("--train-seconds", train_seconds)):
        if value is not None and not (math.isfinite(value) and value >= 0):
            raise UserError(f"{flag} {value}: give the training budget as a number >= 0, or leave it out")
    system = system_of(cfg)
    splits = _splits(cfg)
    try:
        digest = _sha256(path)
        with h5py.File(path, "r") as f:
            preds = {group: _read_predictions(f, path, group, system.env_tensor(envs).numpy(),
                                              tuple(parts["test"].states.shape))
                     for group, (envs, parts) in splits.items()}
    except UserError:
        raise
    except (OSError, KeyError, RuntimeError, ValueError) as e:  # h5py: empty, truncated or not HDF5 at all
        size = path.stat().st_size if path.exists() else 0
        what = "is empty" if size == 0 else "is not a readable HDF5 file (truncated, damaged or another format)"
        raise UserError(f"predictions file {path} {what}: {_condensed(e)}; write it again with h5py as "
                        f"{DOCS} shows") from None
    declared = {"train_steps": None if train_steps is None else int(train_steps), "train_seconds": train_seconds}
    info = _external_info(cfg, system, name, seed, declared, digest)
    rows, out = [], {}
    for group, (envs, parts) in splits.items():
        test = parts["test"]
        pred = preds[group]
        pred[:, :, 0] = test.states[:, :, 0]  # the given state is given, not predicted
        scores = score_predictions(pred, test.states, test.t.numpy(), system.horizon)
        out[group] = scores
        split = "in_domain" if group == "in_domain" else group.split("/", 1)[1]
        base = {**info, "kind": "in_domain" if split == "in_domain" else "heldout",
                "shots": None if split == "in_domain" else cfg.adapt.shots, "set_envs_key": envs_key(system, envs)}
        rows += score_rows(base, split, scores, [env_label(e) for e in envs])
    return ScoredFile(out, rows, append_rows(results_path(cfg), rows))


def _external_info(cfg: RunConfig, system: System, name: str, seed: int, declared: Mapping[str, float | None],
                   digest: str) -> dict[str, Any]:
    """What every row of an external model carries: its name and seed, the protocol it was scored
    under and, as its configuration, what the user declared of it (a declared budget is part of
    what makes two of its rows comparable)."""
    told = {f"declared_{k}": v for k, v in declared.items()}
    return {"run_id": f"external-{name}-s{seed}", "eval_id": uuid.uuid4().hex[:12], "time": now(),
            "system": system.name, "method": name, "external": True, "physics_aware": False, "seed": seed,
            "profile": cfg.profile, "protocol_key": protocol_key(cfg),
            "config_key": "external-" + config_hash({"name": name, **told}),
            "train_seconds": math.nan, "train_steps": None, "n_trained_params": None, **told,
            "predictions_sha256": digest, "git_commit": git_commit(), "config_hash": study_hash(cfg), "ckpt": None,
            "train_envs_key": envs_key(system, system.train_envs), "dt": system.dt, "horizon": system.horizon,
            "adapt_steps": None, "adapt_best_step": None, "adapt_seconds": None, "n_adapted_params": None}

"""Which trajectories a split holds, and the hashes that decide when its file is stale.

Splits of the training environments: ``train`` and ``val`` on ``[0, horizon]``, ``test`` on
``[0, 2*horizon]``. Each held-out set ``S`` gives ``adapt_S`` and ``val_S`` on ``[0, horizon]``
and ``test_S`` on ``[0, 2*horizon]``.

Two hashes: the *physics hash* (system, its config without the held-out sets, data seed) names
the cache directory shared by all splits; the *split hash* (stored as ``config_hash`` in each
file, and its first characters in the file name ``<split>-<split hash>.h5``) covers exactly what
generated that file. So a change generates only the files it affects, and two configurations
that differ only in trajectory counts (the ``quick`` and ``paper`` profiles) keep their own files
side by side instead of regenerating each other's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from leads.datasets.config import DataConfig
from leads.datasets.h5 import FORMAT_VERSION, SplitData
from leads.datasets.seeds import split_seeds
from leads.envs.base import Env, System
from leads.envs.errors import UserError

TRAINING_SPLITS = ("train", "val", "test")
HELDOUT_KINDS = ("adapt", "val", "test")
_SET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
SEED_SCHEME = "bitfield-xor-v1"


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a data config")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, default=_jsonable)


def _sha(text: str | bytes, n: int = 16) -> str:
    return hashlib.sha256(text.encode() if isinstance(text, str) else text).hexdigest()[:n]


def check_set_name(name: str) -> None:
    if not isinstance(name, str) or not _SET_NAME.fullmatch(name):
        raise UserError(
            f"held-out set name {name!r} must start with a letter or digit and hold only "
            "letters, digits, '_' or '-' (it becomes part of split and file names)"
        )


def split_names(system: System, extra_sets: Sequence[str] = ()) -> list[str]:
    """All split names of ``system``: training splits, then each held-out set (named, then extra)."""
    return run_split_names(list(system.heldout) + [s for s in extra_sets if s not in system.heldout])


def run_split_names(sets: Sequence[str]) -> list[str]:
    """The splits a run adapting to held-out ``sets`` uses: training splits, then each set's."""
    return list(TRAINING_SPLITS) + [f"{kind}_{s}" for s in sets for kind in HELDOUT_KINDS]


def parse_split(split: str) -> tuple[str, str | None]:
    """``"train"`` -> ``("train", None)``; ``"adapt_interp"`` -> ``("adapt", "interp")``."""
    if split in TRAINING_SPLITS:
        return split, None
    kind, sep, set_name = split.partition("_")
    if sep and kind in HELDOUT_KINDS and set_name:
        check_set_name(set_name)
        return kind, set_name
    raise UserError(
        f"unknown split '{split}'; use train, val, test or adapt_<set>, val_<set>, test_<set> "
        "for a held-out set"
    )


def physics_config(system: System, cfg: DataConfig) -> dict[str, Any]:
    """What every split of a dataset shares; its hash names the cache directory."""
    sys_cfg = {k: v for k, v in system.config.items() if k != "heldout"}
    out = {"system": system.name, "system_config": sys_cfg, "data_seed": cfg.seed}
    if system.data_version != 1:  # version 1 is implicit: caches made before versioning stay valid
        out["data_version"] = system.data_version
    return out


def physics_hash(system: System, cfg: DataConfig) -> str:
    return _sha(_dumps(physics_config(system, cfg)))


def split_file(system: System, cfg: DataConfig, spec: SplitSpec) -> Path:
    """``<dir>/<system>/<physics hash>/<split>-<split hash>.h5``."""
    return Path(cfg.dir) / system.name / physics_hash(system, cfg) / f"{spec.name}-{spec.meta.config_hash[:12]}.h5"


def split_path(system: System, cfg: DataConfig, split: str, envs: Sequence[Env] | None = None) -> Path:
    return split_file(system, cfg, split_spec(system, cfg, split, envs))


@dataclasses.dataclass
class SplitSpec:
    """Everything that determines the contents of one split file."""

    name: str
    kind: str
    set_name: str | None
    envs: list[Env]
    n_traj: int
    t: np.ndarray
    seeds: np.ndarray
    meta: SplitData
    state_shape: tuple[int, ...] = ()  # of one stored state: the system's, or its observation's (data.observe)

    @property
    def n_env(self) -> int:
        return len(self.envs)


def _heldout_envs(system: System, set_name: str, envs: Sequence[Env] | None) -> list[Env]:
    named = system.heldout.get(set_name)
    if envs is None:
        if named is None:
            known = ", ".join(system.heldout) or "none"
            raise UserError(
                f"held-out set '{set_name}' is not defined for {system.name} (known: {known}); "
                "give its environments to use a custom set"
            )
        return named
    envs = [dict(e) for e in envs]
    if not envs:
        raise UserError(f"custom held-out set '{set_name}' is empty; give at least one environment")
    if named is not None and system.env_tensor(envs).tolist() != system.env_tensor(named).tolist():
        raise UserError(
            f"held-out set '{set_name}' is already defined in system.heldout of {system.name} with "
            "other environments; choose another name for the custom set"
        )
    return envs


def split_spec(system: System, cfg: DataConfig, split: str, envs: Sequence[Env] | None = None) -> SplitSpec:
    """The spec of ``split``; ``envs`` gives the environments of a custom held-out set."""
    kind, set_name = parse_split(split)
    if set_name is None:
        if envs is not None:
            raise UserError(f"environments can only be given for held-out splits, not '{split}'")
        envs = system.train_envs
        n_traj = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test}[kind]
    else:
        envs = _heldout_envs(system, set_name, envs)
        n_traj = {"adapt": cfg.n_adapt, "val": cfg.n_adapt_val, "test": cfg.n_test_heldout}[kind]
    params = system.env_tensor(envs).numpy()
    t = system.times(2 * system.horizon if kind == "test" else system.horizon)
    seeds = split_seeds(cfg.seed, kind, set_name, len(envs), n_traj, cfg.same_initial_states)
    config = {
        "format_version": FORMAT_VERSION,
        **physics_config(system, cfg),
        "physics_hash": physics_hash(system, cfg),
        "split": split,
        "heldout_set": set_name,
        "envs": [{p: float(e[p]) for p in system.param_names} for e in envs],
        "n_traj": n_traj,
        "times": {"start": float(t[0]), "stop": float(t[-1]), "n_t": len(t), "sha256": _sha(t.tobytes())},
        "seed_scheme": SEED_SCHEME,
        "seeds_sha256": _sha(seeds.tobytes()),
        "state_shape": list(system.observed_shape(cfg.observe)),
        "solver": system.solver_description,
    }
    if cfg.observe is not None:  # only then: files made before observations existed keep their hash
        config["observe"] = cfg.observe
    meta = SplitData(
        system=system.name,
        split=split,
        config=config,
        config_hash=_sha(_dumps(config)),
        solver=system.solver_description,
        param_names=tuple(system.param_names),
        state_names=system.observed_names(cfg.observe),
        t=t,
        params=params,
        seeds=seeds,
        equations=system.describe_equations(),
    )
    return SplitSpec(split, kind, set_name, envs, n_traj, t, seeds, meta, system.observed_shape(cfg.observe))

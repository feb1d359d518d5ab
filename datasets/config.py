"""The ``data:`` section of a run config, checked once so the rest of the package can trust it."""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from leads.envs.errors import UserError


class ConfigKeyWarning(FutureWarning):
    """A configuration read by key (``cfg["train"]["lr"]``) rather than by attribute (``cfg.train.lr``).

    The typed attributes are the one way the package reads its configuration; reading by key
    still works, for scripts written against the YAML, with this warning naming the attribute.
    """


def warn_key_read(where: str, key: str) -> None:
    path = f"{where}.{key}" if where else key
    warnings.warn(f"configuration read by key ['{key}']: read it as an attribute, cfg.{path}", ConfigKeyWarning,
                  stacklevel=3)


# Seeds are packed into bit fields (see datasets/seeds.py); these bounds keep the fields disjoint.
MAX_TRAJ = 1 << 20
MAX_ENVS = 1 << 12


@dataclasses.dataclass(frozen=True)
class DataConfig(Mapping[str, Any]):
    """Validated data settings. Counts are trajectories per environment. Read by attribute
    (``cfg.n_train``); reading by key, as the ``data:`` mapping it came from, warns
    (``ConfigKeyWarning``)."""

    dir: Path = Path("data")
    seed: int = 0  # of the initial conditions (datasets/seeds.py)
    n_train: int = 1
    n_val: int = 1
    n_test: int = 8
    n_adapt: int = 8  # per held-out environment: the most shots adaptation can use
    n_adapt_val: int = 1  # per held-out environment, to stop adaptation (never a test trajectory)
    n_test_heldout: int = 8
    gen_batch_size: int = 256  # trajectories solved together when generating
    batch_size: int = 16
    window: int | None = None  # training window in observation steps; None: the whole training horizon
    num_workers: int = 0
    # every environment of a split starts from the same states (LEADS' and CoDA's ODE data)
    same_initial_states: bool = False
    observe: str | None = None  # a partial observation of the system (its ``observations``), e.g. ssh; None: all

    def __getitem__(self, key: str) -> Any:
        if key in _FIELDS:
            warn_key_read("data", key)
            return getattr(self, key)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(_FIELDS)

    def __len__(self) -> int:
        return len(_FIELDS)

    def to_dict(self) -> dict[str, Any]:
        """The plain form (``dir`` as a string), as saved with a run."""
        return {key: str(self.dir) if key == "dir" else getattr(self, key) for key in _FIELDS}


_FIELDS = tuple(f.name for f in dataclasses.fields(DataConfig))


_COUNTS = ("n_train", "n_val", "n_test", "n_adapt", "n_adapt_val", "n_test_heldout")
# Keys that must be >= 1 (the rest may be 0, e.g. no validation trajectories).
_POSITIVE = ("n_train", "gen_batch_size", "batch_size")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def parse_data_config(cfg: Mapping[str, Any] | DataConfig | None) -> DataConfig:
    """Check a ``data:`` mapping and fill defaults; raise ``UserError`` naming the bad key."""
    if isinstance(cfg, DataConfig):
        return cfg
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, Mapping):
        raise UserError(f"the data config must be a mapping of keys to values, got {type(cfg).__name__}")
    fields = set(_FIELDS)
    unknown = sorted(set(cfg) - fields)
    if unknown:
        raise UserError(f"unknown key 'data.{unknown[0]}'; known keys: {', '.join(sorted(fields))}")
    values: dict[str, Any] = {}
    for key, v in cfg.items():
        if key == "dir":
            if not isinstance(v, (str, os.PathLike)) or not str(v):
                raise UserError(f"data.dir={v!r} must be a non-empty path string")
            values[key] = Path(v)
        elif key == "same_initial_states":
            if not isinstance(v, bool):
                raise UserError(f"data.same_initial_states={v!r} must be true or false")
            values[key] = v
        elif key == "observe":
            if v is not None and (not isinstance(v, str) or not v):
                raise UserError(f"data.observe={v!r} must be the name of one of the system's observations, or null")
            values[key] = v
        elif key == "window":
            if v is not None and (not _is_int(v) or v < 1):
                raise UserError(f"data.window={v!r} must be a positive integer (observation steps) or null")
            values[key] = v
        else:
            if not _is_int(v):
                raise UserError(f"data.{key}={v!r} must be an integer")
            low = 1 if key in _POSITIVE else 0
            if v < low:
                raise UserError(f"data.{key}={v} must be >= {low}")
            if key in _COUNTS and v >= MAX_TRAJ:
                raise UserError(f"data.{key}={v} must be < {MAX_TRAJ} trajectories per environment")
            values[key] = v
    return DataConfig(**values)

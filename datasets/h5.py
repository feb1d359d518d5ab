"""One split on disk: the HDF5 layout of docs/data_format.md, written atomically, read back, validated."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from leads.datasets.atomic import atomic_write

FORMAT_VERSION = 1


@dataclasses.dataclass
class SplitData:
    """What a split file stores besides its states (numpy, as generated)."""

    system: str
    split: str
    config: dict[str, Any]  # the full generating config, stored as config_json
    config_hash: str
    solver: str
    param_names: tuple[str, ...]
    state_names: tuple[str, ...]
    t: np.ndarray  # float64 (n_t,)
    params: np.ndarray  # float64 (n_env, n_params)
    seeds: np.ndarray  # int64 (n_env, n_traj)
    equations: str = ""  # the equations as text (systems declared by a system file)


@dataclasses.dataclass
class Trajectories:
    """A split loaded in memory. ``states`` is float32 ``(n_env, n_traj, n_t, *state_shape)``."""

    t: torch.Tensor  # float64 (n_t,)
    params: torch.Tensor  # float64 (n_env, n_params)
    seeds: torch.Tensor  # int64 (n_env, n_traj)
    states: torch.Tensor  # float32
    attrs: dict[str, Any]

    @property
    def n_env(self) -> int:
        return int(self.states.shape[0])

    @property
    def n_traj(self) -> int:
        return int(self.states.shape[1])


def write_split(path: Path, meta: SplitData, states: np.ndarray) -> None:
    """Write a split to a temporary file in the same directory and rename it into place, so a
    reader sees either the old file or the complete new one, never a partial write."""
    with atomic_write(Path(path), ".h5.tmp") as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["system"] = meta.system
            f.attrs["split"] = meta.split
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["config_json"] = json.dumps(meta.config, sort_keys=True)
            f.attrs["config_hash"] = meta.config_hash
            f.attrs["solver"] = meta.solver
            if meta.equations:
                f.attrs["equations"] = meta.equations
            f.attrs["param_names"] = list(meta.param_names)
            f.attrs["state_names"] = list(meta.state_names)
            f.attrs["complete"] = False
            f.create_dataset("t", data=np.asarray(meta.t, dtype=np.float64))
            f.create_dataset("params", data=np.asarray(meta.params, dtype=np.float64))
            f.create_dataset("seeds", data=np.asarray(meta.seeds, dtype=np.int64))
            f.create_dataset("states", data=np.asarray(states, dtype=np.float32))
            f.flush()
            # Last, so that a file interrupted mid-write can never claim to be complete.
            f.attrs["complete"] = True


def _attr(value: Any) -> Any:
    """h5py attribute values as plain Python (bytes -> str, arrays -> lists, numpy scalars -> Python)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return [_attr(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


def read_attrs(f: h5py.File) -> dict[str, Any]:
    return {k: _attr(v) for k, v in f.attrs.items()}


# Files read in full and found finite, by (path, inode, size, mtime): each is read once per process.
_FINITE: set[tuple[str, int, int, int]] = set()


def _non_finite(path: Path, states: h5py.Dataset) -> str | None:
    """Generation never writes NaN or inf, so any here is damage (or a hand-edited file)."""
    st = os.stat(path)
    key = (str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _FINITE:
        return None
    for e in range(states.shape[0]):  # one environment at a time bounds the memory used
        bad = ~np.isfinite(states[e])
        if bad.any():
            return f"non-finite states ({int(bad.sum())} NaN/inf values in environment {e})"
    _FINITE.add(key)
    return None


def check_file(path: Path, expected: SplitData, state_shape: tuple[int, ...], n_traj: int) -> str | None:
    """Why ``path`` cannot be used for ``expected`` (one line), or None if it can."""
    path = Path(path)
    if not path.exists():
        return "missing"
    try:
        with h5py.File(path, "r") as f:
            attrs = read_attrs(f)
            if attrs.get("complete") is not True:
                return "incomplete (attribute complete is not True)"
            if attrs.get("format_version") != FORMAT_VERSION:
                return f"format_version {attrs.get('format_version')!r} != {FORMAT_VERSION}"
            for key in ("system", "split", "config_hash"):
                want = getattr(expected, key)
                if attrs.get(key) != want:
                    return f"stale: {key} {attrs.get(key)!r} != expected {want!r}"
            for name in ("t", "params", "seeds", "states"):
                if name not in f:
                    return f"dataset '{name}' missing"
            n_env = expected.params.shape[0]
            shapes = {
                "t": expected.t.shape,
                "params": expected.params.shape,
                "seeds": (n_env, n_traj),
                "states": (n_env, n_traj, len(expected.t), *state_shape),
            }
            for name, shape in shapes.items():
                if f[name].shape != tuple(shape):
                    return f"dataset '{name}' has shape {f[name].shape}, expected {tuple(shape)}"
            if f["states"].dtype != np.float32:
                return f"states dtype {f['states'].dtype}, expected float32"
            for name in ("t", "params", "seeds"):
                if not np.array_equal(f[name][()], getattr(expected, name)):
                    return f"dataset '{name}' differs from the config"
            if f["states"].size:
                # Touch the end of the data so a file cut short after its header is caught here.
                f["states"][(-1,) * f["states"].ndim]
                bad = _non_finite(path, f["states"])
                if bad:
                    return bad
    except Exception as e:  # any unreadable file is reported and replaced, whatever h5py raised
        return "unreadable: " + " ".join(f"{type(e).__name__}: {e}".split())
    return None


def load_split(path: str | os.PathLike[str], trajectories: int | None = None) -> Trajectories:
    """Read a split into memory: all of it, or its first trajectories per environment.

    Args:
        path: a split file, e.g. what ``ensure_split`` returns.
        trajectories: read only the first this many trajectories of each environment (all when
            None); ``states`` and ``seeds`` are cut alike.

    Returns:
        ``Trajectories``: ``states`` float32 ``(n_env, n_traj, n_t, *state_shape)``, ``t``,
        ``params`` (one row per environment), ``seeds`` and the file's attributes.
    """
    def read(name: str) -> np.ndarray:
        return f[name][()] if trajectories is None else f[name][:, :trajectories]

    with h5py.File(path, "r") as f:
        return Trajectories(
            t=torch.from_numpy(f["t"][()]),
            params=torch.from_numpy(f["params"][()]),
            seeds=torch.from_numpy(read("seeds")),
            states=torch.from_numpy(read("states")),
            attrs=read_attrs(f),
        )


def describe_split(path: str | os.PathLike[str]) -> str:
    """One line for humans: path, split, environments, shape, time span and solver."""
    with h5py.File(path, "r") as f:
        a = read_attrs(f)
        shape = f["states"].shape
        t = f["t"][()]
    span = f"t=[{t[0]:g}, {t[-1]:g}] ({len(t)} points)" if len(t) else "t=[]"
    return (
        f"{path}: {a.get('system')}/{a.get('split')}, {shape[0]} envs x {shape[1]} traj, "
        f"states {tuple(shape)} float32, {span}, solver: {a.get('solver')}"
    )

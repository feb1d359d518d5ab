"""Torch views of a split file: windows or whole trajectories, and an environment-balanced sampler."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import h5py
import torch
from torch.utils.data import Dataset, Sampler

from leads.envs.errors import UserError

# A split up to this size is read into memory once per process: reading each window from the file
# costs a fraction of a millisecond of CPU per item, as much as a training step of a small model
# takes (the quick Gray-Scott job read 12,000 windows).
IN_MEMORY_BYTES = 256 * 2**20


class WindowDataset(Dataset):
    """Every window of ``window`` observation steps (``window + 1`` points) of every trajectory.

    Item ``i`` is a dict: ``states`` float32 ``(window+1, *state_shape)``, ``t`` float32
    ``(window+1,)`` (absolute times, so forced systems see the right phase), ``env`` (int64,
    row of the split's ``params``) and ``traj``. ``window=None`` gives whole trajectories;
    ``n_traj`` keeps only the first ``n_traj`` trajectories of each environment.

    Items are laid out environment-major: environment ``e`` owns indices
    ``[e * items_per_env, (e + 1) * items_per_env)``; :class:`BalancedBatchSampler` relies on it.
    The HDF5 file is opened on first access in each process (a worker opens its own handle;
    no handle is ever pickled or shared across a fork); its trajectories are then read into memory
    if they fit in ``IN_MEMORY_BYTES``, else each window is read from the file.
    """

    def __init__(self, path: str | os.PathLike[str], window: int | None = None, n_traj: int | None = None):
        self.path = str(path)
        with h5py.File(self.path, "r") as f:
            self.t = torch.from_numpy(f["t"][()])
            n_env, avail = f["states"].shape[:2]
        n_t = len(self.t)
        self.window = n_t - 1 if window is None else int(window)
        if not 1 <= self.window <= n_t - 1:
            raise UserError(
                f"window of {self.window} steps does not fit trajectories of {n_t - 1} steps in {self.path}; "
                f"set data.window between 1 and {n_t - 1} (or null for whole trajectories)"
            )
        self.n_traj = avail if n_traj is None else int(n_traj)
        if not 0 <= self.n_traj <= avail:
            raise UserError(
                f"asked for {self.n_traj} trajectories per environment, {self.path} holds {avail}"
            )
        self.n_env = n_env
        self.n_starts = n_t - self.window
        self.items_per_env = self.n_traj * self.n_starts
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._memory: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.n_env * self.items_per_env

    def _window(self, env: int, traj: int, start: int, stop: int) -> torch.Tensor:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
            states = self._file["states"]
            used = states.nbytes * self.n_traj // max(states.shape[1], 1)
            self._memory = torch.from_numpy(states[:, : self.n_traj]) if used <= IN_MEMORY_BYTES else None
        if self._memory is not None:
            return self._memory[env, traj, start:stop].clone()  # not a view that would carry the split along
        return torch.from_numpy(self._file["states"][env, traj, start:stop])

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_file"] = None
        state["_pid"] = None
        state["_memory"] = None
        return state

    def index(self, i: int) -> tuple[int, int, int]:
        """``(env, traj, start)`` of item ``i``."""
        if not 0 <= i < len(self):
            raise IndexError(i)
        env, local = divmod(i, self.items_per_env)
        traj, start = divmod(local, self.n_starts)
        return env, traj, start

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        env, traj, start = self.index(int(i))
        stop = start + self.window + 1
        return {
            "states": self._window(env, traj, start, stop),
            "t": self.t[start:stop].to(torch.float32),
            "env": torch.tensor(env, dtype=torch.int64),
            "traj": torch.tensor(traj, dtype=torch.int64),
        }

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None
        self._memory = None


class BalancedBatchSampler(Sampler[list[int]]):
    """Batches holding exactly ``per_env`` items of every environment.

    Each epoch draws an independent permutation of each environment's items and cuts them into
    ``items_per_env // per_env`` batches (the remainder is dropped, so every batch is full and
    balanced). Shuffling is seeded by ``seed`` and the epoch (Lightning calls :meth:`set_epoch`;
    without it, each new iteration advances the epoch), so runs are reproducible.
    """

    class _EpochHook:
        # Lightning sets the epoch on ``batch_sampler.sampler``, not on the batch sampler itself.
        def __init__(self, owner: BalancedBatchSampler):
            self.set_epoch = owner.set_epoch

    def __init__(self, n_env: int, items_per_env: int, per_env: int, seed: int = 0, shuffle: bool = True):
        if n_env < 1 or items_per_env < 1:
            raise UserError("the training split is empty; set data.n_train >= 1")
        self.n_env = n_env
        self.items_per_env = items_per_env
        self.per_env = max(1, min(per_env, items_per_env))
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0
        self._epoch_set = False
        self.sampler = self._EpochHook(self)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self._epoch_set = True

    def __len__(self) -> int:
        return self.items_per_env // self.per_env

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            perms = [torch.randperm(self.items_per_env, generator=g) for _ in range(self.n_env)]
        else:
            perms = [torch.arange(self.items_per_env)] * self.n_env
        if not self._epoch_set:
            self.epoch += 1
        self._epoch_set = False
        k = self.per_env
        for b in range(len(self)):
            chunks = [perms[e][b * k : (b + 1) * k] + e * self.items_per_env for e in range(self.n_env)]
            yield torch.cat(chunks).tolist()

"""Initial-condition seeds that can never repeat across the splits and environments of a dataset.

A seed packs ``(set id, kind, env, traj)`` into disjoint bit fields of a 63-bit integer, so two
different positions always get different raw values. The data seed enters through an XOR with a
63-bit mask derived from it: XOR by a constant is a bijection, so it keeps every value distinct
while making datasets with different data seeds draw different initial conditions.

Layout (most significant first): 29 bits set id | 2 bits kind | 12 bits env | 20 bits traj.
Set id 0 is the training environments; a held-out set's id is a hash of its name, which depends
on nothing else, so adding a held-out set never changes the seeds (hence the files) of another.
Two set names could in principle hash to the same id; ``check_disjoint`` turns that into an error
instead of silently sharing initial conditions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import numpy as np

from leads.datasets.config import MAX_ENVS, MAX_TRAJ
from leads.envs.errors import UserError

TRAJ_BITS = 20
ENV_BITS = 12
KIND_BITS = 2
SET_BITS = 29
assert (1 << TRAJ_BITS) == MAX_TRAJ and (1 << ENV_BITS) == MAX_ENVS
assert TRAJ_BITS + ENV_BITS + KIND_BITS + SET_BITS == 63

# Position of a split among the splits sharing one set of environments.
KIND_CODES = {"train": 0, "adapt": 0, "val": 1, "test": 2}
_MASK63 = (1 << 63) - 1


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


def set_id(set_name: str | None) -> int:
    """0 for the training environments, a name hash in ``[1, 2**29)`` for a held-out set."""
    if set_name is None:
        return 0
    return 1 + _digest(f"heldout-set:{set_name}") % ((1 << SET_BITS) - 1)


def seed_mask(data_seed: int) -> int:
    return _digest(f"data-seed:{data_seed}") & _MASK63


def split_seeds(data_seed: int, kind: str, set_name: str | None, n_env: int, n_traj: int,
                same_across_envs: bool = False) -> np.ndarray:
    """Seeds of one split, int64 ``(n_env, n_traj)``; row ``e`` belongs to environment ``e``.
    With ``same_across_envs`` every row is environment 0's: all environments start from the same
    initial states (LEADS' and CoDA's ODE data), still never those of another split."""
    if n_env > MAX_ENVS:
        raise UserError(f"a split may hold at most {MAX_ENVS} environments, got {n_env}")
    if n_traj > MAX_TRAJ:
        raise UserError(f"a split may hold at most {MAX_TRAJ} trajectories per environment, got {n_traj}")
    high = (set_id(set_name) << KIND_BITS | KIND_CODES[kind]) << (ENV_BITS + TRAJ_BITS)
    env = (np.zeros if same_across_envs else np.arange)(n_env, dtype=np.int64)[:, None] << TRAJ_BITS
    traj = np.arange(n_traj, dtype=np.int64)[None, :]
    return (np.int64(high) | env | traj) ^ np.int64(seed_mask(data_seed))


def check_disjoint(seeds: Mapping[str, np.ndarray]) -> None:
    """Raise ``UserError`` if any seed appears in two of the given splits (within one split,
    environments may share their initial states on purpose)."""
    names = list(seeds)
    flat = [np.unique(np.asarray(seeds[n], dtype=np.int64)) for n in names]
    if not flat:
        return
    allseeds = np.concatenate(flat)
    uniq, counts = np.unique(allseeds, return_counts=True)
    if (counts == 1).all():
        return
    dup = uniq[counts > 1][0]
    owners = [n for n, f in zip(names, flat, strict=True) if (f == dup).any()]
    raise UserError(
        f"splits {', '.join(owners)} would share initial-condition seeds (held-out set names "
        f"collide in the seed hash); rename one of the held-out sets"
    )

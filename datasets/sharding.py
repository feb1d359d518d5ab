"""The training sampler of a DDP rank or of a run resumed mid-epoch.

Under DDP every rank draws the same balanced global batch (same seed, same epoch) and keeps
the items at positions ``rank, rank + world_size, ...`` of it: the ranks' shares are disjoint,
equal in size (so DDP's mean of the ranks' gradients is the gradient of the global batch's
mean loss) and, as the global batch is environment-major, each share is itself as balanced
as its size allows. The effective batch is exactly the single-process batch.

A run resumed from a checkpoint written mid-epoch skips the batches of that epoch it already
trained on, so it sees the batches an uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from leads.datasets.torch_data import BalancedBatchSampler
from leads.envs.errors import UserError


class ShardedBalancedBatchSampler(BalancedBatchSampler):
    """:class:`BalancedBatchSampler` whose batches are rank ``rank``'s share of the global batch,
    leaving out the first ``skip`` batches of the first epoch it is iterated for."""

    def __init__(self, n_env: int, items_per_env: int, per_env: int, seed: int = 0, shuffle: bool = True,
                 rank: int = 0, world_size: int = 1, skip: int = 0):
        super().__init__(n_env, items_per_env, per_env, seed=seed, shuffle=shuffle)
        size = n_env * self.per_env
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not one of world size {world_size}")
        if size % world_size:
            raise UserError(
                f"a training batch of {n_env} environments x {self.per_env} items = {size} cannot be shared "
                f"equally by {world_size} processes; set data.batch_size to a multiple of "
                f"{n_env * world_size} (or change the number of devices)"
            )
        self.rank = rank
        self.world_size = world_size
        # A checkpoint written at the end of an epoch resumes at the start of the next one.
        self.skip = int(skip) % max(len(self), 1)

    def __iter__(self) -> Iterator[list[int]]:
        # Read when iteration starts, not when the iterator is created: Lightning creates it
        # before it sets the epoch.
        skip, self.skip = self.skip, 0
        for b, batch in enumerate(super().__iter__()):
            if b >= skip:
                yield batch[self.rank :: self.world_size]


def trainer_position(trainer: Any) -> tuple[int, int, int]:
    """``(rank, world_size, batches of the current epoch already trained)`` of a Lightning
    trainer, restored from its checkpoint when resuming; ``(0, 1, 0)`` without one."""
    if trainer is None:
        return 0, 1, 0
    done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
    return int(trainer.global_rank), int(trainer.world_size), int(done)

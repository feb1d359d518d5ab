"""LightningDataModule over the cached splits of one system."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from leads.datasets.cache import ensure_dataset, ensure_split
from leads.datasets.config import DataConfig, parse_data_config
from leads.datasets.sharding import ShardedBalancedBatchSampler, trainer_position
from leads.datasets.splits import HELDOUT_KINDS, check_set_name, split_names
from leads.datasets.torch_data import WindowDataset
from leads.envs.base import Env, System
from leads.envs.errors import UserError


def check_window(system: System, cfg: DataConfig) -> None:
    """A training window must fit in the training horizon of ``system``, and ``data.observe``
    must name one of its observations."""
    system.check_observation(cfg.observe)
    steps = len(system.times()) - 1
    if cfg.window is not None and cfg.window > steps:
        raise UserError(f"data.window={cfg.window} exceeds the {steps} observation steps of the "
                        f"{system.name} training horizon; lower it or set it to null")


class TrajectoryDataModule(pl.LightningDataModule):
    """Train / val / test loaders over the training environments, plus held-out loaders.

    Batches are dicts (see :class:`WindowDataset`): ``states`` ``(B, L, *state_shape)`` float32,
    ``t`` ``(B, L)`` float32, ``env`` ``(B,)`` int64, ``traj`` ``(B,)``. ``env`` is the position in
    ``system.train_envs`` for train/val/test and in the held-out set for held-out loaders.

    - train: windows of ``data.window`` steps (``L = window + 1`` points; whole training
      trajectories if null), shuffled, every batch holding ``max(1, batch_size // n_env)`` items
      of each environment (capped by the items an environment has), so a batch may differ from
      ``batch_size`` when it is not a multiple of the number of environments.
    - val / test / held-out: whole trajectories in file order, ``batch_size`` per batch.

    ``custom_heldout`` adds held-out sets ``{name: [env, ...]}`` cached like the system's own.
    ``splits`` names the splits ``prepare_data`` and ``setup`` generate when missing (default:
    every split); any other is generated on first use (``path``), so a run that adapts to one
    held-out set never solves the others.
    """

    def __init__(
        self,
        system: System,
        data_cfg: Mapping[str, Any] | DataConfig | None,
        custom_heldout: Mapping[str, Sequence[Env]] | None = None,
        *,
        progress: bool | None = None,
        device: str | torch.device | None = None,
        splits: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.system = system
        self.cfg = parse_data_config(data_cfg)
        self.custom_heldout = {k: [dict(e) for e in v] for k, v in (custom_heldout or {}).items()}
        for name in self.custom_heldout:
            check_set_name(name)
        self.progress = progress
        self.device = device
        self.splits = None if splits is None else list(splits)
        check_window(system, self.cfg)
        self.paths: dict[str, Path] = {}

    @property
    def heldout_sets(self) -> dict[str, list[Env]]:
        """Every held-out set: the system's, then the custom ones."""
        return {**self.system.heldout, **self.custom_heldout}

    @property
    def split_names(self) -> list[str]:
        return split_names(self.system, list(self.custom_heldout))

    def _ensure_all(self) -> dict[str, Path]:
        custom, progress, device = self.custom_heldout, self.progress, self.device
        return ensure_dataset(self.system, self.cfg, self.splits, custom_heldout=custom, progress=progress,
                              device=device)

    def prepare_data(self) -> None:
        self._ensure_all()

    def setup(self, stage: str | None = None) -> None:
        # Cheap when prepare_data already ran: every file is only checked.
        self.paths.update(self._ensure_all())

    def path(self, split: str) -> Path:
        """Path of a split's file, generating it on first use if setup has not run."""
        if split not in self.paths:
            _, _, set_name = split.partition("_")
            envs = self.custom_heldout.get(set_name) if split not in ("train", "val", "test") else None
            self.paths[split] = ensure_split(
                self.system, self.cfg, split, envs, progress=self.progress, device=self.device
            )
        return self.paths[split]

    def _loader(self, dataset: WindowDataset, **kwargs: Any) -> DataLoader:
        workers = self.cfg.num_workers
        return DataLoader(dataset, num_workers=workers, persistent_workers=workers > 0, **kwargs)

    def _whole(self, split: str, n_traj: int | None = None) -> DataLoader:
        ds = WindowDataset(self.path(split), window=None, n_traj=n_traj)
        return self._loader(ds, batch_size=self.cfg.batch_size, shuffle=False)

    def train_dataloader(self) -> DataLoader:
        ds = WindowDataset(self.path("train"), window=self.cfg.window)
        per_env = max(1, self.cfg.batch_size // ds.n_env)
        # Under DDP each rank takes its share of the global batch; a resumed run skips what it trained on.
        rank, world, done = trainer_position(self.trainer)
        sampler = ShardedBalancedBatchSampler(ds.n_env, ds.items_per_env, per_env, seed=self.cfg.seed,
                                              rank=rank, world_size=world, skip=done)
        return self._loader(ds, batch_sampler=sampler)

    def val_dataloader(self) -> DataLoader:
        return self._whole("val")

    def test_dataloader(self) -> DataLoader:
        return self._whole("test")

    def heldout_dataloader(self, set_name: str, kind: str, n_traj: int | None = None) -> DataLoader:
        """Whole trajectories of held-out set ``set_name``; ``kind`` is adapt, val or test;
        ``n_traj`` keeps the first ``n_traj`` trajectories of each environment (k-shot adaptation)."""
        if kind not in HELDOUT_KINDS:
            raise UserError(f"held-out loader kind '{kind}' must be one of {', '.join(HELDOUT_KINDS)}")
        if set_name not in self.heldout_sets:
            known = ", ".join(self.heldout_sets) or "none"
            raise UserError(f"unknown held-out set '{set_name}' for {self.system.name}; known: {known}")
        return self._whole(f"{kind}_{set_name}", n_traj)

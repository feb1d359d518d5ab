"""Trajectories on disk: generation, HDF5 cache, reading, and the LightningDataModule.

>>> from envs import get_system
>>> from datasets import ensure_dataset, load_split
>>> paths = ensure_dataset(get_system("lotka_volterra"), {"dir": "data", "n_train": 4})
>>> train = load_split(paths["train"])  # train.states: (n_env, n_traj, n_t, *state_shape)

(This package shadows the Hugging Face ``datasets`` package inside this repository.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from datasets.cache import SplitStatus, ensure_dataset, ensure_split, prepare_split
from datasets.config import DataConfig, parse_data_config
from datasets.h5 import FORMAT_VERSION, Trajectories, describe_split, load_split
from datasets.splits import parse_split, split_names, split_path
from datasets.torch_data import BalancedBatchSampler, WindowDataset

if TYPE_CHECKING:
    from datasets.datamodule import TrajectoryDataModule


def __getattr__(name: str) -> Any:
    # Lightning takes seconds to import; generating or reading data should not pay for it.
    if name == "TrajectoryDataModule":
        from datasets.datamodule import TrajectoryDataModule

        return TrajectoryDataModule
    raise AttributeError(f"module 'datasets' has no attribute {name!r}")

__all__ = [
    "FORMAT_VERSION",
    "BalancedBatchSampler",
    "DataConfig",
    "SplitStatus",
    "Trajectories",
    "TrajectoryDataModule",
    "WindowDataset",
    "describe_split",
    "ensure_dataset",
    "ensure_split",
    "load_split",
    "parse_data_config",
    "parse_split",
    "prepare_split",
    "split_names",
    "split_path",
]

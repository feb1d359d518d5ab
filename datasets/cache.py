"""The on-disk cache: ``<dir>/<system>/<physics hash>/<split>-<split hash>.h5``, checked, locked, regenerated.

A usable file is returned as is. A missing one is generated; an unusable one (incomplete,
stale, wrong shape, unreadable) is reported in one warning line and regenerated. Generation
holds an exclusive ``fcntl`` lock on ``<split>.h5.lock`` and re-checks the file after acquiring
it, so concurrent processes asking for the same split generate it once and never see a
partial file (files are written to a temporary name and renamed into place).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from leads.datasets.config import DataConfig, parse_data_config
from leads.datasets.generate import generate_states
from leads.datasets.h5 import check_file, load_split, write_split
from leads.datasets.seeds import check_disjoint
from leads.datasets.splits import SplitSpec, check_set_name, parse_split, split_file, split_names, split_spec
from leads.envs.base import Env, System

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class SplitStatus:
    """Result of :func:`prepare_split`: where the split is, and whether this call generated it
    (``reason`` says why: ``"missing"`` or what was wrong with the old file)."""

    path: Path
    generated: bool
    reason: str | None = None


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock on ``<path>.lock``, shared by every process that locks the same file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _remove_stale_temps(path: Path) -> None:
    # Only called under the split's lock, so any temporary file left is from a crashed writer.
    for tmp in path.parent.glob(f".{path.stem}.*.h5.tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _check(system: System, spec: SplitSpec, path: Path) -> str | None:
    return check_file(path, spec.meta, spec.state_shape, spec.n_traj)


def _all_specs(
    system: System, cfg: DataConfig, custom: Mapping[str, Sequence[Env]]
) -> dict[str, SplitSpec]:
    specs = {}
    for name in split_names(system, list(custom)):
        _, set_name = parse_split(name)
        specs[name] = split_spec(system, cfg, name, custom.get(set_name) if set_name else None)
    check_disjoint({n: s.seeds for n, s in specs.items()})
    return specs


def _prepare(
    system: System, cfg: DataConfig, spec: SplitSpec, progress: bool | None, device: Any
) -> SplitStatus:
    path = split_file(system, cfg, spec)
    if _check(system, spec, path) is None:
        return SplitStatus(path, False)
    with file_lock(path):
        # Another process may have generated the file while this one waited for the lock.
        reason = _check(system, spec, path)
        if reason is None:
            return SplitStatus(path, False)
        if reason != "missing":
            log.warning("%s: %s; regenerating it", path, reason)
        _remove_stale_temps(path)
        if cfg.observe is None:
            states = generate_states(system, spec, cfg.gen_batch_size, progress=progress, device=device)
        else:
            states = _observed(system, cfg, spec, progress, device)
        write_split(path, spec.meta, states)
    return SplitStatus(path, True, reason)


def _observed(system: System, cfg: DataConfig, spec: SplitSpec, progress: bool | None, device: Any) -> np.ndarray:
    """A partial observation's split, computed from the stored split of the whole state (made
    first if missing): the two hold the same trajectories, solved once."""
    full_cfg = dataclasses.replace(cfg, observe=None)
    full_spec = split_spec(system, full_cfg, spec.name, spec.envs if spec.set_name else None)
    data = load_split(_prepare(system, full_cfg, full_spec, progress, device).path)
    out = [system.observe(data.states[e].double(), data.params[e:e + 1].expand(data.n_traj, -1), cfg.observe)
           .float().numpy() for e in range(data.n_env)]
    return np.stack(out) if out else np.zeros((0, spec.n_traj, len(spec.t), *spec.state_shape), np.float32)


def prepare_split(
    system: System,
    data_cfg: Mapping[str, Any] | DataConfig | None,
    split: str,
    envs: Sequence[Env] | None = None,
    *,
    progress: bool | None = None,
    device: str | torch.device | None = None,
) -> SplitStatus:
    """Make sure ``split`` is cached and valid; say whether it had to be generated.

    ``envs`` defines a custom held-out set (``split`` is then ``adapt_<name>``, ``val_<name>`` or
    ``test_<name>``); it is cached exactly like a set of ``system.heldout``.
    """
    cfg = parse_data_config(data_cfg)
    spec = split_spec(system, cfg, split, envs)
    # Seeds are checked against every other split of the dataset, not just this one.
    _all_specs(system, cfg, {spec.set_name: spec.envs} if spec.set_name else {})
    return _prepare(system, cfg, spec, progress, device)


def ensure_split(system: System, data_cfg: Mapping[str, Any] | DataConfig | None, split: str,
                 envs: Sequence[Env] | None = None, **options: Any) -> Path:
    """Path of the valid cached file of ``split``, generating it first if needed.

    Args and ``options`` (``progress``, ``device``) are those of ``prepare_split``.
    """
    return prepare_split(system, data_cfg, split, envs, **options).path


def ensure_dataset(
    system: System,
    data_cfg: Mapping[str, Any] | DataConfig | None,
    splits: Sequence[str] | None = None,
    custom_heldout: Mapping[str, Sequence[Env]] | None = None,
    *,
    progress: bool | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Path]:
    """Cache several splits (default: all splits of ``system`` and of ``custom_heldout``)."""
    cfg = parse_data_config(data_cfg)
    custom = dict(custom_heldout or {})
    for name in custom:
        check_set_name(name)
    specs = _all_specs(system, cfg, custom)
    wanted = list(specs) if splits is None else list(splits)
    paths = {}
    for name in wanted:
        spec = specs.get(name)
        if spec is None:
            spec = split_spec(system, cfg, name)  # raises the UserError explaining what is wrong
        paths[name] = _prepare(system, cfg, spec, progress, device).path
    return paths

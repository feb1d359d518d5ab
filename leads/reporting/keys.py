"""What makes two result rows comparable: the protocol key and the configuration key.

- The **protocol key** hashes what a score is measured on: the system with every setting of
  its ``system:`` section (environments, observation step, horizon, solver), and the data a
  model may see or is tested on (data seed, training, validation and test trajectories per
  environment, adaptation validation trajectories, whether environments share initial
  states). Profiles that differ only in how they train (a published setting and its CPU
  recipes) share it, so their rows are one leaderboard. A partial observation
  (``data.observe``, e.g. sea surface height only) is part of it, and so is the system's
  ``data_version`` above 1 (data a code change made differently are another protocol's). Held-out
  sets and shots are not in it: every row names its own (``split``, ``set_envs_key``, ``shots``).
- The **configuration key** hashes how a model was trained and adapted: the whole run
  configuration except the seed (seeds of one configuration are averaged), the profile's name
  (two profiles with the same settings are one configuration), bookkeeping (directories,
  devices, loggers), ``train.compile`` (the same values, computed faster) and the held-out
  sets and shots (named by each row). A leaderboard line never mixes two of them.

Rows written before these keys existed get them derived from their profile (``derive_keys``):
the protocol key of the profile as configured now (of the profile that replaced it, with its
``--set``, for a profile that was replaced), and a configuration key that groups runs of one
profile and training budget; such rows are marked ``keys_derived`` and the leaderboard says so.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from leads.config.loading import CONFIG_DIR, config_hash, load_config, load_yaml
from leads.config.schema import RunConfig, plain
from leads.envs.errors import UserError
from leads.envs.registry import data_version

PROTOCOL_DATA = ("seed", "n_train", "n_val", "n_test", "n_adapt_val", "n_test_heldout", "same_initial_states")
# Keys that say where and how a run was executed, not what it computed.
BOOKKEEPING = ("run_name", "device", "devices", "num_nodes", "strategy", "threads", "logger", "wandb",
               "runs_dir", "results_dir")
# Rows with the same values of these (the same run and configuration under the same protocol) are
# one evaluation's: a new evaluation replaces them (leads.reporting.results.append_rows).
IDENTITY = ("run_id", "protocol_key", "config_key", "kind", "split", "shots", "set_envs_key")


def protocol_key(cfg: RunConfig) -> str:
    """The hash of what ``cfg``'s scores are measured on (module docstring)."""
    data = {k: getattr(cfg.data, k) for k in PROTOCOL_DATA}
    if cfg.data.observe is not None:  # only when set: keys of runs of the whole state stay as they were
        data["observe"] = cfg.data.observe
    version = data_version(cfg.system_name)
    if version != 1:  # data of another version are another protocol's
        data["data_version"] = version
    return config_hash({"system_name": cfg.system_name, "system": cfg.system, "data": data})


def config_key(cfg: RunConfig) -> str:
    """The hash of how ``cfg`` trains and adapts a model (module docstring)."""
    ident = {k: v for k, v in plain(cfg).items() if k not in (*BOOKKEEPING, "seed", "profile")}
    ident["data"] = {k: v for k, v in ident["data"].items() if k not in ("dir", "num_workers", "gen_batch_size")}
    ident["train"] = {k: v for k, v in ident["train"].items() if k != "compile"}
    ident["adapt"] = {k: v for k, v in ident["adapt"].items() if k not in ("sets", "shots")}
    return config_hash(ident)


def identity(row: Mapping[str, Any]) -> tuple:
    """The evaluation a row belongs to: (run, protocol, configuration, kind, split, shots, set)."""
    return tuple(row.get(k) for k in IDENTITY)


@dataclass(frozen=True)
class ProtocolId:
    """One protocol of a system: its key, a name (the shortest profile that follows it) and
    every profile of ``configs/<system>.yaml`` that follows it."""

    system: str
    key: str
    name: str
    profiles: tuple[str, ...]


def system_profiles(system: str) -> list[str]:
    """The profiles of ``configs/<system>.yaml``, in file order (none if it has no file)."""
    path = CONFIG_DIR / f"{system}.yaml"
    if not path.is_file():
        return []
    profiles = load_yaml(path).get("profiles") or {}
    return list(profiles) if isinstance(profiles, dict) else []


def _replaced(system: str, profile: str) -> tuple[str, list[str]] | None:
    """The profile that replaced ``profile`` and the ``--set`` that reruns it (``replaced_profiles``
    of ``configs/<system>.yaml``), if it was replaced."""
    path = CONFIG_DIR / f"{system}.yaml"
    entry = (load_yaml(path).get("replaced_profiles") or {}).get(profile) if path.is_file() else None
    if not isinstance(entry, dict) or not entry.get("by"):
        return None
    return str(entry["by"]), [str(s) for s in entry.get("set") or []]


@functools.lru_cache(maxsize=256)
def _profile_key(system: str, profile: str) -> str | None:
    try:
        return protocol_key(load_config(system, profile))
    except UserError:  # a profile that was replaced, or one that no longer exists or cannot be loaded
        pass
    try:
        replaced = _replaced(system, profile)
        return None if replaced is None else protocol_key(load_config(system, replaced[0], replaced[1]))
    except UserError:
        return None


@functools.lru_cache(maxsize=64)
def protocols_of(system: str) -> tuple[ProtocolId, ...]:
    """Every protocol the profiles of ``system`` follow."""
    by_key: dict[str, list[str]] = {}
    for profile in system_profiles(system):
        key = _profile_key(system, profile)
        if key is not None:
            by_key.setdefault(key, []).append(profile)
    return tuple(ProtocolId(system, key, min(names, key=lambda p: (len(p), p)), tuple(names))
                 for key, names in by_key.items())


def protocol_of(cfg: RunConfig) -> ProtocolId:
    """The protocol ``cfg`` follows, named after the system's profiles that follow it too (or
    after ``cfg``'s own profile when none does: data settings changed with ``--set``)."""
    key = protocol_key(cfg)
    for p in protocols_of(cfg.system_name):
        if p.key == key:
            return p
    return ProtocolId(cfg.system_name, key, f"{cfg.profile}-{key[:6]}", (cfg.profile,))


def profile_protocol_key(system: str, profile: str) -> str | None:
    """The protocol key of ``system``'s profile as configured now; None if it does not exist."""
    return _profile_key(system, profile)


def derive_keys(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows``, each with a ``protocol_key`` and a ``config_key``; rows written before they were
    recorded get them derived from their profile and training steps, marked ``keys_derived``."""
    out = []
    for r in rows:
        if r.get("protocol_key") and r.get("config_key"):
            out.append(r)
            continue
        r = dict(r)
        profile = str(r.get("profile"))
        if not r.get("protocol_key"):
            r["protocol_key"] = _profile_key(str(r.get("system")), profile) or f"profile:{profile}"
        if not r.get("config_key"):
            r["config_key"] = f"derived:{profile}:{r.get('train_steps')}"
        r["keys_derived"] = True
        out.append(r)
    return out

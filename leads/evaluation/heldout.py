"""Held-out environment sets: which environments to adapt to, and adapting + scoring on one set.

A set is named by a string, with one grammar for ``--heldout`` on the command line and for the
entries of ``adapt.sets`` in a config:

- ``interp``: a set the system defines (``system.heldout``);
- ``F=0.045,k=0.064``: one environment; ``;`` separates several; parameters the system has
  defaults for (``param_defaults``) may be left out;
- ``hot:F=0.045,k=0.064;F=0.05,k=0.06``: the same, naming the set (otherwise it is named
  ``custom-<hash of its environments>``, so different sets never share cached files);
- ``sets.yaml``: a YAML file mapping set names to environment lists.

In YAML an entry of ``adapt.sets`` may also be a mapping ``{name: [{F: 0.045, k: 0.064}]}``.
Custom sets are generated and cached like named ones (``adapt_<name>``, ``val_<name>``,
``test_<name>``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from leads.config.loading import system_of
from leads.config.schema import RunConfig
from leads.datasets.cache import ensure_split
from leads.datasets.h5 import Trajectories, load_split
from leads.datasets.splits import check_set_name
from leads.envs.base import Env, System, env_label, envs_key
from leads.envs.errors import UserError
from leads.evaluation.adaptation import (
    Adapted,
    adapt_to_new_environments,
    split_environments,
    stacked_by_environment,
    validation_errors_by_env,
)
from leads.evaluation.identification import Identified, identify, poor_fits
from leads.evaluation.scoring import Scores, score
from leads.models.forecaster import Forecaster


def _number(text: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{where}: '{text}' is not a number") from None
    if not math.isfinite(value):
        raise UserError(f"{where}: parameter values must be finite numbers, got '{text}'")
    return value


def parse_env(system: System, text: str, where: str) -> Env:
    """``"F=0.045,k=0.064"`` -> a complete, range-checked environment of ``system``."""
    env: Env = {}
    for item in text.split(","):
        key, sep, value = (s.strip() for s in item.partition("="))
        if not sep or not key:
            raise UserError(f"{where}: '{item.strip()}' must look like name=value (e.g. "
                            f"{system.param_names[0]}=0.5); separate parameters with ',' and environments with ';'")
        if key not in system.param_names:
            raise UserError(f"{where}: unknown parameter '{key}' for {system.name}; "
                            f"its parameters are {', '.join(system.param_names)}")
        if key in env:
            raise UserError(f"{where}: parameter '{key}' is given twice")
        env[key] = _number(value, where)
    try:
        system.check_env(env)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None
    return system.complete_env(env)


def _parse_envs(system: System, value: Any, where: str) -> list[Env]:
    if isinstance(value, str):
        envs = [parse_env(system, part, where) for part in value.split(";") if part.strip()]
    elif isinstance(value, list) and all(isinstance(e, Mapping) for e in value):
        envs = [parse_env(system, ",".join(f"{k}={v}" for k, v in e.items()), where) for e in value]
    else:
        raise UserError(f"{where}: give environments as 'p=v,...;p=v,...' or a list of mappings")
    if not envs:
        raise UserError(f"{where}: no environment given")
    return envs


def _from_yaml(system: System, path: Path) -> dict[str, list[Env]]:
    from leads.config.loading import load_yaml

    if not path.is_file():
        raise UserError(f"held-out set file {path} does not exist")
    return {str(name): _parse_envs(system, envs, f"{path}, set '{name}'") for name, envs in load_yaml(path).items()}


def parse_sets(system: System, entry: Any) -> dict[str, list[Env]]:
    """One ``--heldout`` / ``adapt.sets`` entry -> ``{set name: environments}``."""
    if isinstance(entry, Mapping):
        return {str(k): _parse_envs(system, v, f"held-out set '{k}'") for k, v in entry.items()}
    if not isinstance(entry, str) or not entry.strip():
        raise UserError(f"held-out set {entry!r} must be a set name, 'p=v,...' environments or a YAML file")
    text = entry.strip()
    if text.endswith((".yaml", ".yml")):
        return _from_yaml(system, Path(text))
    if "=" not in text:
        if text in system.param_names:
            raise UserError(f"held-out set '{text}': give the parameter a value, e.g. {text}=0.5")
        if text not in system.heldout:
            raise UserError(f"unknown held-out set '{text}' for {system.name} (known: "
                            f"{', '.join(system.heldout) or 'none'}); or give environments, e.g. "
                            f"--heldout '{system.param_names[0]}=0.5'")
        return {text: system.heldout[text]}
    name, sep, spec = text.partition(":")
    if not sep:
        name, spec = "", text
    envs = _parse_envs(system, spec, f"held-out set '{text}'")
    return {name.strip() or f"custom-{envs_key(system, envs)}": envs}


def resolve_sets(system: System, entries: list[Any]) -> dict[str, list[Env]]:
    """All held-out sets of ``entries``, in order, checked for clashing names."""
    out: dict[str, list[Env]] = {}
    for entry in entries:
        for name, envs in parse_sets(system, entry).items():
            check_set_name(name)
            clash = out.get(name, system.heldout.get(name))
            if clash is not None and envs_key(system, clash) != envs_key(system, envs):
                raise UserError(f"held-out set '{name}' is given with two different environment lists; "
                                "name the custom set differently")
            out[name] = envs
    return out


def heldout_sets(cfg: RunConfig) -> dict[str, list[Env]]:
    return resolve_sets(system_of(cfg), list(cfg.adapt.sets))


@dataclass
class SetResult:
    """Adaptation to one held-out set and its scores on that set's test trajectories."""

    name: str
    envs: list[Env]
    scores: Scores
    adapted: Adapted
    test: Trajectories | None  # kept for figures; None where not needed
    identified: list[dict[str, Identified]] | None = None  # per environment, for learned physical parameters
    # per environment: fitted POOR_FIT times worse on its validation trajectories than the model
    # fits its training environments (leads.evaluation.identification)
    poor_fit: list[bool] | None = None
    reference_val_rel_l2: float = math.nan  # the model's validation error on its training environments


def _load(system: System, cfg: RunConfig, split: str, name: str, envs: list[Env]) -> Trajectories:
    named = name in system.heldout
    return load_split(ensure_split(system, cfg.data, split, None if named else envs))


def in_domain_val_error(module: Forecaster, cfg: RunConfig) -> float:
    """``module``'s mean validation relative L2 on its training environments (the ``val``
    split): the reference a new environment's fit is compared with."""
    val = load_split(ensure_split(system_of(cfg), cfg.data, "val"))
    device = module.u_mean.device
    x = val.states.flatten(0, 1).to(device)
    env = torch.arange(val.states.shape[0], device=device).repeat_interleave(val.states.shape[1])
    t = torch.as_tensor(val.t, dtype=x.dtype, device=device)
    return float(validation_errors_by_env(module, x, t, env, val.states.shape[0]).mean())


def evaluate_heldout(module: Forecaster, cfg: RunConfig, name: str, envs: list[Env] | None = None,
                     shots: int | None = None, keep_test: bool = True, progress: bool | None = None,
                     reference: float | None = None) -> SetResult:
    """Adapt on ``adapt_<name>`` (stopping on ``val_<name>``), then score on ``test_<name>``.

    The test file is read only once adaptation is final. ``reference``: ``module``'s
    :func:`in_domain_val_error` (computed when not given)."""
    system = system_of(cfg)
    reference = in_domain_val_error(module, cfg) if reference is None else reference
    envs = system.heldout[name] if envs is None else envs
    adapt = _load(system, cfg, f"adapt_{name}", name, envs)
    val = _load(system, cfg, f"val_{name}", name, envs)
    t = torch.as_tensor(adapt.t, dtype=adapt.states.dtype)
    adapted = adapt_to_new_environments(module, adapt.states, val.states, t, [env_label(e) for e in envs],
                                        cfg.adapt, shots, envs=envs, progress=progress, label=name)
    del adapt, val
    return _scored(cfg, name, envs, adapted, keep_test, progress, reference)


def _scored(cfg: RunConfig, name: str, envs: list[Env], adapted: Adapted, keep_test: bool,
            progress: bool | None, reference: float) -> SetResult:
    from leads.datasets.progress import announce

    system = system_of(cfg)
    test = _load(system, cfg, f"test_{name}", name, envs)
    announce(f"scoring {name}: {test.states.shape[0] * test.states.shape[1]} test trajectories", progress)
    scores = score(adapted.module, test.states, test.t, system.horizon)
    poor = None if adapted.val_rel_l2_per_env is None else poor_fits(adapted.val_rel_l2_per_env, reference)
    return SetResult(name, envs, scores, adapted, test if keep_test else None,
                     identify(adapted.module, envs, adapted.physics_rel_std_errors), poor, reference)


def evaluate_heldout_sets(module: Forecaster, cfg: RunConfig, sets: Mapping[str, list[Env]],
                          shots: int | None = None, keep_test: bool = True,
                          progress: bool | None = None) -> dict[str, SetResult]:
    """:func:`evaluate_heldout` for every set, adapting all their environments in one optimisation
    when ``adapt.joint`` is set and the method stacks its environment parameters by environment
    (every built-in one does): the environments are independent problems, each keeps its own
    validation-chosen row, and one optimisation costs the steps of the slowest set instead of
    the sum. Otherwise the sets are adapted one after the other.

    Each set's ``Adapted`` then reports the joint steps, its share of the joint seconds (in
    proportion to its number of environments) and its own environments' validation error."""
    sets = dict(sets)
    reference = in_domain_val_error(module, cfg)

    def one_by_one() -> dict[str, SetResult]:
        return {name: evaluate_heldout(module, cfg, name, envs, shots, keep_test, progress, reference)
                for name, envs in sets.items()}

    if not (cfg.adapt.joint and len(sets) > 1 and
            stacked_by_environment(module.env_parameters(), len(module.env_names))):
        return one_by_one()
    system = system_of(cfg)
    adapt = {n: _load(system, cfg, f"adapt_{n}", n, e) for n, e in sets.items()}
    val = {n: _load(system, cfg, f"val_{n}", n, e) for n, e in sets.items()}
    first = next(iter(adapt.values()))
    # One optimisation needs one time grid and as many trajectories in every environment.
    same = len({a.states.shape[1:] for a in adapt.values()}) == 1 and \
        len({v.states.shape[1:] for v in val.values()}) == 1 and \
        all(np.array_equal(d.t, first.t) for d in [*adapt.values(), *val.values()])
    if not same:
        return one_by_one()
    all_envs = [e for envs in sets.values() for e in envs]
    t = torch.as_tensor(first.t, dtype=first.states.dtype)
    joint_adapted = adapt_to_new_environments(
        module, torch.cat([a.states for a in adapt.values()]), torch.cat([v.states for v in val.values()]), t,
        [env_label(e) for e in all_envs], cfg.adapt, shots, envs=all_envs, progress=progress,
        label=" + ".join(sets))
    del adapt, val
    groups, start = [], 0
    for envs in sets.values():
        groups.append(list(range(start, start + len(envs))))
        start += len(envs)
    parts = split_environments(module, joint_adapted.module, groups, list(sets.values()))
    out = {}
    per_env, rel_se = joint_adapted.val_rel_l2_per_env, joint_adapted.physics_rel_std_errors
    for (name, envs), rows, part in zip(sets.items(), groups, parts, strict=True):
        mine = None if per_env is None else [per_env[i] for i in rows]
        adapted = dataclasses.replace(
            joint_adapted, module=part, seconds=joint_adapted.seconds * len(rows) / len(all_envs),
            best_val_rel_l2=float(sum(mine) / len(mine)) if mine else math.nan, val_rel_l2_per_env=mine,
            physics_rel_std_errors=None if rel_se is None else [rel_se[i] for i in rows])
        out[name] = _scored(cfg, name, envs, adapted, keep_test, progress, reference)
    return out

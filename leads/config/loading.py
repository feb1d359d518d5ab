"""Run configuration: plain YAML, resolved in layers.

The defaults (``leads.config.schema``, the one place they are written) <- ``configs/<system>.yaml``
<- its profile (``quick`` by default) <- ``--set key=value`` overrides. The system's own defaults (physical constants,
environment sets, observation grid) fill ``system:`` so every value a run uses is in the
resolved config, can be overridden, and is saved with the run.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from leads.config.schema import RunConfig, defaults, plain
from leads.datasets.atomic import atomic_write_text
from leads.envs.base import System
from leads.envs.equations import is_system_file
from leads.envs.errors import UserError
from leads.envs.registry import SYSTEMS, get_system

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)):
                if key in seen:
                    line = key_node.start_mark.line + 1
                    raise yaml.constructor.ConstructorError(None, None, f"key '{key}' is given twice (line {line})")
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: Path) -> dict[str, Any]:
    try:
        with open(path) as f:
            data = yaml.load(f, Loader=_StrictLoader) or {}
    except yaml.YAMLError as e:
        first = " ".join(str(e).split())[:200]
        raise UserError(f"{path} is not valid YAML ({first}); fix the file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{path} cannot be read ({type(e).__name__}: {e}); fix the file") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of config keys")
    return data


def merge(base: dict[str, Any], update: dict[str, Any], where: str = "", strict: bool = True) -> dict:
    """Deep-merge ``update`` into a copy of ``base``; with ``strict`` every key must already exist
    and keep its type, so a typo or a wrong type is an error, not a silently ignored value."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        path = f"{where}{key}"
        if strict and key not in out:
            known = ", ".join(sorted(out)) or "(none)"
            raise UserError(f"unknown config key '{path}'; known keys here: {known}")
        if isinstance(out.get(key), dict) and isinstance(value, dict) and out[key]:
            out[key] = merge(out[key], value, f"{path}.", strict)
        else:
            if strict and key in out:
                value = _coerce(path, out[key], value)
            out[key] = copy.deepcopy(value)
    return out


def _coerce(path: str, old: Any, new: Any) -> Any:
    """Keep the old value's type; ints widen to floats, and None means 'unset' either way
    (except for sections and lists, which code iterates)."""
    if new is None and isinstance(old, (dict, list)):
        raise UserError(f"config key '{path}' expects {type(old).__name__} (like {old!r}), got None")
    if old is None or new is None:
        return new
    if isinstance(old, bool) or isinstance(new, bool):
        if isinstance(old, bool) and isinstance(new, bool):
            return new
    elif isinstance(old, float) and isinstance(new, int):
        return float(new)
    elif isinstance(old, int) and isinstance(new, float) and new.is_integer():
        return int(new)
    elif type(old) is type(new) or (isinstance(old, (list, dict)) and isinstance(new, type(old))):
        return new
    raise UserError(
        f"config key '{path}' expects {type(old).__name__} (like {old!r}), got {new!r}"
    )


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=3e-4"`` -> (["train", "lr"], 0.0003). Values are read as YAML."""
    if "=" not in text:
        raise UserError(f"override '{text}' must look like key=value (e.g. train.lr=3e-4)")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise UserError(f"override '{text}' has an empty key; write section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    # YAML reads 3e-4 as a string; numbers people write should be numbers.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in ".eE") else int(value)
        except ValueError:
            pass
    return key.split("."), value


def apply_override(cfg: Mapping[str, Any], text: str) -> dict[str, Any]:
    """``cfg`` (plain form) with one ``key=value`` override merged in."""
    keys, value = parse_override(text)
    update: dict[str, Any] = value
    for k in reversed(keys):
        update = {k: update}
    return merge(plain(cfg), update)


def load_config(
    system: str,
    profile: str | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    config_dir: Path = CONFIG_DIR,
) -> RunConfig:
    """The fully resolved and validated config for ``system``.

    Args:
        system: a registered system name (``leads.SYSTEMS``).
        profile: a profile of ``configs/<system>.yaml`` (default: the file's ``profile``, ``quick``).
        overrides: ``"section.key=value"`` strings, as ``--set`` takes them.
        config_dir: where ``<system>.yaml`` is read from.

    Returns:
        The typed configuration; ``cfg.to_dict()`` is the plain form saved with a run.
    """
    if is_system_file(system):  # a system file carries its own run settings (profiles, model, ...)
        from leads.envs.equations.files import read_system_file

        path, name = Path(system), system_name(system)
        sf = read_system_file(system)
        spec = copy.deepcopy(sf.run)
        spec.setdefault("profiles", {"quick": {}})
        # New environments to adapt to: the file's held-out sets, unless its settings say otherwise.
        if isinstance(spec.get("adapt", {}), dict) and isinstance(sf.system.get("heldout") or {}, dict):
            spec["adapt"] = {"sets": list(sf.system.get("heldout") or {}), **spec.get("adapt", {})}
        # Fields on a grid take a convolutional network unless the file names another.
        if sf.system.get("grid") and isinstance(spec.get("model", {}), dict):
            spec["model"] = {"name": "conv", **spec.get("model", {})}
    else:
        if system not in SYSTEMS:
            raise UserError(f"unknown system '{system}'; choose one of: {', '.join(sorted(SYSTEMS))}, or give a "
                            "system file's path (e.g. systems/fitzhugh_nagumo.yaml)")
        path, name = config_dir / f"{system}.yaml", system
        if not path.exists():
            raise UserError(f"no config file {path} for system '{system}'; add one (see configs/)")
        spec = load_yaml(path)
    cfg = defaults()
    profiles = spec.pop("profiles", {}) or {}
    if not isinstance(profiles, dict) or not all(isinstance(p, dict) for p in profiles.values()):
        raise UserError(f"{path}: 'profiles' must map profile names (quick, paper) to mappings of config keys")
    replaced = spec.pop("replaced_profiles", {}) or {}
    for key in ("system", "methods"):
        if not isinstance(spec.get(key, {}), dict):
            raise UserError(f"{path}: '{key}' must be a mapping, got {spec[key]!r}")
    # The system file may add method and system keys the shared defaults do not know.
    cfg = merge(cfg, {k: v for k, v in spec.items() if k in ("system", "methods")}, strict=False)
    cfg = merge(cfg, {k: v for k, v in spec.items() if k not in ("system", "methods")})
    cfg["system"] = {**get_system(system).config, **cfg.get("system", {})}
    cfg["system_name"] = name

    # --set profile=paper must choose the profile before the other overrides apply.
    for text in overrides:
        keys, value = parse_override(text)
        if keys == ["profile"]:
            profile = str(value)
    profile = profile or cfg.get("profile", "quick")
    if profile in replaced and profile not in profiles:
        raise UserError(replaced_message(f"profile '{profile}' of {system}", "--profile", replaced[profile],
                                         "--set ", path))
    if profile not in profiles:
        raise UserError(
            f"unknown profile '{profile}' for {system}; choose one of: {', '.join(sorted(profiles))}"
        )
    cfg = merge(cfg, profiles[profile], where="")
    cfg["profile"] = profile
    for text in overrides:
        if parse_override(text)[0] != ["profile"]:
            cfg = apply_override(cfg, text)
    system_obj = get_system(name, **cfg["system"])  # the system checks its own section
    run_cfg = RunConfig.from_dict(cfg)
    system_obj.check_terms(run_cfg.physics.terms)  # a term the system does not have fails here
    return run_cfg


def replaced_message(what: str, option: str, entry: Any, set_prefix: str, path: Path) -> str:
    """One line naming what replaced ``what`` and the options that rerun it exactly, from an entry
    ``{by: <name>, set: [key=value, ...]}`` (profiles) or ``{by: <name>, options: "..."}`` (protocols)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("by"), str):
        raise UserError(f"{path}: the entry for {what} must be a mapping with 'by: <replacement>'")
    rerun = " ".join([f"{option} {entry['by']}", *(f"{set_prefix}{s}" for s in entry.get("set", [])),
                      *([str(entry["options"])] if entry.get("options") else [])])
    exact = " (this reruns it exactly)" if entry.get("set") or entry.get("options") else ""
    return f"{what} was replaced by '{entry['by']}': use {rerun}{exact}"


def system_name(env: str) -> str:
    """The name runs, results and checkpoints know a system by: ``env`` itself for a built-in
    system, the ``name`` a system file declares for a file's path."""
    if not is_system_file(env):
        return env
    from leads.envs.equations.files import read_system_file

    return read_system_file(env).name


def system_of(cfg: RunConfig) -> System:
    """The system a run config describes, with its ``system`` settings applied."""
    return get_system(cfg.system_name, **cfg.system)


def config_hash(cfg: Mapping[str, Any], n: int = 12) -> str:
    text = json.dumps(plain(cfg), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def save_config(cfg: Mapping[str, Any], path: Path) -> None:
    """Written atomically: a crash never leaves a half-written config beside a run."""
    atomic_write_text(path, yaml.safe_dump(plain(cfg), sort_keys=False))

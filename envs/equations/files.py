"""Reading a system file: its name, its system part and its run settings.

A system file is YAML (or the same text passed as a string). Its keys are ``name`` (default: the
file's stem), the system keys of ``spec.SYSTEM_KEYS`` and run settings: ``profiles`` (each a
mapping of run-config keys, like ``configs/<system>.yaml``'s) and the run-config sections of
``RUN_KEYS``, shared by every profile. A key given twice anywhere is an error (PyYAML would keep
the last silently), and a term given twice in one field's equation says so by name.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

import yaml

from leads.envs.equations.spec import SYSTEM_KEYS
from leads.envs.errors import UserError

RUN_KEYS = ("profiles", "profile", "method", "model", "methods", "forecaster", "train", "physics", "adapt", "data")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,99}\Z")


@dataclasses.dataclass(frozen=True)
class SystemFile:
    name: str
    system: dict[str, Any]  # the system keys, as written
    run: dict[str, Any]  # the run settings (profiles and run-config sections)
    where: str  # the file's path, or "<system text>"


def read_system_file(source: str | os.PathLike[str]) -> SystemFile:
    """The parts of a system file.

    Args:
        source: a path to a ``.yaml``/``.yml`` file, or the file's text itself (anything with a
            line break).
    """
    text_given = isinstance(source, str) and "\n" in source
    if text_given:
        text, where, stem = str(source), "<system text>", None
    else:
        path = Path(source)
        where, stem = str(path), path.stem
        if not path.is_file():
            raise UserError(f"system file {path} does not exist; pass the path of a system file "
                            "(e.g. systems/gray_scott.yaml) or a built-in system's name")
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise UserError(f"{path} cannot be read ({type(e).__name__}: {e}); fix the file") from None
    data = _load(text, where)
    name = data.pop("name", stem)
    if name is None:
        raise UserError(f"{where}: a system given as text needs a name; add name: <my_system>")
    if not isinstance(name, str) or not _NAME.match(name):
        raise UserError(f"{where}: name {name!r} must start with a letter and hold only letters, digits, '_' or '-' "
                        "(it names the data, runs and results directories); rename it")
    system = {k: v for k, v in data.items() if k in SYSTEM_KEYS}
    run = {k: v for k, v in data.items() if k in RUN_KEYS}
    unknown = [k for k in data if k not in SYSTEM_KEYS and k not in RUN_KEYS]
    if unknown:
        raise UserError(f"{where}: unknown key '{unknown[0]}'; a system file holds name, the system keys "
                        f"({', '.join(SYSTEM_KEYS)}) and run settings ({', '.join(RUN_KEYS)})")
    return SystemFile(name, system, run, where)


def _load(text: str, where: str) -> dict[str, Any]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:
            _check_duplicates(node, (), where)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        first = " ".join(str(e).split())[:200]
        raise UserError(f"{where} is not valid YAML ({first}); fix the file") from None
    if not isinstance(data, dict):
        raise UserError(f"{where} must hold a mapping (name, fields, equations, ...), got {type(data).__name__}")
    return data


def _check_duplicates(node: yaml.Node, path: tuple[str, ...], where: str) -> None:
    if isinstance(node, yaml.MappingNode):
        lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else None
            if key is not None:
                line = key_node.start_mark.line + 1
                if key in lines:
                    if len(path) == 2 and path[0] == "equations":
                        raise UserError(f"{where}: term '{key}' of field {path[1]} is given twice (lines {lines[key]} "
                                        f"and {line}); give each term of a field once, or rename one")
                    dotted = ".".join((*path, key))
                    raise UserError(f"{where}: key '{dotted}' is given twice (lines {lines[key]} and {line}); keep one")
                lines[key] = line
            _check_duplicates(value_node, (*path, key or "?"), where)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _check_duplicates(item, path, where)

"""MkDocs hook: the build fails (``mkdocs build --strict``) when a name of the public API, ``leads.__all__``,
has no docstring or no entry in the API reference page."""

from __future__ import annotations

import inspect
import logging
import re
from pathlib import Path
from typing import Any

log = logging.getLogger("mkdocs.hooks.public_api")


def on_pre_build(config: Any) -> None:
    import leads

    page = (Path(config["docs_dir"]) / "api.md").read_text()
    documented = set(re.findall(r"^::: [\w.]+\.(\w+)\s*$", page, re.M))
    for name in leads.__all__:
        value = getattr(leads, name)
        own = value.__dict__.get("__doc__") if inspect.isclass(value) else getattr(value, "__doc__", None)
        generated = inspect.isclass(value) and (own or "").startswith(f"{value.__name__}(")  # a dataclass's
        if (inspect.isclass(value) or inspect.isfunction(value)) and (not (own or "").strip() or generated):
            log.warning("leads.%s (%s) has no docstring", name, leads._API[name])
        if name not in documented:
            log.warning("leads.%s is public but not in docs/api.md", name)

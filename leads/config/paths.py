"""Checks of the directories a run writes to, made before any work starts.

A data, runs or results directory that cannot be used (a file in its way, a place that cannot be
written) would otherwise fail with a traceback after data generation or training. Each check
writes and removes a probe file in the directory, or in its nearest existing ancestor when it does
not exist yet (creating nothing), so what it reports is what the run would meet, whatever the
user's permissions (root bypasses mode bits).
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leads.envs.errors import UserError

if TYPE_CHECKING:
    from leads.config.schema import RunConfig

OUTPUT_DIRS = ("data.dir", "runs_dir", "results_dir")


def check_output_dir(value: Any, key: str) -> Path:
    """``value`` as a directory a run can create and write, or a one-line ``UserError`` naming ``key``.

    Args:
        value: the configured path.
        key: its config key (``runs_dir``, ``data.dir``, ...), named in the error with the fix.

    Returns:
        The path (not created here: the run creates it when it first writes).
    """
    fix = f"choose another with --set {key}=DIR"
    path = Path(str(value)).expanduser()
    if not str(value).strip():
        raise UserError(f"{key} is empty; {fix}")
    blocker = next((p for p in (path, *path.parents) if p.exists() or p.is_symlink()), None)
    if blocker is not None and not blocker.is_dir():
        what = "a broken link" if blocker.is_symlink() and not blocker.exists() else "a file"
        raise UserError(f"{key}={value}: {blocker} is {what}, not a directory; remove it or {fix}")
    try:
        with tempfile.TemporaryFile(dir=blocker or Path.cwd(), prefix=".write-check-"):
            pass
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        hint = "free space, or " if e.errno in (errno.ENOSPC, errno.EDQUOT) else ""
        raise UserError(f"{key}={value} cannot be written ({reason}); {hint}{fix}") from None
    return path


def check_output_dirs(cfg: RunConfig, keys: tuple[str, ...] = OUTPUT_DIRS) -> None:
    """Check every output directory ``keys`` of a run config (``section.key`` paths)."""
    for key in keys:
        node: Any = cfg
        for part in key.split("."):
            node = getattr(node, part)
        check_output_dir(node, key)

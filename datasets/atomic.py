"""Atomic file writes: a reader sees the old file or the complete new one, never part of one."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def file_mode() -> int:
    """Mode a plain ``open`` would give under the current umask (``mkstemp`` gives 0600, which
    would hide a shared data cache or checkpoint from the group)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_write(path: Path, suffix: str) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; after the block it is fsynced and renamed onto
    ``path``. On any failure the temporary file is removed, and an ``OSError`` that names no
    file (a full disk, say) is re-raised naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=suffix)
    os.close(fd)
    try:
        os.chmod(tmp, file_mode())
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno and not e.filename:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def atomic_write_text(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see ``atomic_write``)."""
    with atomic_write(Path(path), ".tmp") as tmp:
        tmp.write_text(text)
    return Path(path)

"""Progress of long phases (data generation, training, adaptation, evaluation) on stderr.

On a terminal a phase is a tqdm bar. Anywhere else (a log file, a batch job, CI) it is plain
lines, one when the phase starts, at most one every ``PLAIN_EVERY_S`` seconds while it runs, and
one when it ends: carriage-return redraws of a bar would fill a log with kilobytes of noise.
``LEADS_PROGRESS`` overrides the choice: ``bar``, ``lines`` or ``off``.

It lives with the storage layer, the lowest one that reports progress (data generation), so that
``leads.training`` and ``leads.evaluation`` can use it too without importing upwards.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

from leads.envs.errors import UserError

PLAIN_EVERY_S = 30.0
MODES = ("bar", "lines", "off")


def progress_mode(enabled: bool | None = None, stream: TextIO | None = None) -> str:
    """``bar``, ``lines`` or ``off``: ``LEADS_PROGRESS`` if set, else ``off`` when ``enabled`` is
    False, else a bar on a terminal and plain lines elsewhere."""
    forced = os.environ.get("LEADS_PROGRESS", "").strip().lower()
    if forced:
        if forced not in MODES:
            raise UserError(f"LEADS_PROGRESS={forced!r} is not one of {', '.join(MODES)}; unset it or choose one")
        return forced
    if enabled is False:
        return "off"
    stream = sys.stderr if stream is None else stream
    return "bar" if getattr(stream, "isatty", lambda: False)() else "lines"


def announce(message: str, enabled: bool | None = None) -> None:
    """One line saying what starts now (nothing when progress is off)."""
    if progress_mode(enabled) != "off":
        print(message, file=sys.stderr, flush=True)


class Progress:
    """A bar on a terminal, periodic plain lines elsewhere.

    Args:
        desc: what is running, e.g. ``"gray_scott/train"``.
        total: the number of units the phase will do (None: unknown).
        unit: the unit's name, plural (``trajectories``, ``steps``).
        enabled: False turns it off (``LEADS_PROGRESS`` still wins).
        every: seconds between plain lines.
        start_line: write a line when the phase starts (phases that are usually short, such as
            generating a small split, say only when they end, or while they run long).
    """

    def __init__(self, desc: str, total: int | None = None, unit: str = "items", enabled: bool | None = None,
                 every: float = PLAIN_EVERY_S, start_line: bool = True) -> None:
        self.desc, self.total, self.unit, self.every = desc, total, unit, every
        self.mode = progress_mode(enabled)
        self.n = 0
        self.start = time.perf_counter()
        self._last_line = self.start
        self._info: dict[str, Any] = {}
        self._bar = None
        if self.mode == "bar":
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)
        elif self.mode == "lines" and start_line:
            self._print(f"{desc}: started" + (f" ({total} {unit})" if total is not None else ""))

    def update(self, n: int = 1, **info: Any) -> None:
        """Advance by ``n`` units; ``info`` (e.g. ``val=1.2e-2``) is shown beside the count."""
        self.n += n
        self._info.update(info)
        if self._bar is not None:
            self._bar.update(n)
            if info:
                self._bar.set_postfix({k: _fmt(v) for k, v in self._info.items()}, refresh=False)
        elif self.mode == "lines" and time.perf_counter() - self._last_line >= self.every:
            self._print(f"{self.desc}: {self._line()}")

    def set(self, n: int, **info: Any) -> None:
        """Move to ``n`` units done (for phases that count steps themselves)."""
        self.update(n - self.n, **info)

    def line_now(self) -> None:
        """In plain-line mode, write the current line now (at a milestone such as a validation)."""
        if self.mode == "lines":
            self._print(f"{self.desc}: {self._line()}")

    def close(self, message: str = "") -> None:
        """End the phase with a last line (``message`` replaces the count when given)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            if message:
                self._print(f"{self.desc}: {message}")
        elif self.mode == "lines":
            self._print(f"{self.desc}: {message or self._line(done=True)}")
        self.mode = "off"

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.mode != "off" and exc[0] is None:
            self.close()
        elif self._bar is not None:  # interrupted: leave the bar as it stands, no "done" line
            self._bar.close()
            self._bar = None

    def _line(self, done: bool = False) -> str:
        count = f"{self.n}/{self.total} {self.unit}" if self.total is not None else f"{self.n} {self.unit}"
        info = "".join(f", {k} {_fmt(v)}" for k, v in self._info.items())
        elapsed = time.perf_counter() - self.start
        return f"{'done, ' if done else ''}{count}{info} ({elapsed:.0f} s)"

    def _print(self, text: str) -> None:
        self._last_line = time.perf_counter()
        print(text, file=sys.stderr, flush=True)


def _fmt(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)

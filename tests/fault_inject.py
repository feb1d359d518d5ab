"""Run ``run.py`` (or any script) with one fault injected, for the fault-injection tests.

    python tests/fault_inject.py run.py --env lotka_volterra ...

The fault is chosen by environment variables, so the script's own code path (argument
parsing, ``sys.exit`` code, stderr) is exactly the one a user gets:

- ``LEADS_FAULT_KILL_AT_STEP=N``: SIGKILL this process when training step ``N`` begins
  (``global_step == N``), as a power cut or the OOM killer would.
- ``LEADS_FAULT_KILL_IN_SAVE=N``: SIGKILL this process inside the ``N``-th checkpoint save
  (1-based): its bytes are written, the rename that puts the file in place has not happened.
- ``LEADS_FAULT_DISK_FULL_AT_SAVE=N``: the ``N``-th checkpoint save fails with ENOSPC
  ("No space left on device") while writing, as on a full disk.
- ``LEADS_FAULT_SIGNAL=SIG:PHASE:N[:K]``: send this process ``SIGINT`` or ``SIGTERM`` (``SIG`` is
  ``INT`` or ``TERM``), as Ctrl-C or a scheduler would, when ``PHASE`` reaches ``N``: ``train``
  at training step ``N`` (of the ``K``-th run of a batch to reach it, default the first),
  ``generate`` at the ``N``-th split generated, ``adapt`` at the ``N``-th adaptation to a
  held-out set.
- ``LEADS_FAULT_KILL_AFTER_APPEND=N``: SIGKILL this process just after the ``N``-th write of
  result rows, before anything else of that run is written (its summary, say).
- ``LEADS_FAULT_DISK_FULL_AT_APPEND=N``: the ``N``-th write of result rows fails with ENOSPC, as on
  a full results disk.
- ``LEADS_FAULT_POISON=STEP:ENV:VALUE``: from training step ``STEP`` on, multiply the learned
  vector field of training environment ``ENV`` by ``VALUE`` (``nan`` or e.g. ``1e6``), so the
  loss becomes non-finite or explodes there.

``sys.argv[0]`` is the script itself, so processes Lightning relaunches (DDP) run the plain
script without the fault.
"""

from __future__ import annotations

import os
import runpy
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def _at_training_step(step: int, action, occurrence: int = 1) -> None:
    """Call ``action()`` when training step ``step`` begins (``global_step == step``) for the
    ``occurrence``-th time in this process (the ``occurrence``-th run of a batch to reach it)."""
    from leads.models.forecaster import Forecaster

    original = Forecaster.training_step
    seen = [0]

    def training_step(self, batch, batch_idx):
        if self.global_step == step:
            seen[0] += 1
            if seen[0] == occurrence:
                action()
        return original(self, batch, batch_idx)

    Forecaster.training_step = training_step


def _kill_at_step(step: int) -> None:
    _at_training_step(step, _die)


def _kill_in_save(n: int) -> None:
    import shutil

    calls = [0]
    originals = {"replace": os.replace, "move": shutil.move}

    def wrap(name):
        def moved(src, dst, *args, **kwargs):
            # A checkpoint lands by a rename onto *.ckpt (os.replace here, shutil.move in
            # Lightning's default writer); every other rename is left alone.
            if str(dst).endswith(".ckpt"):
                calls[0] += 1
                if calls[0] == n:
                    _die()
            return originals[name](src, dst, *args, **kwargs)
        return moved

    os.replace = wrap("replace")
    shutil.move = wrap("move")


def _disk_full_at_save(n: int) -> None:
    import errno

    import torch

    calls = [0]
    original = torch.save

    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and "state_dict" in obj:
            calls[0] += 1
            if calls[0] == n:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write() raises it: no file name
        return original(obj, f, *args, **kwargs)

    torch.save = save


def _signal_at(spec: str) -> None:
    name, phase, n, *occurrence = spec.split(":")
    sig, n = getattr(signal, f"SIG{name}"), int(n)

    def send() -> None:
        os.kill(os.getpid(), sig)

    if phase == "train":
        _at_training_step(n, send, int(occurrence[0]) if occurrence else 1)
        return
    import leads.datasets.cache as cache
    import leads.evaluation.heldout as heldout

    module, attr = {"generate": (cache, "generate_states"), "adapt": (heldout, "adapt_to_new_environments")}[phase]
    original, calls = getattr(module, attr), [0]

    def counted(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            send()
        return original(*args, **kwargs)

    setattr(module, attr, counted)


def _at_append(n: int, before, after) -> None:
    """Wrap the writer of result rows: ``before(path)`` ahead of its ``n``-th call, ``after()`` once
    that call returned."""
    import leads.reporting.results as results

    original, calls = results.append_rows, [0]

    def append_rows(path, rows):
        calls[0] += 1
        if calls[0] == n:
            before(path)
        out = original(path, rows)
        if calls[0] == n:
            after()
        return out

    results.append_rows = append_rows
    for module in ("leads.jobs", "leads.external"):  # they import it by name
        __import__(module)
        sys.modules[module].append_rows = append_rows


def _disk_full(path) -> None:
    import errno

    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def _poison(spec: str) -> None:
    import torch

    from leads.models.forecaster import Forecaster

    step, env, value = spec.split(":")
    original = Forecaster.vector_field

    def vector_field(self, u, env_index):
        out = original(self, u, env_index)
        if self.training and self.global_step >= int(step):
            hit = (env_index == int(env)).view(-1, *[1] * (out.dim() - 1))
            out = torch.where(hit, out * float(value), out)
        return out

    Forecaster.vector_field = vector_field


def main() -> None:
    sys.path.insert(0, str(ROOT))
    # A shell starts background jobs (`cmd &`, as CI runners may) with SIGINT ignored, and Python
    # keeps it ignored; the injected Ctrl-C must arrive as it does at a terminal.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if os.environ.get("LEADS_FAULT_KILL_AT_STEP"):
        _kill_at_step(int(os.environ["LEADS_FAULT_KILL_AT_STEP"]))
    if os.environ.get("LEADS_FAULT_KILL_IN_SAVE"):
        _kill_in_save(int(os.environ["LEADS_FAULT_KILL_IN_SAVE"]))
    if os.environ.get("LEADS_FAULT_DISK_FULL_AT_SAVE"):
        _disk_full_at_save(int(os.environ["LEADS_FAULT_DISK_FULL_AT_SAVE"]))
    if os.environ.get("LEADS_FAULT_SIGNAL"):
        _signal_at(os.environ["LEADS_FAULT_SIGNAL"])
    if os.environ.get("LEADS_FAULT_KILL_AFTER_APPEND"):
        _at_append(int(os.environ["LEADS_FAULT_KILL_AFTER_APPEND"]), lambda path: None, _die)
    if os.environ.get("LEADS_FAULT_DISK_FULL_AT_APPEND"):
        _at_append(int(os.environ["LEADS_FAULT_DISK_FULL_AT_APPEND"]), _disk_full, lambda: None)
    if os.environ.get("LEADS_FAULT_POISON"):
        _poison(os.environ["LEADS_FAULT_POISON"])
    script = sys.argv[1]
    sys.argv = sys.argv[1:]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()

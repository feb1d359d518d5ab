"""What a run says when Ctrl-C, SIGTERM or a failure after training stops it: what was saved, and how
to go on."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from leads.envs.errors import UserError

if TYPE_CHECKING:
    from leads.config.schema import RunConfig


class Interrupted(Exception):
    """A run stopped by Ctrl-C or SIGTERM.

    ``phase`` is ``data`` (generating: finished split files are kept; ``run_dir`` is None when
    no run directory was made yet), ``training`` (the last checkpoint is kept) or ``evaluation``
    (training had finished). ``describe(command)`` completes
    the message with the command that continues the run; the command line passes its own, the
    default names the library call.
    """

    def __init__(self, phase: str, run_dir: Path | None, ckpt: Path | None = None, step: int | None = None,
                 cfg: RunConfig | None = None) -> None:
        self.phase, self.run_dir, self.ckpt, self.step = phase, run_dir, ckpt, step
        self.system, self.method, self.seed = ("", "", 0) if cfg is None else (cfg.system_name, cfg.method, cfg.seed)
        self.saved_step = checkpoint_step(ckpt) if ckpt is not None and phase != "evaluation" else None
        super().__init__(self.describe())

    @property
    def resumable(self) -> bool:
        return self.saved_step is not None

    def describe(self, command: str | None = None) -> str:
        if self.phase == "evaluation":
            return (f"interrupted during evaluation: training had finished and {self.ckpt} is saved; continue "
                    f"(without training again) with: {command or 'leads.run_experiment(cfg, resume=True)'}")
        where = "while generating data (finished split files are kept)" if self.phase == "data" else \
            f"at training step {self.step}"
        if self.run_dir is None:  # before a run directory was made
            return f"interrupted {where}: start it again with: {command or 'leads.train(cfg)'}"
        if self.resumable:
            return (f"interrupted {where}: {self.ckpt} (step {self.saved_step}) is saved; "
                    f"continue with: {command or 'leads.train(cfg, resume=True)'}")
        return (f"interrupted {where}, before the first checkpoint: nothing to continue from was saved "
                f"({self.run_dir} is removed); start it again with: {command or 'leads.train(cfg)'}")


def checkpoint_step(path: Path) -> int | None:
    """The training step a checkpoint was written at; None if it is missing or unreadable."""
    import torch  # only when a run was interrupted: the command line starts without torch

    try:
        return int(torch.load(path, map_location="cpu", weights_only=False)["global_step"])
    except Exception:  # missing or unreadable: no checkpoint to continue from
        return None


class AfterTraining(UserError):
    """Training finished (its checkpoint is kept) but what came after failed: ``describe(command)``
    names the checkpoint and the command that goes on from it without training again (the
    command line passes its own; the default names the library call)."""

    def __init__(self, cause: str, run_dir: Path, ckpt: Path) -> None:
        self.cause, self.run_dir, self.ckpt = cause, run_dir, ckpt
        super().__init__(self.describe())

    def describe(self, command: str | None = None) -> str:
        return (f"{self.cause}; training had finished and {self.ckpt} is kept: after fixing that, continue "
                f"(without training again) with: {command or 'leads.run_experiment(cfg, resume=True)'}")

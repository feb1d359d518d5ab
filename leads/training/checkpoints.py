"""Checkpoints that survive crashes: atomic writes, ``last.ckpt`` at every validation, and a
check that the checkpoint a run resumes from is an intact one of that same run.

Lightning's own writer renames a temporary file from the system temp directory into place:
across filesystems (``/tmp`` local, runs on a shared disk) that rename is a copy, and a crash
during it leaves a truncated ``last.ckpt``; a crash before it leaves the temporary file in
``/tmp`` forever. Here the temporary file sits beside its target and is fsynced, then renamed.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint
from pytorch_lightning.plugins.io import TorchCheckpointIO

from leads.config.schema import RunConfig, flat_keys, plain
from leads.datasets.atomic import atomic_write
from leads.envs.errors import UserError
from leads.models.forecaster import Forecaster

_TMP_SUFFIX = ".ckpt.tmp"


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary file in the checkpoint's directory, fsync, rename: a reader
    (or a resumed run) sees the old checkpoint or the new one, never part of one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        with atomic_write(Path(path), _TMP_SUFFIX) as tmp:
            torch.save(checkpoint, tmp)


def remove_stale_temps(ckpt_dir: Path) -> None:
    """Temporary files of writers killed mid-save (only call where no writer is running)."""
    for tmp in Path(ckpt_dir).glob(f".*{_TMP_SUFFIX}"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def checkpoint_callbacks(ckpt_dir: Path) -> tuple[ModelCheckpoint, ModelCheckpoint]:
    """``best.ckpt`` (lowest validation error) and ``last.ckpt`` (rewritten at every validation).

    Lightning's ``save_last=True`` rewrites ``last.ckpt`` only when ``best.ckpt`` improves, so
    a run that stopped improving would resume from far back; a second callback without a
    monitor saves the latest state at every validation."""
    best = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val/rel_l2", mode="min", save_top_k=1,
                           save_last=False, auto_insert_metric_name=False, enable_version_counter=False)
    last = ModelCheckpoint(dirpath=ckpt_dir, filename="last", monitor=None, save_top_k=1, save_last=False,
                           auto_insert_metric_name=False, enable_version_counter=False)
    return best, last


class ValidateLastStep(Callback):
    """End training with a validation, so with a checkpoint, whatever ``max_steps`` and
    ``val_every`` are. Lightning validates every ``val_every`` steps only; a stop requested at
    the last step makes it validate there too (the path it takes for early stopping)."""

    def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
        if 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True


class TrainClock(Callback):
    """Training wall time, and the process's CPU time, that survive a crash: the seconds spent up
    to a checkpoint are saved in it, and a run resumed from it goes on counting from there (the
    work after the last checkpoint of a killed run was lost, so it is not counted). CPU seconds
    (every thread of the process) state a budget in CPU hours whatever else shares the machine's
    cores; wall seconds do not. The clock stops when training ends (after its last validation
    and checkpoint), before Lightning tears the run down: a CPU budget is one of training."""

    def __init__(self) -> None:
        self.before = 0.0
        self.before_cpu = 0.0
        self.restored = False
        self._start: float | None = None
        self._start_cpu: float | None = None
        self._stopped: tuple[float, float] | None = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._start = time.perf_counter()
        self._start_cpu = time.process_time()
        self._stopped = None

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._stopped = (self.seconds(), self.cpu_seconds())

    def seconds(self) -> float:
        if self._stopped is not None:
            return self._stopped[0]
        return self.before + (time.perf_counter() - self._start if self._start is not None else 0.0)

    def cpu_seconds(self) -> float:
        if self._stopped is not None:
            return self._stopped[1]
        return self.before_cpu + (time.process_time() - self._start_cpu if self._start_cpu is not None else 0.0)

    def state_dict(self) -> dict[str, float]:
        return {"seconds": self.seconds(), "cpu_seconds": self.cpu_seconds()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.before = float(state_dict.get("seconds", 0.0))
        self.before_cpu = float(state_dict.get("cpu_seconds", 0.0))
        self.restored = True


def check_resume_checkpoint(path: Path, cfg: RunConfig) -> None:
    """Raise a one-line ``UserError`` unless ``path`` is a readable checkpoint of a run of the
    same system, method, seed, model and data as ``cfg``. Training settings (``train.*``,
    ``adapt.*``, ...) may change on resume, e.g. to train for longer."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        saved = ckpt["hyper_parameters"]["cfg"]
        ckpt["state_dict"], ckpt["global_step"]  # noqa: B018 - both are needed to resume
    except Exception as e:  # whatever torch raised on a damaged or foreign file
        reason = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        raise UserError(f"--resume: {path} is damaged or not a checkpoint of this project ({reason}); "
                        "delete it to resume from an earlier one, or run without --resume") from None
    if not isinstance(saved, dict):
        raise UserError(f"--resume: {path} holds no run config; run without --resume")
    a, b = _identity(saved), _identity(plain(cfg))
    for key in ("system_name", "method", *sorted(set(a) | set(b))):
        if a.get(key, "(unset)") != b.get(key, "(unset)"):
            raise UserError(f"--resume: {path} is a checkpoint of another run ({key} is {a.get(key, '(unset)')!r} "
                            f"there, {b.get(key, '(unset)')!r} here); resume the run it belongs to, or run "
                            "without --resume")


def _identity(cfg: dict[str, Any]) -> dict[str, Any]:
    """The settings that make a checkpoint another run's: what is trained on which data."""
    method = cfg.get("method")
    keep = ("system_name", "method", "seed", "system.", "model.", f"methods.{method}.", "data.seed", "data.n_train")
    return {k: v for k, v in flat_keys(cfg).items() if k.startswith(keep)}


def load_checkpoint(path: str | Path, system: str | None = None) -> Forecaster:
    """A trained forecaster, on the CPU.

    Args:
        path: a ``.ckpt`` written by training, e.g. ``runs/<system>/<run>/checkpoints/best.ckpt``.
        system: if given, the checkpoint must be a model of this system.

    Returns:
        The ``Forecaster``, its run configuration in ``.cfg``.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist; pass a .ckpt written by training, "
                        "e.g. runs/<system>/<run>/checkpoints/best.ckpt")
    try:
        module = Forecaster.load_from_checkpoint(str(path), map_location="cpu")
    except Exception as e:  # a foreign or damaged file: whatever torch or Lightning raised
        raise UserError(f"{path} is not a checkpoint of this project ({type(e).__name__}); pass a .ckpt "
                        "written by training, e.g. runs/<system>/<run>/checkpoints/best.ckpt") from None
    got = module.cfg.system_name
    if system is not None and got != system:
        raise UserError(f"checkpoint {path} holds a {got} model, not {system}; pass --env {got} "
                        f"or a {system} checkpoint")
    return module

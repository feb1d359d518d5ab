"""Learning curves: validation (and, for figures only, test) error against steps and wall seconds.

Every validation appends one line to ``<run>/curve.jsonl``: the step, the training seconds so
far, and the validation relative L2 that selects the checkpoint. With ``test_curve`` the
in-domain test split is scored there too, so accuracy-versus-compute figures can show test
error as training goes on. Those test numbers are written to this file and nowhere else: no
checkpoint, recipe or stopping rule reads them. The seconds spent scoring the test split are
taken off the training clock (wall and CPU), so ``train_seconds`` and ``train_cpu_seconds``
measure training and validation alone.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytorch_lightning.callbacks import Callback

from leads.training.checkpoints import TrainClock

CURVE_FILE = "curve.jsonl"
TEST_KEYS = ("rel_l2", "rel_l2_extrap", "rel_l2_full", "mse_t0")


class LearningCurve(Callback):
    """Appends ``{"step", "seconds", "val_rel_l2"[, "test": {metric: mean}]}`` per validation.

    Args:
        run_dir: the run directory (the file is ``run_dir / curve.jsonl``).
        clock: the run's training clock (its seconds are what the curve plots against).
        test: ``(states, t, horizon)`` of the in-domain test split to score, or None.
    """

    def __init__(self, run_dir: Path, clock: TrainClock, test: tuple[Any, Any, float] | None = None) -> None:
        self.path = Path(run_dir) / CURVE_FILE
        self.clock = clock
        self.test = test

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        val = trainer.callback_metrics.get("val/rel_l2")
        entry: dict[str, Any] = {"step": int(trainer.global_step), "seconds": round(self.clock.seconds(), 3),
                                 "cpu_seconds": round(self.clock.cpu_seconds(), 3),
                                 "val_rel_l2": float(val) if val is not None else None}
        if self.test is not None:
            from leads.evaluation.scoring import score

            start, start_cpu = time.perf_counter(), time.process_time()
            states, t, horizon = self.test
            scores = score(pl_module, states, t, horizon)
            pl_module.train()  # scoring puts the module in eval mode
            entry["test"] = {k: scores.summary(k)[0] for k in TEST_KEYS}
            self.clock.before -= time.perf_counter() - start
            self.clock.before_cpu -= time.process_time() - start_cpu
        with open(self.path, "a") as f:  # one short line per validation: an append is enough
            f.write(json.dumps(entry) + "\n")


def read_curve(run_dir: str | Path) -> list[dict[str, Any]]:
    """The curve of a run, one entry per step (a resumed run's repeated steps: the later entry)."""
    path = Path(run_dir) / CURVE_FILE
    if not path.is_file():
        return []
    by_step: dict[int, dict[str, Any]] = {}
    for line in path.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a crash
            continue
        if isinstance(entry, Mapping) and "step" in entry:
            by_step[int(entry["step"])] = dict(entry)
    return [by_step[s] for s in sorted(by_step)]

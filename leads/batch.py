"""Several runs as one resumable job: ``--seeds N``, ``--method all`` and ``reproduce``.

A batch is a list of :class:`Job` (one run configuration each) and :func:`run_batch`, which
runs them in order. Each job's state is read from its run directories before it runs:

- ``finished``: a run of this configuration wrote its ``summary.json`` after its result rows
  reached ``results.jsonl`` (no ``rows.pending.jsonl`` is left): skipped, nothing re-scored;
- ``interrupted``: a run has a ``last.ckpt``: resumed from it (a run whose training had
  finished is only evaluated, or its kept rows appended);
- ``new``: started.

So the command that started a batch also finishes it, however often it was interrupted, and
result rows are never duplicated (appends replace an evaluation's earlier rows). Every job's
data are generated (or checked) before the first job trains.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from leads.config.schema import RunConfig
from leads.models.forecaster import TrainingDiverged

FINISHED, INTERRUPTED, NEW = "finished", "interrupted", "new"


@dataclass(frozen=True)
class Job:
    """One run of a batch."""

    cfg: RunConfig
    label: str  # e.g. "lowrank seed 0"


@dataclass
class Done:
    """What became of a job: its state before the batch reached it, its run directory, and the
    error that stopped it (None if it finished)."""

    job: Job
    state: str
    run_dir: Path | None
    error: str | None = None


def job_state(cfg: RunConfig) -> tuple[str, Path | None]:
    """``finished``, ``interrupted`` (a checkpoint to resume from) or ``new``, with its directory."""
    from leads.jobs import PENDING
    from leads.training.train import runs_of

    runs = runs_of(cfg)
    done = [r for r in runs if (r / "summary.json").is_file() and not (r / PENDING).exists()]
    if done:
        return FINISHED, done[-1]
    resumable = [r for r in runs if (r / "checkpoints" / "last.ckpt").is_file()]
    return (INTERRUPTED, resumable[-1]) if resumable else (NEW, None)


def jobs_for(cfgs: Sequence[RunConfig]) -> list[Job]:
    """One job per configuration, labelled by method and seed."""
    from leads.models.physics import method_label

    return [Job(cfg, f"{method_label(cfg)} seed {cfg.seed}") for cfg in cfgs]


def prepare(jobs: Sequence[Job], progress: bool = True) -> None:
    """Generate (or check) the data of every job before the first one trains."""
    from leads.jobs import prepare_data

    seen = set()
    for job in jobs:
        c = job.cfg
        key = json.dumps([c.system_name, c.to_dict()["system"], c.to_dict()["data"], list(map(str, c.adapt.sets))],
                         sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            prepare_data(c, progress)


def run_batch(jobs: Sequence[Job], run: Callable[[Job, bool], Path], title: str) -> list[Done]:
    """Run ``jobs`` in order, skipping finished ones and resuming interrupted ones.

    Args:
        jobs: the batch.
        run: runs one job, ``run(job, resume)``, and returns its run directory.
        title: what the batch is, printed before each job's line (``[2/6] <title>: <label>: ...``).

    Returns:
        One ``Done`` per job. A job whose training diverged is reported and the batch goes on
        (one diverging method should not cost the others); any other error (an interrupt, a
        full disk) stops the batch, and the same command continues it.
    """
    out = []
    for i, job in enumerate(jobs, 1):
        state, run_dir = job_state(job.cfg)
        print(f"[{i}/{len(jobs)}] {title}: {job.label}: " + {FINISHED: f"finished in {run_dir}, skipped",
                                                               INTERRUPTED: f"resuming {run_dir}",
                                                               NEW: "starting"}[state], flush=True)
        if state == FINISHED:
            out.append(Done(job, state, run_dir))
            continue
        try:
            run_dir = run(job, state == INTERRUPTED)
        except TrainingDiverged as e:
            print(f"error: {job.label}: {e}", file=sys.stderr, flush=True)
            out.append(Done(job, state, run_dir, str(e)))
            continue
        out.append(Done(job, state, run_dir))
    return out

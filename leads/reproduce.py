"""Re-running a published table end to end: ``python run.py reproduce --protocol NAME``.

A protocol (``configs/protocols.yaml``) names a system, the profile that reproduces the published
setting, and the methods of the table. Every method x seed is one job of a batch
(:mod:`leads.batch`): a run that finished is skipped, one that was interrupted after a checkpoint
resumes from ``last.ckpt``, and the rest start. The leaderboard of the protocol, with the
published numbers beside ours, ends the job. ``--max-steps`` gives every run a smaller
training budget: a different configuration, so its runs never mix with full-budget ones, and the
leaderboard states the budget beside every number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leads.config.loading import CONFIG_DIR, load_config, load_yaml, replaced_message
from leads.config.paths import check_output_dirs
from leads.config.schema import RunConfig
from leads.envs.errors import UserError
from leads.envs.registry import SYSTEMS

REPLACED = "replaced_protocols"  # the section of protocols.yaml naming what replaced a removed protocol


def check_replaced(name: str, path: Path = CONFIG_DIR / "protocols.yaml") -> None:
    """A one-line ``UserError`` naming the replacement if ``name`` is a replaced protocol."""
    replaced = load_yaml(path).get(REPLACED) or {}
    if name in replaced:
        raise UserError(replaced_message(f"protocol '{name}'", "--protocol", replaced[name], "", path))


@dataclass(frozen=True)
class Protocol:
    name: str
    system: str
    profile: str
    methods: tuple[str, ...]
    source: str


def load_protocols(path: Path = CONFIG_DIR / "protocols.yaml") -> dict[str, Protocol]:
    """Every protocol of ``path``, checked: a known system, a profile it has, known methods."""
    out = {}
    specs = load_yaml(path)
    specs.pop(REPLACED, None)
    for name, spec in specs.items():
        where = f"{path}: protocol '{name}'"
        if not isinstance(spec, dict) or set(spec) != {"system", "profile", "methods", "source"}:
            raise UserError(f"{where} must give exactly: system, profile, methods, source")
        if spec["system"] not in SYSTEMS:
            raise UserError(f"{where}: unknown system '{spec['system']}'")
        out[name] = Protocol(name, spec["system"], spec["profile"], tuple(spec["methods"]), spec["source"])
    return out


def plan(protocol: Protocol, seeds: int, max_steps: int | None = None, methods: Sequence[str] = (),
         overrides: Sequence[str] = ()) -> list[RunConfig]:
    """The run configurations of ``protocol``: each method x seed ``0 .. seeds-1``."""
    if seeds < 1:
        raise UserError(f"--seeds {seeds} must be at least 1")
    chosen = list(methods) or list(protocol.methods)
    budget = [f"train.max_steps={max_steps}"] if max_steps is not None else []
    return [load_config(protocol.system, protocol.profile, [*overrides, *budget, f"method={m}", f"seed={s}"])
            for m in chosen for s in range(seeds)]


def reproduce(name: str, seeds: int = 3, max_steps: int | None = None, methods: Sequence[str] = (),
              overrides: Sequence[str] = (), progress: bool = True, test_curve: bool = False,
              jobs: int = 1) -> dict[str, Any]:
    """Run (or finish) every run of protocol ``name`` and rebuild its leaderboard.

    Args:
        name: a protocol of ``configs/protocols.yaml``.
        seeds: seeds ``0 .. seeds-1`` of each method.
        max_steps: a reduced training budget for every run (default: the profile's).
        methods: a subset of the protocol's methods (default: all of them).
        overrides: ``--set`` overrides applied to every run (after the profile).
        progress: progress bars while training.
        test_curve: score the test split at every validation too, for learning-curve figures.
        jobs: runs side by side, each its own process with its share of the CPUs
            (:mod:`leads.side_by_side`).

    Returns:
        ``{"runs": [(method, seed, state before, run directory)], "leaderboard": markdown}``.
    """
    from leads.batch import jobs_for, prepare, run_batch
    from leads.config.loading import system_of
    from leads.datasets.progress import announce
    from leads.jobs import run_experiment
    from leads.reporting import leaderboard
    from leads.reporting.results import read_rows, results_path
    from leads.side_by_side import job_command, run_batch_side_by_side
    from leads.threads import use_threads

    protocols = load_protocols()
    check_replaced(name)
    if name not in protocols:
        raise UserError(f"unknown protocol '{name}'; choose one of: {', '.join(sorted(protocols))}")
    protocol = protocols[name]
    cfgs = plan(protocol, seeds, max_steps, methods, overrides)
    for cfg in cfgs:
        check_output_dirs(cfg)
    if jobs < 1:
        raise UserError(f"--jobs {jobs} must be at least 1")
    announce(use_threads(cfgs[0], system_of(cfgs[0]).state_shape).describe(), progress)
    parallel, jobs = jobs, jobs_for(cfgs)
    prepare(jobs, progress)

    def run(job: Any, resume: bool) -> Path:
        out = run_experiment(job.cfg, resume=resume, progress=progress, test_curve=test_curve)
        return out["run"].run_dir

    if parallel == 1:
        done = run_batch(jobs, run, protocol.name)
    else:
        budget = [f"train.max_steps={max_steps}"] if max_steps is not None else []

        def command(job: Any, resume: bool) -> tuple[str, ...]:
            return job_command(protocol.system, protocol.profile, [*overrides, *budget], job.cfg.method, job.cfg.seed,
                               [*(["--resume"] if resume else []), *(["--test-curve"] if test_curve else [])])

        done = run_batch_side_by_side(jobs, command, protocol.name, parallel, progress)
    lb = leaderboard.for_config(read_rows(results_path(cfgs[0])), cfgs[0])
    written = leaderboard.write_or_say(lb, results_path(cfgs[0]).parent)
    return {"runs": [(d.job.cfg.method, d.job.cfg.seed, d.state, d.run_dir) for d in done],
            "leaderboard": leaderboard.to_markdown(lb) + f"\n{written}\n",
            "failed": [d.job.label for d in done if d.error]}

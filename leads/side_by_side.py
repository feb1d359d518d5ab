"""Jobs side by side on one machine (``--jobs N``), each with its own share of the CPUs.

A job is a command (one run: ``python run.py --env ... --method M --seed S``) and the file its
whole output goes to. :func:`run_side_by_side` runs them as subprocesses, at most as many at
once as there are usable CPUs (:func:`leads.threads.usable_cpus`): never more threads than
CPUs. Each of the ``slots`` running at once owns a disjoint set of CPUs: the job in it is pinned
to them where the platform allows (``os.sched_setaffinity``) and told its share
(``LEADS_CPU_SHARE``), within which its thread policy chooses (``leads.threads``).
:func:`run_batch_side_by_side` runs a batch of :mod:`leads.batch` so: finished runs skipped,
interrupted ones resumed, each of the others started as ``python -m leads`` with its method and seed.

Output stays readable: one line per job, its latest progress line, redrawn in place on a
terminal; elsewhere (a log) a job's line is printed when it changes (its progress lines come at
most every 30 s a phase, and at milestones). Each job's full output is in its log file, named when
it starts and when it ends.

Result rows need nothing here: every run appends its own under a file lock
(``leads.reporting.results``), and data files are generated under a lock
(``leads.datasets.cache``), so runs of one data configuration wait for one generation.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TextIO

from leads.envs.errors import UserError
from leads.threads import ENV_CPU_SHARE, usable_cpus


@dataclass(frozen=True)
class JobSpec:
    """One job: what to call it, the command that runs it, the file its output goes to."""

    label: str
    argv: tuple[str, ...]
    log: Path


@dataclass(frozen=True)
class JobOutcome:
    spec: JobSpec
    returncode: int  # 0: finished; 130: interrupted; else failed
    seconds: float
    last_line: str  # its output's last line: an error, or how to continue it
    cpus: tuple[int, ...] = ()


@dataclass
class _Running:
    spec: JobSpec
    proc: subprocess.Popen
    slot: int
    start: float
    log: IO[bytes]
    reader: IO[bytes]
    status: str = ""
    pending: bytes = b""
    lines: list[str] = field(default_factory=list)


def job_command(env: str, profile: str | None, overrides: Sequence[str], method: str, seed: int,
                flags: Sequence[str] = ()) -> tuple[str, ...]:
    """The command of one run: ``python -m leads --env ENV [--profile P] --set K=V ... --method M
    --seed S FLAGS`` (the same as ``python run.py ...``)."""
    return (sys.executable, "-m", "leads", "--env", env, *(["--profile", profile] if profile else []),
            *(f"--set={o}" for o in overrides), "--method", method, "--seed", str(seed), *flags)


def log_dir(runs_dir: str | Path, system: str) -> Path:
    """Where the logs of a batch started now go: ``<runs_dir>/<system>/logs/<date>-<time>``, a new
    directory (a later batch never writes into an earlier one's logs)."""
    root = Path(runs_dir) / system / "logs"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        path = root / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            continue
    raise UserError(f"cannot make a new log directory under {root}; remove old ones")


def log_name(label: str) -> str:
    """A job's label as a file name: ``lowrank seed 0`` -> ``lowrank-seed-0.log``."""
    return "".join(c if c.isalnum() or c in "._+-" else "-" for c in label) + ".log"


def run_batch_side_by_side(jobs: Sequence[Any], command: Callable[[Any, bool], Sequence[str]], title: str,
                           parallel: int, progress: bool = True) -> list[Any]:
    """:func:`leads.batch.run_batch` with up to ``parallel`` jobs at once, each its own process:
    finished jobs are skipped, interrupted ones resumed (``command(job, resume)`` is the command
    of one job), the others started; a job that fails is reported and the others go on. The
    logs go to a new :func:`log_dir` of the first job's ``runs_dir`` and system.

    Returns:
        One :class:`leads.batch.Done` per job, its ``error`` the way a failed job ended.
    """
    from leads.batch import FINISHED, INTERRUPTED, NEW, Done, job_state

    states = [job_state(job.cfg) for job in jobs]
    for i, (job, (state, run_dir)) in enumerate(zip(jobs, states, strict=True), 1):
        print(f"[{i}/{len(jobs)}] {title}: {job.label}: " + {FINISHED: f"finished in {run_dir}, skipped",
                                                               INTERRUPTED: f"to resume {run_dir}",
                                                               NEW: "to start"}[state], flush=True)
    todo = [(job, state) for job, (state, _) in zip(jobs, states, strict=True) if state != FINISHED]
    logs = log_dir(jobs[0].cfg.runs_dir, jobs[0].cfg.system_name) if todo else Path()
    specs = [JobSpec(job.label, tuple(command(job, state == INTERRUPTED)), logs / log_name(job.label))
             for job, state in todo]
    if specs:
        print(f"{title}: {len(specs)} run{'s' if len(specs) > 1 else ''}, up to {parallel} side by side; "
              f"their logs: {logs}", flush=True)
    outcomes = iter(run_side_by_side(specs, parallel, progress=progress) if specs else [])
    done = []
    for job, (state, run_dir) in zip(jobs, states, strict=True):
        if state == FINISHED:
            done.append(Done(job, state, run_dir))
            continue
        outcome = next(outcomes)
        error = None if outcome.returncode == 0 else _ending(outcome)
        done.append(Done(job, state, job_state(job.cfg)[1] or run_dir, error))
    return done


def cpu_slots(cpus: Sequence[int], usable: int, slots: int) -> list[tuple[tuple[int, ...], int]]:
    """Split the CPUs ``cpus`` (this process's affinity) into ``slots`` disjoint sets, with each
    slot's share of ``usable`` CPUs (fewer than ``len(cpus)`` under a cgroup quota): ``[(cpus,
    share)]``, the first slots one larger where the split is uneven."""
    if slots < 1 or slots > usable:
        raise ValueError(f"{slots} slots for {usable} usable CPUs")
    cpus = sorted(cpus)
    out, start = [], 0
    for i in range(slots):
        size = _part(len(cpus), slots, i)
        chunk = cpus[start:start + size] if len(cpus) >= slots else cpus  # fewer CPUs than slots: a quota
        start += size
        out.append((tuple(chunk), _part(usable, slots, i)))
    return out


def _part(n: int, parts: int, i: int) -> int:
    """The ``i``-th of ``parts`` near-equal parts of ``n``, the first ones larger."""
    return n // parts + (1 if i < n % parts else 0)


def slots_for(jobs: int, n_specs: int, usable: int) -> tuple[int, str | None]:
    """How many jobs run at once for ``--jobs jobs``: at most the usable CPUs and the jobs there
    are; with a note when fewer than asked for."""
    if jobs < 1:
        raise UserError(f"--jobs {jobs} must be at least 1")
    slots = max(1, min(jobs, usable, n_specs))
    note = None
    if jobs > usable and n_specs > usable:
        note = f"--jobs {jobs}: {usable} usable CPU{'s' if usable > 1 else ''}, so {slots} at a time (never more " \
               "threads than CPUs)"
    return slots, note


def run_side_by_side(specs: Sequence[JobSpec], jobs: int, stream: TextIO | None = None,
                     environ: Mapping[str, str] | None = None, poll_s: float = 0.5,
                     cpus: Sequence[int] | None = None, usable: int | None = None,
                     progress: bool = True) -> list[JobOutcome]:
    """Run ``specs`` as subprocesses, ``jobs`` at a time at most (fewer where the usable CPUs
    are fewer), in order; return their outcomes in the order of ``specs``.

    A job that fails does not stop the others. Ctrl-C (or SIGTERM) interrupts every running job
    once (each saves what it can and writes how to continue it to its log) and starts no more.

    Args:
        specs: the jobs.
        jobs: how many may run at once (``--jobs``).
        stream: where the progress lines go (default: stderr).
        environ: the jobs' environment (default: this process's).
        poll_s: seconds between looks at the jobs' logs.
        cpus: the CPUs to share out (default: this process's affinity).
        usable: how many of them may be used (default: :func:`leads.threads.usable_cpus`).
        progress: show each running job's latest line (else only when each starts and ends).
    """
    stream = sys.stderr if stream is None else stream
    environ = dict(os.environ if environ is None else environ)
    if cpus is None:
        cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    usable = usable_cpus(environ).count if usable is None else usable
    slots, note = slots_for(jobs, len(specs), usable)
    board = _Board(stream)
    if note:
        board.say(note)
    layout = cpu_slots(cpus, usable, slots)
    queue = list(enumerate(specs))
    running: dict[int, _Running] = {}
    outcomes: dict[int, JobOutcome] = {}

    def finish(index: int, job: _Running, code: int) -> None:
        _read(job)
        job.log.close()
        job.reader.close()
        outcomes[index] = JobOutcome(job.spec, code, time.perf_counter() - job.start,
                                     job.lines[-1] if job.lines else "", layout[job.slot][0])
        del running[index]
        board.done(job.spec.label, _ending(outcomes[index]))

    try:
        while queue or running:
            free = [s for s in range(slots) if s not in {r.slot for r in running.values()}]
            while queue and free:
                index, spec = queue.pop(0)
                slot = free.pop(0)
                running[index] = _start(spec, slot, layout[slot], environ)
                board.say(f"{spec.label}: started ({_cpus_text(layout[slot])}); log: {spec.log}")
            for index, job in list(running.items()):
                _read(job)
                code = job.proc.poll()
                if code is not None:
                    finish(index, job, code)
            if progress:
                board.show({job.spec.label: job.status for _, job in sorted(running.items())})
            if running:
                time.sleep(poll_s)
    except BaseException:  # Ctrl-C, SIGTERM, or a job that could not start: no job is left behind
        for job in running.values():
            if job.proc.poll() is None:
                job.proc.send_signal(signal.SIGINT)
        try:
            for index, job in list(running.items()):
                finish(index, job, job.proc.wait())
        except KeyboardInterrupt:  # a second Ctrl-C: end the jobs now
            for index, job in list(running.items()):
                job.proc.kill()
                finish(index, job, job.proc.wait())
        board.close()
        raise
    board.close()
    return [outcomes[i] for i in sorted(outcomes)]


def _start(spec: JobSpec, slot: int, layout: tuple[tuple[int, ...], int], environ: dict[str, str]) -> _Running:
    cpus, share = layout
    spec.log.parent.mkdir(parents=True, exist_ok=True)
    log = open(spec.log, "ab")  # appended: a log is never overwritten  # noqa: SIM115 - closed when it ends
    env = {**environ, ENV_CPU_SHARE: str(share), "LEADS_PROGRESS": "lines", "PYTHONUNBUFFERED": "1"}
    # Its own session: Ctrl-C on the terminal reaches this process alone, which interrupts each
    # job exactly once (a second signal would cut the job's own clean-up short).
    proc = subprocess.Popen(list(spec.argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            env=env, start_new_session=True)
    if hasattr(os, "sched_setaffinity") and cpus:
        try:  # before its first thread exists: its interpreter takes far longer to start than this call
            os.sched_setaffinity(proc.pid, cpus)
        except OSError:  # the job ended already, or pinning is not allowed here: its share still holds
            pass
    return _Running(spec, proc, slot, time.perf_counter(), log, open(spec.log, "rb"))  # noqa: SIM115


def _read(job: _Running) -> None:
    """New complete lines of the job's log; its status is the last non-empty one."""
    data = job.pending + job.reader.read()
    *complete, job.pending = data.split(b"\n")
    for raw in complete:
        line = raw.decode(errors="replace").rstrip("\r").strip()
        if "\r" in line:  # a redrawn bar: its latest state
            line = line.rsplit("\r", 1)[-1].strip()
        if line:
            job.lines = [*job.lines[-19:], line]
            job.status = line


def _cpus_text(layout: tuple[tuple[int, ...], int]) -> str:
    cpus, share = layout
    pinned = f" on CPU{'s' if len(cpus) > 1 else ''} {','.join(map(str, cpus))}" if cpus else ""
    return f"{share} CPU{'s' if share > 1 else ''}{pinned}"


def _ending(o: JobOutcome) -> str:
    took = f"{o.seconds:.0f} s"
    if o.returncode == 0:
        return f"done in {took}; log: {o.spec.log}"
    what = "interrupted" if o.returncode in (130, -signal.SIGINT) else f"failed (exit {o.returncode})"
    return f"{what} after {took}: {o.last_line}; log: {o.spec.log}"


class _Board:
    """One line per running job: redrawn in place on a terminal, printed when it changes elsewhere."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.drawn = 0  # lines of the block now on the terminal
        self.last: dict[str, str] = {}

    def _clear(self) -> None:
        if self.tty and self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")  # up to the block's first line, erase below
            self.drawn = 0

    def say(self, line: str) -> None:
        """A line that stays (above the block on a terminal)."""
        self._clear()
        print(line, file=self.stream, flush=True)

    def done(self, label: str, text: str) -> None:
        self.last.pop(label, None)
        self.say(f"{label}: {text}")

    def show(self, status: dict[str, str]) -> None:
        if self.tty:
            width = max(20, _columns() - 1)
            self._clear()
            for label, text in status.items():
                self.stream.write(f"{label}: {text or 'starting'}"[:width] + "\n")
            self.drawn = len(status)
            self.stream.flush()
            return
        for label, text in status.items():
            if text and self.last.get(label) != text:
                self.last[label] = text
                print(f"{label}: {text}", file=self.stream, flush=True)

    def close(self) -> None:
        self._clear()
        self.stream.flush()


def _columns() -> int:
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):
        return 120

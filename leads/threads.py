"""How many threads torch computes with: chosen for the work, within the CPUs this process may use.

Torch starts with one intra-op thread per core it sees. For the small networks of ODE systems
that buys nothing, and on a shared machine it costs a great deal: OpenMP threads wait for each
other at every operation, spinning while the partner thread waits for a core another process
holds. On a loaded 2-core machine ``benchmarks/thread_probe.py`` measured a second thread making
a training step 1.9-25x slower, and two copies of the Lotka-Volterra main job stepped 2.2x faster
with one thread each than with two (docs/parallel_runs.md).

The count, first of:

1. ``LEADS_NUM_THREADS`` (a count, or ``auto``);
2. the config key ``threads`` (a count; ``null``, the default, or ``auto``: as below);
3. ``OMP_NUM_THREADS``, when set (torch reads it at start-up; it is kept);
4. ``auto``: one thread per ``WORK_PER_THREAD`` activations of a network layer on a training
   batch (batch x width x grid points; under twice that, one), at most the usable CPUs that other
   processes leave free (sampled from ``/proc/stat`` for ``BUSY_SAMPLE_S``, only for work that
   would take more than one thread).

The usable CPUs are the fewest of: the CPUs the process may run on (``os.sched_getaffinity``),
its cgroup's CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``) and
``LEADS_CPU_SHARE`` (set for each job by ``--jobs``, :mod:`leads.side_by_side`), divided among
the processes of a multi-device CPU run. Inter-op threads (torch's pool for independent
operations run side by side, which nothing here uses) are one.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from leads.envs.errors import UserError

if TYPE_CHECKING:
    from leads.config.schema import RunConfig

ENV_THREADS = "LEADS_NUM_THREADS"
ENV_CPU_SHARE = "LEADS_CPU_SHARE"  # the CPUs of one job of a --jobs batch
CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_SELF_CGROUP = Path("/proc/self/cgroup")
PROC_STAT = Path("/proc/stat")
BUSY_SAMPLE_S = 0.3  # how long the CPUs' use by other processes is sampled, only for work worth threads
# Activations per layer (batch x width x grid points) each thread needs: a second thread takes
# twice this. On the 2-core reference machine no model gained from a second thread under load
# (benchmarks/thread_probe.py), nor Gray-Scott's quick main job on idle cores (180 s with one,
# 236 s with two; docs/parallel_runs.md), so every shipped quick profile (at most Gray-Scott's
# 262,144) gets one, and only the paper_code profiles of Kolmogorov (655,360) and Gray-Scott
# (1,048,576) more, where CPUs are free.
WORK_PER_THREAD = 2**18


@dataclass(frozen=True)
class CPULimit:
    """The CPUs a process may use (``count``, at least 1) and which limit set it (``source``)."""

    count: int
    source: str


@dataclass(frozen=True)
class Work:
    """The size of the work, as the policy sees it: activations of a layer on one batch."""

    size: int
    description: str


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    interop: int
    reason: str

    def describe(self) -> str:
        """The one line a run logs."""
        return f"torch threads: {self.threads} ({self.reason})"


def prefer_sleeping_waits(environ: dict[str, str] | None = None) -> None:
    """OpenMP threads that wait for each other sleep instead of spinning, unless the user chose
    (``OMP_WAIT_POLICY``, ``GOMP_SPINCOUNT``): a spinning thread burns the core its partner needs
    when other processes hold the rest (docs/parallel_runs.md). OpenMP reads this once, when torch
    is first imported: call it before."""
    environ = os.environ if environ is None else environ
    if "OMP_WAIT_POLICY" not in environ and "GOMP_SPINCOUNT" not in environ:
        environ["OMP_WAIT_POLICY"] = "PASSIVE"


# ------------------------------------------------------------------------------ the CPUs
def affinity_cpus() -> int | None:
    """How many CPUs this process may run on; None where the platform cannot say (macOS)."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    return len(getaffinity(0)) if getaffinity is not None else None


def cgroup_cpu_quota(root: Path = CGROUP_ROOT, self_cgroup: Path = PROC_SELF_CGROUP) -> float | None:
    """The CPUs this process's cgroup quota allows (e.g. 1.5), the tightest along its cgroup path
    and the mount's root (a container sees the host's path); None without a quota."""
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # cgroup v2: <root>/<path>/cpu.max = "<quota|max> <period>"
            for d in _dirs_up(root, path):
                quotas.append(_read_quota(d / "cpu.max"))
        elif "cpu" in controllers.split(","):  # cgroup v1
            for mount in (root / "cpu", root / "cpu,cpuacct", root / "cpuacct,cpu"):
                for d in _dirs_up(mount, path):
                    quotas.append(_read_v1_quota(d))
    found = [q for q in quotas if q is not None]
    return min(found) if found else None


def _dirs_up(mount: Path, path: str) -> list[Path]:
    parts = [p for p in path.strip("/").split("/") if p]
    return [mount.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _read_quota(path: Path) -> float | None:
    try:
        quota, period = path.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _read_v1_quota(d: Path) -> float | None:
    try:
        quota = int((d / "cpu.cfs_quota_us").read_text())
        period = int((d / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return quota / period if quota > 0 and period > 0 else None


def usable_cpus(environ: Mapping[str, str] | None = None, affinity: int | None = None,
                quota: float | None = None, processes: int = 1) -> CPULimit:
    """The CPUs one of ``processes`` processes started together may use: the fewest of its
    affinity, its cgroup quota (rounded down) and ``LEADS_CPU_SHARE``, shared among ``processes``.
    ``affinity`` and ``quota`` default to this process's (:func:`affinity_cpus`, :func:`cgroup_cpu_quota`)."""
    environ = os.environ if environ is None else environ
    affinity = affinity_cpus() if affinity is None else affinity
    quota = cgroup_cpu_quota() if quota is None else quota
    limits = []  # on a tie the first names the limit: a --jobs share, then a quota, then the affinity
    share = environ.get(ENV_CPU_SHARE, "").strip()
    if share:
        limits.append((_count(share, ENV_CPU_SHARE), "its share of a --jobs batch"))
    if quota is not None:
        limits.append((max(1, math.floor(quota)), f"cgroup quota {quota:g} CPUs"))
    limits.append((affinity or os.cpu_count() or 1, "affinity" if affinity else "cores"))
    count, source = min(limits, key=lambda cs: cs[0])
    if processes > 1:
        count, source = max(1, count // processes), f"{source}, shared by {processes} processes"
    return CPULimit(count, f"{count} usable CPU{'s' if count > 1 else ''}: {source}")


def busy_cpus(cpus: Collection[int], seconds: float = BUSY_SAMPLE_S, stat: Path = PROC_STAT,
              sleep: Callable[[float], None] = time.sleep) -> float | None:
    """How many of ``cpus`` were busy over the next ``seconds`` (from ``/proc/stat``), while this
    process sleeps: the work of other processes; None where it cannot be read."""
    before = _cpu_times(stat, cpus)
    sleep(seconds)
    after = _cpu_times(stat, cpus)
    if not before or before.keys() != after.keys():
        return None
    busy = 0.0
    for cpu, (total, idle) in after.items():
        d_total, d_idle = total - before[cpu][0], idle - before[cpu][1]
        busy += (d_total - d_idle) / d_total if d_total > 0 else 0.0
    return busy


def _cpu_times(stat: Path, cpus: Collection[int]) -> dict[int, tuple[int, int]]:
    """``{cpu: (total, idle)}`` jiffies of ``cpus`` (idle counts iowait: a core waiting on a disk is free)."""
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return {}
    out = {}
    for line in lines:
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            try:
                values = [int(v) for v in fields[:8]]  # user nice system idle iowait irq softirq steal
            except ValueError:
                return {}
            out[int(name[3:])] = (sum(values), values[3] + (values[4] if len(values) > 4 else 0))
    return out


# ------------------------------------------------------------------------------ the work
def work_size(model: Mapping[str, Any], state_shape: Sequence[int], batch: int) -> int:
    """Activations of one hidden layer on one batch: batch x width x grid points (ODE states: 1)."""
    return int(batch) * int(_field(model, "width")) * math.prod(int(n) for n in state_shape[1:])


def model_work(model: Mapping[str, Any], state_shape: Sequence[int], batch: int) -> Work:
    grid = "x".join(str(n) for n in state_shape[1:])
    where = f" on a {grid} grid" if grid else ""
    size = work_size(model, state_shape, batch)
    return Work(size, f"{_field(model, 'width')}-wide {_field(model, 'name')}{where}, batch {batch}: "
                      f"{size:,} activations a layer")


def _field(model: Any, key: str) -> Any:
    """A model setting from a typed configuration (an attribute) or a plain mapping (a key)."""
    return getattr(model, key) if hasattr(model, key) else model[key]


# ------------------------------------------------------------------------------ the choice
def choose_threads(setting: int | str | None, work: Work, cpus: CPULimit,
                   environ: Mapping[str, str] | None = None,
                   busy: Callable[[], float | None] | None = None) -> ThreadChoice:
    """The thread count (see the module docstring for the order of precedence) and why. A job of
    a ``--jobs`` batch (``LEADS_CPU_SHARE`` set) never takes more threads than its share. ``busy``
    says how many of the usable CPUs other processes keep busy (:func:`busy_cpus`); it is asked
    only when the work would take more than one thread."""
    environ = os.environ if environ is None else environ
    capped = bool(environ.get(ENV_CPU_SHARE, "").strip())
    asked = environ.get(ENV_THREADS, "").strip().lower()
    if asked and asked != "auto":
        return _explicit(_count(asked, ENV_THREADS), f"{ENV_THREADS}={asked}", cpus, capped)
    if not asked and setting not in (None, "auto"):
        return _explicit(int(setting), f"config threads={setting}", cpus, capped)
    omp = environ.get("OMP_NUM_THREADS", "").strip()
    if not asked and omp:
        return _explicit(_count(omp.split(",")[0], "OMP_NUM_THREADS"), f"OMP_NUM_THREADS={omp}", cpus, capped)
    threads = max(1, min(cpus.count, work.size // WORK_PER_THREAD))
    if work.size < 2 * WORK_PER_THREAD:
        return ThreadChoice(1, 1, f"auto: {work.description}, under the {2 * WORK_PER_THREAD:,} two threads need; "
                                  f"{cpus.source}")
    why = f"auto: {work.description}, one thread per {WORK_PER_THREAD:,}; {cpus.source}"
    taken = busy() if threads > 1 and busy is not None else None
    if taken is not None and round(taken) > 0:
        # A thread on a core another process holds makes every operation wait for it.
        threads = max(1, min(threads, cpus.count - round(taken)))
        why += f", {taken:.1f} of them busy with other processes"
    return ThreadChoice(threads, 1, why)


def _explicit(n: int, source: str, cpus: CPULimit, capped: bool) -> ThreadChoice:
    if n <= cpus.count:
        return ThreadChoice(n, 1, source)
    if capped:
        return ThreadChoice(cpus.count, 1, f"{source}, capped at {cpus.source}")
    return ThreadChoice(n, 1, f"{source}, oversubscribing {cpus.source}")


def _count(text: str, name: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise UserError(f"{name}={text!r} is not a thread count: set it to an integer >= 1 (or unset it)")
    return n


def apply_threads(choice: ThreadChoice) -> ThreadChoice:
    """Set torch's thread counts. The inter-op count can be set only once in a process, before
    any inter-op work: a later call keeps the first."""
    import torch

    torch.set_num_threads(choice.threads)
    if torch.get_num_interop_threads() != choice.interop:
        try:
            torch.set_num_interop_threads(choice.interop)
        except RuntimeError:  # already set, or the pool already started
            pass
    return choice


def use_threads(cfg: RunConfig, state_shape: Sequence[int], environ: Mapping[str, str] | None = None
                ) -> ThreadChoice:
    """Choose and set the threads of a run of ``cfg`` whose states are shaped ``state_shape``."""
    processes = int(cfg.devices or 1) if _on_cpu(cfg) else 1
    cpus = usable_cpus(environ, processes=max(1, processes))
    work = model_work(cfg.model.to_dict(), state_shape, cfg.data.batch_size)
    mine = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return apply_threads(choose_threads(cfg.threads, work, cpus, environ, busy=lambda: busy_cpus(mine)))


def _on_cpu(cfg: RunConfig) -> bool:
    device = cfg.device
    if device == "cpu":
        return True
    if device != "auto":
        return False
    import torch

    return not torch.cuda.is_available()

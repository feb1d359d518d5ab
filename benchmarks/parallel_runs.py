"""k copies of a main job at once: wall time and seconds per training step against one alone.

    python benchmarks/parallel_runs.py [--envs lotka_volterra gray_scott] [--ks 1 2 4]
        [--before-ks 1] [--set KEY=VALUE ...]

For each system and each k, starts k copies of ``python run.py --env ENV`` (the main job: train,
score, adapt, figures) at the same moment, each with its own runs and results directories and
the same data (generated once beforehand, so the copies time training, not a wait for one
generation). Every copy's progress lines (``LEADS_PROGRESS=lines``) are stamped with the seconds
since its start; its training lines (``training ...: 250/1500 steps``, at every validation and
at most 30 s apart) give its seconds per step over intervals of at least ``--min-steps`` steps.

Reported per (system, mode, k): the threads each copy chose (its ``torch threads:`` line), the
wall time of the slowest copy and its ratio to one copy alone, the training seconds per step
(mean over copies) and its ratio to one alone, and the drift: the largest ratio, within one
copy, of its slowest interval's seconds per step to its fastest.

Modes: ``policy`` runs ``run.py`` as it is; ``before`` runs it as torch's defaults did before the
thread policy: one thread per core (``LEADS_NUM_THREADS``) and OpenMP's default spin before a
waiting thread sleeps (``GOMP_SPINCOUNT=300000``, libgomp's default), the failure mode of several
copies on a small machine. ``--before-ks`` picks the k of that mode (``1``: "one job alone is
no slower than before"; ``2`` reproduces the oversubscription, slowly).

Goals (2-core machine): two LV copies within 2.2x the wall time of one alone, four within 4.5x;
seconds per step never drift more than 1.5x within a run; one job alone no slower than before.
Writes ``benchmarks/out/parallel_runs.json`` and prints a Markdown table. Run it on an idle
machine and state the load.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import ROOT, table, write_json

TRAIN_LINE = re.compile(r"^training .*?: (?:done, )?(\d+)/(\d+) steps")
THREADS_LINE = re.compile(r"^torch threads: (\d+)")


def intervals(stamps: list[tuple[float, int]], min_steps: int) -> list[float]:
    """Seconds per step over consecutive intervals of at least ``min_steps`` steps (the last,
    shorter one joins the one before), from ``(seconds, step)`` readings in time order."""
    out: list[tuple[float, int]] = []
    t0, s0 = stamps[0] if stamps else (0.0, 0)
    for t, s in stamps[1:]:
        if s - s0 >= min_steps:
            out.append((t - t0, s - s0))
            t0, s0 = t, s
    if stamps and s0 < stamps[-1][1]:  # a short tail: merged into the last interval
        t, s = stamps[-1]
        if out:
            dt, ds = out.pop()
            out.append((dt + t - t0, ds + s - s0))
        else:
            out.append((t - t0, s - s0))
    return [dt / ds for dt, ds in out if ds > 0]


def _copy(argv: list[str], env: dict[str, str], cwd: Path, start: float, out: dict) -> None:
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = [(time.perf_counter() - start, line.rstrip("\n")) for line in proc.stdout]
    out.update(returncode=proc.wait(), wall=time.perf_counter() - start, lines=lines)


def run_copies(env_name: str, k: int, mode: str, overrides: list[str], data: Path, tmp: Path,
               min_steps: int) -> dict:
    env = {**os.environ, "LEADS_PROGRESS": "lines"}
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "LEADS_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        env.pop(name, None)  # the policy (or, for "before", torch's old defaults) chooses
    if mode == "before":
        env.update(LEADS_NUM_THREADS=str(len(os.sched_getaffinity(0))), GOMP_SPINCOUNT="300000")
    copies: list[dict] = [{} for _ in range(k)]
    start = time.perf_counter()
    workers = []
    for i in range(k):
        work = tmp / f"{env_name}-{mode}-k{k}-{i}"
        work.mkdir(parents=True)
        argv = [sys.executable, str(ROOT / "run.py"), "--env", env_name, f"--runs_dir={work / 'runs'}",
                f"--results_dir={work / 'results'}", f"--data.dir={data}",
                *(f"--{o}" for o in overrides)]
        workers.append(threading.Thread(target=_copy, args=(argv, env, work, start, copies[i])))
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for i, c in enumerate(copies):
        if c["returncode"] != 0:
            tail = "\n".join(line for _, line in c["lines"][-20:])
            raise SystemExit(f"{env_name} copy {i} ({mode}, k={k}) failed:\n{tail}")
        steps = [(t, int(m.group(1))) for t, line in c["lines"] if (m := TRAIN_LINE.match(line))]
        c["threads"] = next((int(m.group(1)) for _, line in c["lines"] if (m := THREADS_LINE.match(line))), None)
        c["s_per_step_intervals"] = intervals(steps, min_steps)
        c["s_per_step"] = (steps[-1][0] - steps[0][0]) / max(1, steps[-1][1] - steps[0][1]) if steps else None
        c["steps"] = steps[-1][1] if steps else 0
        c["lines"] = [f"{t:8.1f}  {line}" for t, line in c["lines"]]
    return {"env": env_name, "mode": mode, "k": k, "copies": copies,
            "wall_s": max(c["wall"] for c in copies),
            "s_per_step": sum(c["s_per_step"] for c in copies) / k,
            "drift": max(max(c["s_per_step_intervals"]) / min(c["s_per_step_intervals"]) for c in copies),
            "threads": sorted({c["threads"] for c in copies}, key=str)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", nargs="+", default=["lotka_volterra", "gray_scott"])
    p.add_argument("--ks", nargs="+", type=int, default=[1, 2, 4], help="copies at once (policy mode)")
    p.add_argument("--before-ks", nargs="*", type=int, default=[1], help="copies at once with torch's old defaults")
    p.add_argument("--min-steps", type=int, default=100, help="steps per interval of the drift measure")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override of every copy")
    args = p.parse_args()
    load_start = os.getloadavg()[0]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for env_name in args.envs:
            data = Path(tmp) / "data"
            subprocess.run([sys.executable, str(ROOT / "run.py"), "generate", "--env", env_name, f"--data.dir={data}",
                            *(f"--{o}" for o in args.set)], check=True, cwd=tmp, capture_output=True)
            plan = [("policy", k) for k in args.ks] + [("before", k) for k in args.before_ks]
            for mode, k in plan:
                r = run_copies(env_name, k, mode, args.set, data, Path(tmp), args.min_steps)
                results.append(r)
                print(f"{env_name} {mode} k={k}: wall {r['wall_s']:.0f} s, {r['s_per_step'] * 1e3:.0f} ms/step, "
                      f"drift {r['drift']:.2f}x, threads {r['threads']}, load {os.getloadavg()[0]:.2f}", flush=True)
    load_end = os.getloadavg()[0]
    rows = []
    for r in results:
        alone = next((a for a in results if a["env"] == r["env"] and a["mode"] == "policy" and a["k"] == 1), None)
        rows.append([r["env"], r["mode"], r["k"], ",".join(map(str, r["threads"])), f"{r['wall_s']:.0f}",
                     f"{r['wall_s'] / alone['wall_s']:.2f}" if alone else "—", f"{r['s_per_step'] * 1e3:.0f}",
                     f"{r['s_per_step'] / alone['s_per_step']:.2f}" if alone else "—", f"{r['drift']:.2f}"])
    print(table(["system", "mode", "k", "threads", "wall s (slowest)", "wall vs 1 alone", "ms/step", "vs 1 alone",
                 "drift (max/min)"], rows))
    print(f"load average {load_start:.2f} at start, {load_end:.2f} at end")
    written = write_json("parallel_runs.json", {"load_start": load_start, "load_end": load_end, "runs": results})
    print(f"wrote {written}")


if __name__ == "__main__":
    main()

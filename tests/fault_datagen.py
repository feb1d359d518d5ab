"""Kill data generation at many points, rerun it, and report what was left on disk (JSON).

    python tests/fault_datagen.py TMP_DIR SEED N_LINE_KILLS N_TIME_KILLS

Used by tests/test_faults_data.py. Generation of the tiny Lotka-Volterra dataset runs in forked
children: one into ``TMP_DIR/ref`` uninterrupted, then, into ``TMP_DIR/data``, children that are
SIGKILLed either when a chosen source line of the cache / writer / generator runs for the n-th
time (a tracer picks the line: every line of the HDF5 writer, random ones of the others), or
from outside after a random delay. Before each kill a random subset of the finished files is
deleted, so that every kill interrupts real work. After every kill, every
file at a final split name must pass the cache's own check (complete, right config, shapes,
readable, finite). A last uninterrupted child completes the dataset, which must then equal the
reference bit for bit. Children are forked so the imports are paid once; the parent itself
runs no torch computation (one thread, as the caller sets OMP_NUM_THREADS=1).
"""

from __future__ import annotations

import dis
import json
import os
import random
import signal
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import h5py  # noqa: E402
import numpy as np  # noqa: E402
from tiny import tiny_config  # noqa: E402

import leads.datasets.atomic as atomic  # noqa: E402
import leads.datasets.cache as cache  # noqa: E402
import leads.datasets.generate as generate  # noqa: E402
import leads.datasets.h5 as h5  # noqa: E402
from leads.datasets.cache import ensure_dataset  # noqa: E402
from leads.datasets.splits import split_path  # noqa: E402
from leads.envs.registry import get_system  # noqa: E402

FUNCTIONS = {"h5.write_split": h5.write_split, "atomic.atomic_write": atomic.atomic_write.__wrapped__,
             "cache._prepare": cache._prepare,
             "generate.generate_states": generate.generate_states}


def _setup(data_dir: Path):
    cfg = tiny_config("lotka_volterra", data_dir.parent, f"data.dir={data_dir}")
    system = get_system("lotka_volterra", **cfg.system)
    return system, cache.parse_data_config(cfg.data)


def _fork(data_dir: Path, trace: tuple | None = None) -> int:
    """Run generation into ``data_dir`` in a child; return its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 3
    try:
        system, cfg = _setup(data_dir)
        if trace is not None:
            _arm(*trace)
        ensure_dataset(system, cfg, progress=False)
        code = 0
    finally:
        os._exit(code)


def _arm(target_code, line: int, nth: int) -> None:
    hits = [0]

    def local(frame, event, arg):
        if event == "line" and frame.f_lineno == line:
            hits[0] += 1
            if hits[0] == nth:
                os.kill(os.getpid(), signal.SIGKILL)
        return local

    sys.settrace(lambda frame, event, arg: local if frame.f_code is target_code else None)


def _wait(pid: int, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if os.WIFSIGNALED(status):
                return f"signal {os.WTERMSIG(status)}"
            return f"exit {os.WEXITSTATUS(status)}"
        time.sleep(0.005)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return "hung"


def _violations(data_dir: Path) -> tuple[list[str], int]:
    """Files at a final name that the cache would not accept, and how many files are valid."""
    system, cfg = _setup(data_dir)
    specs = cache._all_specs(system, cfg, {})
    bad, valid = [], 0
    for name, spec in specs.items():
        path = split_path(system, cfg, name)
        if path.exists():
            reason = cache._check(system, spec, path)
            if reason is None:
                valid += 1
            else:
                bad.append(f"{path.name}: {reason}")
    return bad, valid


def _compare(a: Path, b: Path) -> list[str]:
    diffs = []
    with h5py.File(a, "r") as fa, h5py.File(b, "r") as fb:
        for key in ("t", "params", "seeds", "states"):
            if not np.array_equal(fa[key][()], fb[key][()]):
                diffs.append(f"{a.name}: {key} differs")
        if dict(fa.attrs.items()).keys() != dict(fb.attrs.items()).keys():
            diffs.append(f"{a.name}: attribute names differ")
        for key, value in fa.attrs.items():
            if not np.array_equal(np.asarray(value), np.asarray(fb.attrs[key])):
                diffs.append(f"{a.name}: attribute {key} differs")
    return diffs


def main() -> None:
    tmp, seed, n_line, n_time = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    rng = random.Random(seed)
    ref_dir, data_dir = tmp / "ref" / "data", tmp / "work" / "data"
    start = time.monotonic()
    ref_status = _wait(_fork(ref_dir))
    full = time.monotonic() - start
    report: dict = {"reference": ref_status, "reference_seconds": full, "kills": []}

    def lines_of(name):
        code = FUNCTIONS[name].__code__
        return [(name, code, ln) for ln in sorted({ln for _, ln in dis.findlinestarts(code) if ln is not None})]

    # Every line of the writer once, then random lines of the cache and generator, and random times.
    plan = [("line", target) for target in lines_of("h5.write_split") + lines_of("atomic.atomic_write")]
    others = lines_of("cache._prepare") + lines_of("generate.generate_states")
    plan += [("line", rng.choice(others)) for _ in range(n_line)] + [("time", None)] * n_time
    rng.shuffle(plan)
    names = [p.relative_to(ref_dir) for p in sorted(ref_dir.rglob("*.h5"))]
    for kind, target in plan:
        # Some files are missing in every round, so every kill interrupts real work.
        missing = rng.sample(names, rng.randint(1, len(names)))
        for rel in missing:
            (data_dir / rel).unlink(missing_ok=True)
        if kind == "line":
            name, code, line = target
            nth = rng.randint(1, len(missing))
            pid = _fork(data_dir, (code, line, nth))
            where = f"{name} line {line - code.co_firstlineno} (hit {nth})"
        else:
            delay = rng.uniform(0.0, full)
            pid = _fork(data_dir)
            time.sleep(delay)
            os.kill(pid, signal.SIGKILL)  # no-op if it already finished (it stays a zombie until waited)
            where = f"after {delay:.3f}s"
        status = _wait(pid)
        bad, valid = _violations(data_dir)
        temps = sorted(p.name for p in data_dir.rglob("*.tmp"))
        report["kills"].append({"where": where, "status": status, "missing_before": len(missing),
                                "invalid_final_files": bad, "valid_files": valid, "temp_files": temps})

    report["final"] = _wait(_fork(data_dir))
    report["final_invalid"], report["final_valid"] = _violations(data_dir)
    report["final_temps"] = sorted(str(p) for p in data_dir.rglob("*.tmp"))
    ref_files = sorted(ref_dir.rglob("*.h5"))
    report["n_files"] = len(ref_files)
    diffs = []
    for ref in ref_files:
        got = data_dir / ref.relative_to(ref_dir)
        diffs += _compare(ref, got) if got.exists() else [f"{got} missing"]
    report["differences"] = diffs
    print(json.dumps(report))


if __name__ == "__main__":
    main()

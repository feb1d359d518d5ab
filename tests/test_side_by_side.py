"""Jobs side by side (``--jobs N``): CPU shares that never oversubscribe, each job pinned and told
its share, outcomes in order, readable output, logs kept, Ctrl-C passed on once."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from leads.envs.errors import UserError
from leads.side_by_side import (
    JobSpec,
    cpu_slots,
    job_command,
    log_dir,
    log_name,
    run_side_by_side,
    slots_for,
)
from leads.threads import ENV_CPU_SHARE

# A job that records when it ran, on which CPUs and with which share, then prints two lines.
RECORD = """
import json, os, sys, time
start = time.time()
time.sleep(float(sys.argv[2]))
out = {"start": start, "end": time.time(), "cpus": sorted(os.sched_getaffinity(0)),
       "share": os.environ.get(sys.argv[4]), "progress": os.environ.get("LEADS_PROGRESS")}
open(sys.argv[1], "w").write(json.dumps(out))
print("training x: 1/2 steps", flush=True)
print("done", flush=True)
sys.exit(int(sys.argv[3]))
"""


def _job(tmp_path: Path, name: str, seconds: float = 0.3, code: int = 0) -> JobSpec:
    argv = (sys.executable, "-c", RECORD, str(tmp_path / f"{name}.json"), str(seconds), str(code), ENV_CPU_SHARE)
    return JobSpec(name, argv, tmp_path / "logs" / log_name(name))


# ------------------------------------------------------------------------------ shares
@pytest.mark.parametrize("n_cpus,usable,slots", [(2, 2, 2), (2, 2, 1), (4, 4, 3), (8, 8, 4), (16, 16, 5),
                                                 (4, 2, 2), (1, 1, 1)])
def test_cpu_slots_are_disjoint_and_shares_never_exceed_the_usable_cpus(n_cpus, usable, slots):
    layout = cpu_slots(list(range(n_cpus)), usable, slots)
    assert len(layout) == slots
    sets = [set(cpus) for cpus, _ in layout]
    assert all(sets) and sum(len(s) for s in sets) == n_cpus and set().union(*sets) == set(range(n_cpus))
    shares = [share for _, share in layout]
    assert all(share >= 1 for share in shares) and sum(shares) == usable
    assert all(share <= len(cpus) for cpus, share in layout)


def test_more_slots_than_usable_cpus_is_refused():
    with pytest.raises(ValueError):
        cpu_slots([0, 1], 2, 3)


def test_jobs_at_once_are_capped_at_the_usable_cpus_and_say_so():
    assert slots_for(2, 6, 2) == (2, None)
    slots, note = slots_for(4, 6, 2)
    assert slots == 2 and "2 at a time" in note
    assert slots_for(4, 1, 2) == (1, None)  # one job: one slot, nothing to say
    assert slots_for(8, 3, 16) == (3, None)
    with pytest.raises(UserError, match="--jobs 0"):
        slots_for(0, 3, 2)


# ------------------------------------------------------------------------------ running
def test_jobs_run_side_by_side_pinned_with_their_share(tmp_path):
    specs = [_job(tmp_path, f"job {i}", seconds=0.8) for i in range(4)]
    out = io.StringIO()
    outcomes = run_side_by_side(specs, 2, stream=out, cpus=[0, 1], usable=2, poll_s=0.05)
    assert [o.spec.label for o in outcomes] == [s.label for s in specs]
    assert all(o.returncode == 0 for o in outcomes)
    runs = [json.loads((tmp_path / f"job {i}.json").read_text()) for i in range(4)]
    # Never more than two at once.
    events = sorted([(r["start"], 1) for r in runs] + [(r["end"], -1) for r in runs])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak == 2
    assert all(r["share"] == "1" and r["progress"] == "lines" for r in runs)
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) >= 2:
        assert all(len(r["cpus"]) == 1 for r in runs)
        assert {tuple(r["cpus"]) for r in runs[:2]} == {(0,), (1,)}  # the first two ran at once, apart
    text = out.getvalue()
    for spec in specs:
        assert f"{spec.label}: started (1 CPU" in text and f"{spec.label}: done in" in text
        assert str(spec.log) in text and "done" in spec.log.read_text()


def test_one_line_per_job_when_its_progress_changes(tmp_path):
    spec = _job(tmp_path, "a", seconds=0.2)
    out = io.StringIO()
    run_side_by_side([spec], 1, stream=out, cpus=[0], usable=1, poll_s=0.05)
    lines = out.getvalue().splitlines()
    assert all(line.startswith("a: ") for line in lines), lines
    assert len(lines) == len(set(lines))  # nothing repeated
    quiet = io.StringIO()
    run_side_by_side([_job(tmp_path, "b", seconds=0.2)], 1, stream=quiet, cpus=[0], usable=1, poll_s=0.05,
                     progress=False)
    assert [line.split(":")[1].split()[0] for line in quiet.getvalue().splitlines()] == ["started", "done"]


def test_a_failed_job_does_not_stop_the_others_and_names_its_log(tmp_path):
    specs = [_job(tmp_path, "bad", seconds=0.1, code=3), _job(tmp_path, "good", seconds=0.1)]
    out = io.StringIO()
    outcomes = run_side_by_side(specs, 1, stream=out, cpus=[0], usable=1, poll_s=0.05)
    assert [o.returncode for o in outcomes] == [3, 0]
    assert outcomes[0].last_line == "done"
    assert "bad: failed (exit 3) after" in out.getvalue() and str(specs[0].log) in out.getvalue()
    assert (tmp_path / "good.json").exists()


def test_logs_are_appended_never_overwritten(tmp_path):
    spec = _job(tmp_path, "a", seconds=0.0)
    spec.log.parent.mkdir(parents=True)
    spec.log.write_text("an earlier attempt\n")
    run_side_by_side([spec], 1, stream=io.StringIO(), cpus=[0], usable=1, poll_s=0.05)
    text = spec.log.read_text()
    assert text.startswith("an earlier attempt\n") and text.rstrip().endswith("done")


def test_ctrl_c_interrupts_each_running_job_once_and_starts_no_more(tmp_path):
    # Each job counts the SIGINTs it receives, then exits as an interrupted run does.
    counting = """
import signal, sys, time
n = []
signal.signal(signal.SIGINT, lambda *a: n.append(1))
print("ready", flush=True)
end = time.time() + 20
while time.time() < end and not n:
    time.sleep(0.02)
time.sleep(0.3)  # a second signal during clean-up would be counted too
print(f"got {len(n)} interrupt(s); continue with: python run.py --resume", flush=True)
sys.exit(130)
"""
    specs = [JobSpec(f"j{i}", (sys.executable, "-c", counting), tmp_path / f"j{i}.log") for i in range(3)]
    out = io.StringIO()

    def interrupt_when_ready() -> None:
        deadline = time.time() + 20
        while time.time() < deadline and not all(s.log.exists() and "ready" in s.log.read_text() for s in specs[:2]):
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt_when_ready, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):
        run_side_by_side(specs, 2, stream=out, cpus=[0, 1], usable=2, poll_s=0.05)
    for spec in specs[:2]:
        assert "got 1 interrupt(s)" in spec.log.read_text()
        assert f"{spec.label}: interrupted after" in out.getvalue() and "--resume" in out.getvalue()
    assert not specs[2].log.exists()  # the third never started


def test_a_job_that_cannot_start_leaves_no_other_job_running(tmp_path):
    sleeper = JobSpec("sleeper", (sys.executable, "-c", "import time; time.sleep(60)"), tmp_path / "sleeper.log")
    broken = JobSpec("broken", (str(tmp_path / "no_such_program"),), tmp_path / "broken.log")
    out = io.StringIO()
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError):
        run_side_by_side([sleeper, broken], 2, stream=out, cpus=[0, 1], usable=2, poll_s=0.05)
    assert time.perf_counter() - start < 30  # the sleeper was stopped and waited for, not left running
    assert "sleeper: interrupted after" in out.getvalue() or "sleeper: failed" in out.getvalue()


# ------------------------------------------------------------------------------ commands and logs
def test_job_command_is_one_run_of_run_py():
    argv = job_command("gray_scott", "paper", ["train.lr=3e-4"], "coda", 2, ["--resume"])
    assert argv[:3] == (sys.executable, "-m", "leads")
    assert argv[3:] == ("--env", "gray_scott", "--profile", "paper", "--set=train.lr=3e-4", "--method", "coda",
                        "--seed", "2", "--resume")
    assert "--profile" not in job_command("gray_scott", None, [], "coda", 0)


def test_log_dirs_are_new_for_every_batch(tmp_path):
    a, b = log_dir(tmp_path, "lv"), log_dir(tmp_path, "lv")
    assert a != b and a.parent == b.parent == tmp_path / "lv" / "logs"
    assert log_name("lowrank+phys[all] seed 0") == "lowrank+phys-all--seed-0.log"


# ------------------------------------------------------------------------------ the commands' jobs
def _capture_jobs(monkeypatch) -> list[JobSpec]:
    import leads.side_by_side

    specs: list[JobSpec] = []

    def fake(jobs_specs, jobs, **kwargs):
        specs.extend(jobs_specs)
        from leads.side_by_side import JobOutcome

        return [JobOutcome(s, 0, 0.0, "") for s in jobs_specs]

    monkeypatch.setattr(leads.side_by_side, "run_side_by_side", fake)
    return specs


def _no_training(monkeypatch) -> list[tuple[dict, dict]]:
    """Nothing is generated, trained or ranked; the configs that would be trained are listed."""
    import types

    import leads.jobs

    seen: list[tuple[dict, dict]] = []

    def run_experiment(cfg, **kw):
        seen.append((cfg.to_dict(), kw))
        return {"run": types.SimpleNamespace(run_dir=Path(cfg.runs_dir))}

    monkeypatch.setattr(leads.jobs, "run_experiment", run_experiment)
    monkeypatch.setattr(leads.jobs, "prepare_data", lambda *a, **kw: None)
    for name in ("for_config", "write_or_say", "to_markdown"):
        monkeypatch.setattr(f"leads.reporting.leaderboard.{name}", lambda *a, **kw: "")
    return seen


def _configs_run_by(argv: list[str], monkeypatch) -> list[tuple[dict, dict]]:
    """The configs ``python run.py ARGV`` trains, in order (nothing is trained)."""
    from leads import cli

    seen = _no_training(monkeypatch)
    monkeypatch.setattr(cli, "_write_leaderboard", lambda *a: "")
    assert cli.main(argv) == 0
    return seen


def test_each_job_of_a_train_batch_runs_exactly_the_config_the_batch_would(tmp_path, monkeypatch):
    argv = ["--env", "lotka_volterra", "--method", "lowrank,coda", "--seeds", "2", "--seed", "3",
            "--heldout", "near:beta=0.6,delta=0.6", "--few-shot", "--set", "train.lr=2e-3", "--train.max_steps=7",
            "--device", "cpu", f"--set=runs_dir={tmp_path / 'runs'}", f"--set=data.dir={tmp_path / 'data'}",
            f"--set=results_dir={tmp_path / 'results'}"]
    one_by_one = _configs_run_by(argv, monkeypatch)
    specs = _capture_jobs(monkeypatch)
    _configs_run_by([*argv, "--jobs", "2"], monkeypatch)
    assert [s.label for s in specs] == ["lowrank seed 3", "lowrank seed 4", "coda seed 3", "coda seed 4"]
    assert len({s.log.parent for s in specs}) == 1
    assert specs[0].log.parent.parent == tmp_path / "runs" / "lotka_volterra" / "logs"
    side_by_side = [run for s in specs for run in _configs_run_by(list(s.argv[3:]), monkeypatch)]
    assert side_by_side == one_by_one


def test_each_job_of_reproduce_runs_exactly_the_config_of_the_protocol(tmp_path, monkeypatch):
    from leads.reproduce import load_protocols, plan, reproduce

    _no_training(monkeypatch)
    overrides = [f"runs_dir={tmp_path / 'runs'}", f"data.dir={tmp_path / 'data'}",
                 f"results_dir={tmp_path / 'results'}", "train.lr=5e-4"]
    name = next(iter(load_protocols()))
    specs = _capture_jobs(monkeypatch)
    out = reproduce(name, 2, 5, [], overrides, jobs=2)
    assert out["failed"] == []
    expected = [cfg.to_dict() for cfg in plan(load_protocols()[name], 2, 5, [], overrides)]
    ran = [cfg for s in specs for cfg, _ in _configs_run_by(list(s.argv[3:]), monkeypatch)]
    assert ran == expected


@pytest.mark.slow
def test_a_seeds_batch_side_by_side_end_to_end(tmp_path):
    from faults import child_env, run_py, tiny_sets

    from leads.reporting.results import read_rows

    env = child_env()
    del env["OMP_NUM_THREADS"]  # the policy chooses
    proc = run_py(["--env", "lotka_volterra", "--seeds", "2", "--jobs", "2", *tiny_sets("lotka_volterra", tmp_path)],
                  env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = sorted((tmp_path / "runs" / "lotka_volterra" / "logs").glob("*/*.log"))
    assert [p.name for p in logs] == ["lowrank-seed-0.log", "lowrank-seed-1.log"]
    for log in logs:
        text = log.read_text()
        assert "torch threads: 1 (auto: 8-wide mlp, batch 4" in text and "its share of a --jobs batch" in text
        assert f"{log.stem.replace('-seed-', ' seed ')}: done in" in proc.stderr and str(log) in proc.stderr
    rows = read_rows(tmp_path / "results" / "lotka_volterra" / "results.jsonl")
    assert {r["seed"] for r in rows} == {0, 1}
    assert re.search(r"\| 1 \| lowrank \| [^|]+ \| [^|]+ \| 2 \|", proc.stdout), proc.stdout  # ranked over both seeds


def test_reproduce_side_by_side_skips_finished_runs_and_resumes_interrupted_ones(tmp_path, monkeypatch):
    from leads.reproduce import load_protocols, plan, reproduce
    from leads.training.train import run_id_of

    _no_training(monkeypatch)
    overrides = [f"runs_dir={tmp_path / 'runs'}", f"data.dir={tmp_path / 'data'}",
                 f"results_dir={tmp_path / 'results'}"]
    name = next(iter(load_protocols()))
    cfgs = plan(load_protocols()[name], 2, 5, [], overrides)
    finished, interrupted = (Path(c.runs_dir) / c.system_name / run_id_of(c) for c in cfgs[:2])
    finished.mkdir(parents=True)
    (finished / "summary.json").write_text("{}")
    (interrupted / "checkpoints").mkdir(parents=True)
    (interrupted / "checkpoints" / "last.ckpt").write_bytes(b"")
    specs = _capture_jobs(monkeypatch)
    out = reproduce(name, 2, 5, [], overrides, jobs=2)
    labels = [f"{c.method} seed {c.seed}" for c in cfgs]
    assert [s.label for s in specs] == labels[1:]
    assert "--resume" in specs[0].argv and all("--resume" not in s.argv for s in specs[1:])
    assert [(m, s, state) for m, s, state, _ in out["runs"]][:2] == [(cfgs[0].method, cfgs[0].seed, "finished"),
                                                                    (cfgs[1].method, cfgs[1].seed, "interrupted")]


def test_on_a_terminal_the_jobs_lines_are_redrawn_in_place(tmp_path):
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    out = Terminal()
    specs = [_job(tmp_path, f"t{i}", seconds=0.4) for i in range(2)]
    run_side_by_side(specs, 2, stream=out, cpus=[0, 1], usable=2, poll_s=0.05)
    text = out.getvalue()
    assert "\x1b[2F\x1b[J" in text  # up over the block of two job lines, erased, drawn again
    assert "t0: done in" in text and "t1: done in" in text
    last = text.rsplit("\x1b[J", 1)[-1]
    assert "training x" not in last  # the block is gone once every job has ended

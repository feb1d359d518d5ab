"""Batches (``--seeds N``, ``--method all``) finish whatever interrupts them, with one row per
run and split; a run is checked before it trains and never trained twice; what a failure after
training says."""

from __future__ import annotations

import argparse
import json
import random
import shlex
from collections import Counter

import pytest
from faults import assert_one_line_error, run_dirs, run_py, state, tiny_sets
from tiny import tiny_config

from leads.batch import FINISHED, INTERRUPTED, NEW, job_state
from leads.cli import _continue_command, main
from leads.jobs import PENDING, run_experiment
from leads.reporting.results import read_rows
from leads.training.segments import read_segments

SYSTEM = "lotka_volterra"
# Validation (so a checkpoint) every 4 of 8 steps; one held-out set.
RUN = ["train.max_steps=8", "train.val_every=4", "data.window=5", "adapt.sets=[interp]"]


def _batch(tmp) -> list[str]:
    return ["--env", SYSTEM, "--seeds", "3", "--no-progress", *tiny_sets(SYSTEM, tmp, *RUN)]


def _one_row_per_run_and_split(tmp, runs: int) -> list[dict]:
    rows = [r for r in read_rows(tmp / "results" / SYSTEM / "results.jsonl") if r["kind"] in ("in_domain", "heldout")]
    counts = Counter((r["run_id"], r["split"], r["environment"], r["metric"]) for r in rows)
    assert set(counts.values()) == {1}, [k for k, n in counts.items() if n > 1][:5]
    assert len({r["run_id"] for r in rows}) == runs and {r["seed"] for r in rows} == set(range(runs))
    assert {(r["run_id"], r["split"]) for r in rows} == {(run, s) for run in {r["run_id"] for r in rows}
                                                         for s in ("in_domain", "interp")}
    return rows


def _faults(rng: random.Random) -> list[dict[str, str]]:
    """Two random points of a 3-run batch: a signal at a training step of one of its runs, at an
    adaptation, or a kill (in training, or just after a run's rows were written)."""
    sig = rng.choice(["INT", "TERM"])
    points = ([{"LEADS_FAULT_SIGNAL": f"{sig}:train:{step}:{run}"} for step in range(1, 8) for run in (1, 2, 3)]
              + [{"LEADS_FAULT_SIGNAL": f"{sig}:adapt:{n}"} for n in (1, 2, 3)]
              + [{"LEADS_FAULT_KILL_AFTER_APPEND": str(n)} for n in (1, 2, 3)]
              + [{"LEADS_FAULT_KILL_AT_STEP": str(step)} for step in (3, 6)])
    return rng.sample(points, 2)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_interrupted_batch_is_finished_by_the_same_command(tmp_path, seed):
    args = _batch(tmp_path)
    for fault in _faults(random.Random(seed)):
        stopped = run_py(args, fault=fault)
        assert stopped.returncode in (0, 130, -9), (fault, stopped.stderr[-3000:])
        assert "Traceback" not in stopped.stderr, stopped.stderr[-3000:]
        if stopped.returncode == 130:  # the message gives the batch command itself
            line = stopped.stderr.strip().splitlines()[-1]
            assert shlex.split(line.split("with: ", 1)[1]) == ["python", "run.py", *args], (fault, line)
    done = run_py(args)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = _one_row_per_run_and_split(tmp_path, 3)
    assert done.stdout.count("[") >= 3 and "[3/3] lotka_volterra: lowrank seed 2" in done.stdout
    if seed == 0:  # once: nothing left to do, every run skipped, no row written
        again = run_py(args)
        assert again.returncode == 0 and again.stdout.count(", skipped") == 3
        assert _one_row_per_run_and_split(tmp_path, 3) == rows


def test_the_continue_command_of_a_batch_is_the_batch_command():
    batch = ["--env", SYSTEM, "--seeds", "3", "--resume", "--set", "train.max_steps=8"]
    single = argparse.Namespace(batch=False)
    assert _continue_command("train", batch, argparse.Namespace(batch=True), True) == \
        "python run.py --env lotka_volterra --seeds 3 --set train.max_steps=8"
    assert _continue_command("train", batch[:2], single, True) == "python run.py --env lotka_volterra --resume"
    assert _continue_command("train", [*batch[:2], "--resume"], single, False) == "python run.py --env lotka_volterra"
    assert _continue_command("evaluate", ["--env", SYSTEM, "--ckpt", "a b"], single, True) == \
        "python run.py evaluate --env lotka_volterra --ckpt 'a b'"


def test_a_finished_run_resumed_is_not_trained_again_and_its_rows_replace_its_own(tmp_path, capsys):
    cfg = tiny_config(SYSTEM, tmp_path, *RUN)
    assert job_state(cfg) == (NEW, None)
    first = run_experiment(cfg, progress=False)
    run_dir = first["run"].run_dir
    assert job_state(cfg) == (FINISHED, run_dir)
    before = state(run_dir)
    n = len(read_rows(tmp_path / "results" / SYSTEM / "results.jsonl"))
    again = run_experiment(cfg, resume=True, progress=False)
    assert again["run"].resumed_finished and again["run"].run_dir == run_dir
    assert state(run_dir) == before and len([s for s in read_segments(run_dir) if s["event"] == "start"]) == 1
    out = capsys.readouterr().out
    assert f"training of {run_dir} had finished at step 8" in out and f"replaced {n} rows" in out
    assert len(read_rows(tmp_path / "results" / SYSTEM / "results.jsonl")) == n
    # rows kept because results.jsonl could not be written make the run unfinished until appended
    (run_dir / PENDING).write_text("".join(json.dumps(r) + "\n" for r in again["rows"]))
    assert job_state(cfg) == (INTERRUPTED, run_dir)
    kept = run_experiment(cfg, resume=True, progress=False)
    assert kept["evaluation"] is None and not (run_dir / PENDING).exists()  # appended, not evaluated again
    assert f"appended the {len(again['rows'])} result rows kept in" in capsys.readouterr().out
    assert len(read_rows(tmp_path / "results" / SYSTEM / "results.jsonl")) == n


def test_resuming_records_each_segment_and_keeps_the_first_config(tmp_path, capsys):
    cfg = tiny_config(SYSTEM, tmp_path, *RUN, "run_name=longer")
    run_dir = run_experiment(cfg, progress=False)["run"].run_dir
    first_config = (run_dir / "config.yaml").read_text()
    longer = tiny_config(SYSTEM, tmp_path, *RUN, "run_name=longer", "train.max_steps=12", "train.lr=1e-4")
    out = run_experiment(longer, resume=True, progress=False)
    assert not out["run"].resumed_finished and state(run_dir)["global_step"] == 12
    assert (run_dir / "config.yaml").read_text() == first_config  # the first segment's, never overwritten
    starts = [s for s in read_segments(run_dir) if s["event"] == "start"]
    ends = [s for s in read_segments(run_dir) if s["event"] == "end"]
    assert [s["from_step"] for s in starts] == [0, 8] and [(e["at_step"], e["stop"]) for e in ends] == [
        (8, "max_steps"), (12, "max_steps")]
    assert starts[1]["changed"] == {"train.max_steps": [8, 12], "train.lr": [cfg.train.lr, 1e-4]}
    assert starts[1]["config"]["train"]["max_steps"] == 12
    assert "trained 12 steps (train.max_steps)" in capsys.readouterr().out


def test_a_held_out_set_whose_data_diverge_fails_before_training(tmp_path, capsys):
    argv = ["--env", SYSTEM, "--no-progress", "--heldout", "beta=1e6", *tiny_sets(SYSTEM, tmp_path, *RUN)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "diverges" in err and len(err.strip().splitlines()) == 1
    assert not run_dirs(tmp_path, SYSTEM)  # nothing trained


@pytest.mark.slow
def test_a_full_results_disk_after_training_keeps_the_scores_and_names_the_command(tmp_path):
    args = ["--env", SYSTEM, "--no-progress", *tiny_sets(SYSTEM, tmp_path, *RUN)]
    full = run_py(args, fault={"LEADS_FAULT_DISK_FULL_AT_APPEND": "1"})
    (run_dir,) = run_dirs(tmp_path, SYSTEM)
    line = assert_one_line_error(full, "No space left on device writing", "results.jsonl",
                                 f"the scores are kept in {run_dir / PENDING}",
                                 f"{run_dir / 'checkpoints' / 'best.ckpt'} is kept", only_line=False)
    command = shlex.split(line.split("with: ", 1)[1])
    assert command == ["python", "run.py", *args, "--resume"]
    done = run_py(command[2:])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "had finished at step 8" in done.stdout and "appended the" in done.stdout
    assert "adapting" not in done.stdout + done.stderr  # nothing trained or adapted again
    _one_row_per_run_and_split(tmp_path, 1)

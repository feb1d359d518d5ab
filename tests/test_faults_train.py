"""Training killed (SIGKILL) and resumed with ``--resume``, killed while writing a checkpoint,
and diverging, all through ``python run.py``.

A resumed run must end bit for bit where an uninterrupted run with the same seed ends: same
weights and optimizer state in ``last.ckpt``, same best checkpoint, same scores. That holds on
CPU because teacher forcing draws from a generator seeded by (seed, step) and a run resumed
mid-epoch skips the batches it already trained on (datasets/sharding.py).
"""

from __future__ import annotations

import math
import shlex

import pytest
import torch
from faults import assert_one_line_error, run_dirs, run_py, state, tiny_sets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leads.datasets.h5 import load_split
from leads.evaluation.scoring import predict
from leads.reporting.results import read_rows
from leads.training.checkpoints import load_checkpoint

# Fault injection: real runs in subprocesses, killed, resumed, compared (-m slow; CI runs them).
pytestmark = pytest.mark.slow

SYSTEM = "lotka_volterra"
# 16 training batches per epoch (9 environments x 1 trajectory x 16 window starts, 1 item of
# each environment per batch); validation, hence a checkpoint, every 4 steps.
RUN = ["train.max_steps=24", "train.val_every=4", "data.window=5", "adapt.sets=[interp]"]
EPOCH = 16


def _args(tmp, data) -> list[str]:
    return ["--env", SYSTEM, "--no-progress", *tiny_sets(SYSTEM, tmp, *RUN, f"data.dir={data}")]


def _ckpt(run_dir, name="last"):
    return torch.load(run_dir / "checkpoints" / f"{name}.ckpt", map_location="cpu", weights_only=False)


def _scores(tmp) -> dict:
    rows = read_rows(tmp / "results" / SYSTEM / "results.jsonl")
    assert len({r["run_id"] for r in rows}) == 1
    return {(r["kind"], r["split"], r["environment"], r["metric"], r.get("shots")): r["value"] for r in rows}


def _assert_same_run(a, b) -> None:
    """Two finished runs are the same computation: weights, optimizer, best checkpoint, scores."""
    (ra,), (rb,) = run_dirs(a, SYSTEM), run_dirs(b, SYSTEM)
    for name in ("last", "best"):
        ca, cb = _ckpt(ra, name), _ckpt(rb, name)
        assert ca["global_step"] == cb["global_step"], name
        for key, value in ca["state_dict"].items():
            assert torch.equal(value, cb["state_dict"][key]), (name, key)
        for sa, sb in zip(ca["optimizer_states"][0]["state"].values(), cb["optimizer_states"][0]["state"].values()):
            assert all(torch.equal(sa[k], sb[k]) for k in sa), name
    assert state(ra)["best_val_rel_l2"] == state(rb)["best_val_rel_l2"]
    sa, sb = _scores(a), _scores(b)
    assert sa.keys() == sb.keys()
    assert all(sa[k] == sb[k] or (math.isnan(sa[k]) and math.isnan(sb[k])) for k in sa)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run; its data directory is shared by the other runs."""
    tmp = tmp_path_factory.mktemp("reference")
    proc = run_py(_args(tmp, tmp / "data"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = run_dirs(tmp, SYSTEM)
    assert _ckpt(run_dir)["global_step"] == 24  # last.ckpt follows every validation, not only improvements
    return tmp


@pytest.mark.slow
def test_killed_twice_and_resumed_ends_bit_for_bit_like_an_uninterrupted_run(reference, tmp_path):
    args = _args(tmp_path, reference / "data")
    # Killed at step 14: the last checkpoint is from step 12, in the middle of the first epoch.
    killed = run_py(args, fault={"LEADS_FAULT_KILL_AT_STEP": "14"})
    assert killed.returncode == -9
    (run_dir,) = run_dirs(tmp_path, SYSTEM)
    assert _ckpt(run_dir)["global_step"] == 12 and 12 % EPOCH
    # Resumed, killed again at step 18: the last checkpoint is from step 16, the end of an epoch.
    killed = run_py([*args, "--resume"], fault={"LEADS_FAULT_KILL_AT_STEP": "18"})
    assert killed.returncode == -9
    resumed_from = _ckpt(run_dir)
    assert resumed_from["global_step"] == 16 == EPOCH
    done = run_py([*args, "--resume"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert run_dirs(tmp_path, SYSTEM) == [run_dir]  # resumed in place
    assert state(run_dir)["global_step"] == 24
    # Training time spent before the kills is kept: the checkpoint carries it into the final count.
    (clock,) = [v for k, v in resumed_from["callbacks"].items() if k.startswith("TrainClock")]
    assert 0 < clock["seconds"] < state(run_dir)["train_seconds"]
    assert 0 < clock["cpu_seconds"] < state(run_dir)["train_cpu_seconds"]
    _assert_same_run(reference, tmp_path)


@pytest.mark.slow
def test_killed_while_writing_a_checkpoint_keeps_the_previous_one(reference, tmp_path):
    args = _args(tmp_path, reference / "data")
    # Checkpoint files land by a rename; the process dies just before the 3rd rename onto a .ckpt.
    killed = run_py(args, fault={"LEADS_FAULT_KILL_IN_SAVE": "3"})
    assert killed.returncode == -9
    (run_dir,) = run_dirs(tmp_path, SYSTEM)
    ckpt_dir = run_dir / "checkpoints"
    assert [p.name for p in ckpt_dir.glob(".*.tmp")]  # the new bytes never reached a checkpoint's name
    assert _ckpt(run_dir)["global_step"] == 4  # the old last.ckpt, intact
    done = run_py([*args, "--resume"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list(ckpt_dir.glob(".*.tmp"))  # the resumed run removed the dead writer's file
    _assert_same_run(reference, tmp_path)


@pytest.mark.slow
def test_disk_full_while_checkpointing_is_one_line_and_resume_recovers(reference, tmp_path):
    args = _args(tmp_path, reference / "data")
    full = run_py(args, fault={"LEADS_FAULT_DISK_FULL_AT_SAVE": "3"})  # the 3rd checkpoint write fails
    assert_one_line_error(full, "No space left on device writing", "checkpoints", "--resume", only_line=False)
    (run_dir,) = run_dirs(tmp_path, SYSTEM)
    assert _ckpt(run_dir)["global_step"] == 4  # the checkpoint before, intact
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))  # the failed write cleaned up after itself
    done = run_py([*args, "--resume"])
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_run(reference, tmp_path)


@pytest.mark.parametrize("value, what", [("nan", "became non-finite"), ("1e6", "exploded")])
def test_divergence_through_the_cli_stops_cleanly_and_keeps_the_last_good_checkpoint(value, what, tmp_path):
    args = ["--env", SYSTEM, "--no-progress", *tiny_sets(SYSTEM, tmp_path, "train.max_steps=20", "train.val_every=2",
                                                        "data.batch_size=18", "train.grad_clip=0")]
    proc = run_py(args, fault={"LEADS_FAULT_POISON": f"5:1:{value}"})
    line = assert_one_line_error(proc, what, "at step 5", "beta=0.5,gamma=0.5,delta=0.75", only_line=False)
    assert line.startswith("error: training loss")
    (run_dir,) = run_dirs(tmp_path, SYSTEM)
    last = _ckpt(run_dir)
    assert last["global_step"] == 4  # the validation before the failure
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())
    assert not (tmp_path / "results").exists() and not (run_dir / "summary.json").exists()  # nothing half-reported
    # The checkpoint is usable: it loads and forecasts finite states.
    module = load_checkpoint(run_dir / "checkpoints" / "last.ckpt", SYSTEM)
    data = load_split(next((tmp_path / "data").rglob("val-*.h5")))
    pred = predict(module, data.states.flatten(0, 1), data.t.float(), torch.arange(data.n_env))
    assert torch.isfinite(pred).all()


# ----------------------------------------------------------------- interrupts (Ctrl-C, SIGTERM)
def _continue_with(stopped) -> list[str]:
    """The command the one-line interrupt message gives, as ``run.py`` arguments."""
    assert stopped.returncode == 130, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr, stopped.stderr[-3000:]
    line = stopped.stderr.strip().splitlines()[-1]
    assert line.startswith("interrupted") and "with: python run.py " in line, line
    command = shlex.split(line.split("with: ", 1)[1])
    assert command[:2] == ["python", "run.py"]
    return command[2:]


@pytest.mark.slow
@settings(max_examples=3, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sig=st.sampled_from(["INT", "TERM"]), step=st.integers(1, 23))
def test_interrupted_at_any_step_says_what_was_saved_and_the_command_continues(reference, tmp_path_factory,
                                                                              sig, step):
    tmp = tmp_path_factory.mktemp("interrupted")
    stopped = run_py(_args(tmp, reference / "data"), fault={"LEADS_FAULT_SIGNAL": f"{sig}:train:{step}"})
    command = _continue_with(stopped)
    line = stopped.stderr.strip().splitlines()[-1]
    saved = step - step % 4  # a checkpoint at every validation, every 4 steps
    if saved:
        (run_dir,) = run_dirs(tmp, SYSTEM)
        assert f"interrupted at training step {step}: {run_dir / 'checkpoints' / 'last.ckpt'} (step {saved}) " \
               "is saved; continue with: " in line and command[-1] == "--resume"
    else:
        assert "before the first checkpoint" in line and "--resume" not in command
        assert not run_dirs(tmp, SYSTEM)  # nothing half made is left behind
    done = run_py(command)
    assert done.returncode == 0, done.stderr[-3000:]
    _assert_same_run(reference, tmp)


@pytest.mark.slow
def test_interrupted_while_generating_data_or_adapting(reference, tmp_path):
    args = _args(tmp_path, tmp_path / "data")
    stopped = run_py(args, fault={"LEADS_FAULT_SIGNAL": "INT:generate:2"})
    command = _continue_with(stopped)
    assert "while generating data" in stopped.stderr and not run_dirs(tmp_path, SYSTEM)
    assert len(list((tmp_path / "data").rglob("*.h5"))) == 1  # the finished split is kept, the partial one is not
    assert run_py(command).returncode == 0
    # Adapting to a held-out set, after training: the printed command resumes the run, which
    # evaluates its saved checkpoint without training again.
    again = tmp_path / "again"
    args = _args(again, tmp_path / "data")
    stopped = run_py(args, fault={"LEADS_FAULT_SIGNAL": "TERM:adapt:1"})
    command = _continue_with(stopped)
    (run_dir,) = run_dirs(again, SYSTEM)
    assert command == [*args, "--resume"] and str(run_dir / "checkpoints" / "best.ckpt") in stopped.stderr
    assert not (again / "results").exists()  # nothing of the evaluation was written
    done = run_py(command)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"training of {run_dir} had finished at step 24" in done.stdout
    assert read_rows(again / "results" / SYSTEM / "results.jsonl") and (run_dir / "summary.json").exists()

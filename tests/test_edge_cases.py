"""Everyday variations of the documented commands: short runs, names and paths, numeric edges of
the config, undefined statistics. Interrupts are in tests/test_faults_train.py."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from faults import assert_one_line_error, run_dirs, run_py, state, tiny_sets
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny import tiny_config

from leads.config.paths import check_output_dir
from leads.config.schema import RunConfig
from leads.envs.errors import UserError
from leads.jobs import format_summary
from leads.training.train import run_dir_for, train

SYSTEM = "lotka_volterra"


# ----------------------------------------------------------------- training budgets
@pytest.mark.parametrize("max_steps, val_every", [(3, 10), (7, 5), (1, 1)])
def test_training_always_ends_with_a_validation_and_a_checkpoint(tmp_path, max_steps, val_every):
    cfg = tiny_config(SYSTEM, tmp_path, f"train.max_steps={max_steps}", f"train.val_every={val_every}")
    run = train(cfg, progress=False)
    last = torch.load(run.run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert last["global_step"] == state(run.run_dir)["global_step"] == max_steps
    assert run.best_ckpt.is_file() and state(run.run_dir)["best_val_rel_l2"] < float("inf")


@pytest.mark.slow
def test_smoke_run_shorter_than_the_validation_interval_is_evaluated(tmp_path):
    """The reported case: ``--set train.max_steps=50`` below the profile's val_every."""
    proc = run_py(["--env", SYSTEM, "--no-progress", *tiny_sets(SYSTEM, tmp_path, "train.max_steps=3",
                                                                 "train.val_every=250")])
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = run_dirs(tmp_path, SYSTEM)
    assert (run_dir / "summary.json").is_file() and (run_dir / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("extra, needles", [
    (["adapt.shots=3"], ["adapt.shots", "data.n_adapt=2"]),         # more shots than adaptation trajectories
    (["data.window=100"], ["data.window=100", "20 observation steps"]),  # a window longer than the horizon
    (["train.val_every=0"], ["train.val_every", ">= 1"]),
    (["train.max_steps=0"], ["train.max_steps", ">= 1"]),
])
def test_numeric_edges_fail_in_one_line_before_any_work(tmp_path, extra, needles):
    proc = run_py(["--env", SYSTEM, "--no-progress", *tiny_sets(SYSTEM, tmp_path, *extra)])
    assert_one_line_error(proc, *needles)
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.h5"))
    assert not run_dirs(tmp_path, SYSTEM)


def test_one_test_trajectory_and_one_step_work(tmp_path):
    cfg = tiny_config(SYSTEM, tmp_path, "train.max_steps=1", "data.n_test=1", "data.n_test_heldout=1",
                      "adapt.steps=1")
    run = train(cfg, progress=False)
    assert state(run.run_dir)["global_step"] == 1


# ----------------------------------------------------------------- names and paths
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.one_of(st.text(max_size=120), st.sampled_from(["..", ".", "../x", "a/b", "/abs", "~", "a\\b", "-x",
                                                               "a" * 101, "ok-name_1.2", " sp", "a\x00b"])))
def test_run_names_are_names_never_paths(tmp_path, name):
    plain = tiny_config(SYSTEM, tmp_path).to_dict()
    plain["run_name"] = name
    if NAME.fullmatch(name):
        cfg = RunConfig.from_dict(plain)
        run_dir, run_id = run_dir_for(cfg, resume=False)
        assert run_id == name and run_dir.parent == tmp_path / "runs" / SYSTEM
    else:
        with pytest.raises(UserError, match=r"^config key 'run_name' = .* is not a plain name") as e:
            RunConfig.from_dict(plain)
        assert "\n" not in str(e.value)


@pytest.mark.slow
def test_a_run_name_with_dot_dot_creates_nothing_outside(tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    proc = run_py(["--env", SYSTEM, *tiny_sets(SYSTEM, work, "run_name=../escape")], cwd=work)
    assert_one_line_error(proc, "run_name", "'../escape'", "--set run_name=")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"] and not any(work.iterdir())


@pytest.mark.slow
@pytest.mark.parametrize("key", ["data.dir", "runs_dir", "results_dir"])
def test_a_file_in_the_way_of_an_output_directory_fails_before_any_work(tmp_path, key):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    proc = run_py(["--env", SYSTEM, *tiny_sets(SYSTEM, tmp_path, f"{key}={blocker / 'sub'}")])
    assert_one_line_error(proc, key, str(blocker), "is a file", f"--set {key}=")
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.parametrize("command", ["generate", "leaderboard"])
def test_other_commands_check_their_directory_first(tmp_path, command):
    blocker = tmp_path / "blocker"
    blocker.write_text("")
    key = "data.dir" if command == "generate" else "results_dir"
    proc = run_py([command, "--env", SYSTEM, f"--set={key}={blocker}"])
    assert_one_line_error(proc, key, "is a file")


def test_a_place_that_cannot_be_written_is_one_line(tmp_path):
    unwritable = Path("/proc/leads-cannot-write-here")  # refused even to root
    with pytest.raises(UserError, match=r"^runs_dir=/proc/leads-cannot-write-here cannot be written \(.*\); "
                                        r"choose another with --set runs_dir=DIR$"):
        check_output_dir(unwritable, "runs_dir")
    if os.geteuid() != 0:  # permission bits bind everyone but root
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        with pytest.raises(UserError, match="cannot be written"):
            check_output_dir(ro / "runs", "runs_dir")


@given(value=st.one_of(st.sampled_from(["", "   ", "a_file", "a_file/x", ".", "..", "b/../b", "a//b/"]),
                       st.text(alphabet="ab/._-", max_size=12).filter(lambda v: not v.startswith("/"))))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_path_like_values_are_usable_directories_or_one_line_errors(tmp_path, monkeypatch, value):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("")
    before = sorted(tmp_path.rglob("*"))
    blocked = not value.strip() or value.strip("/").split("/")[0] == "a_file"
    try:
        path = check_output_dir(value, "data.dir")
    except UserError as e:
        assert blocked and "\n" not in str(e) and "data.dir" in str(e)
    else:
        assert not blocked
        assert sorted(tmp_path.rglob("*")) == before  # checking creates nothing
        path.mkdir(parents=True, exist_ok=True)  # what the run then does succeeds


# ----------------------------------------------------------------- undefined statistics
def test_undefined_statistics_print_as_a_dash():
    nan = float("nan")
    summary = {"system": SYSTEM, "method": "lowrank", "seed": 0, "train_seconds": 1.0, "run_dir": "r",
               "splits": {"in_domain": {"rel_l2": (0.1, 0.0), "rel_l2_extrap": (nan, nan), "mse": (0.1, 0.0)}},
               "probe_r2": {"one-env": {"beta": nan, "delta": 0.5}}}
    text = format_summary(summary)
    assert "nan" not in text.lower()
    assert "context probe R² on one-env: beta —, delta 0.50" in text

"""Failures a user meets outside training, through ``run.py``'s commands: one line naming the
file, and a next step that works for that command."""

from __future__ import annotations

import errno
import shlex

import pytest
from faults import tiny_sets
from tiny import tiny_config

from leads.cli import _one_line, main
from leads.training.train import train

SYSTEM = "lotka_volterra"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny trained run (no evaluation)."""
    tmp = tmp_path_factory.mktemp("trained")
    run = train(tiny_config(SYSTEM, tmp, "train.max_steps=2", "train.val_every=2"), progress=False)
    return tmp, run.run_dir


def _error(capsys) -> str:
    """The one error line (progress lines may precede it), with no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_evaluate_a_run_directory_names_the_checkpoint_to_pass(trained, capsys):
    tmp, run_dir = trained
    assert main(["evaluate", "--env", SYSTEM, "--ckpt", str(run_dir)]) == 2
    err = _error(capsys)
    assert f"--ckpt {run_dir} is a directory" in err and f"--ckpt {run_dir / 'checkpoints' / 'best.ckpt'}" in err


def test_a_full_disk_in_evaluate_says_to_rerun_evaluate_not_resume(trained, capsys, monkeypatch):
    import leads.jobs as jobs

    tmp, run_dir = trained
    results = tmp / "results" / SYSTEM / "results.jsonl"

    def full(path, rows):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(jobs, "append_rows", full)
    argv = ["evaluate", "--env", SYSTEM, "--ckpt", str(run_dir / "checkpoints" / "best.ckpt"),
            *tiny_sets(SYSTEM, tmp, "adapt.sets=[interp]")[-1:]]
    assert main(argv) == 2
    err = _error(capsys)
    assert f"No space left on device writing {results}" in err
    assert err.endswith("and rerun: " + shlex.join(["python", "run.py", *argv])) and "--resume" not in err


def test_hdf5_messages_are_condensed_to_one_line(tmp_path, capsys, monkeypatch):
    import leads.external as external

    text = ("Unable to synchronously create dataset (name = 'pred')\n  #000: H5D.c line 140 in H5Dcreate2(): "
            "unable to create dataset\n    major: Dataset\n    minor: Unable to initialize object")
    assert "\n" not in _one_line(OSError(errno.ENOSPC, text, "inputs.h5"))

    assert main(["generate", "--env", SYSTEM, *tiny_sets(SYSTEM, tmp_path)]) == 0  # the data exist
    original = external.h5py.File

    def full(name, mode="r", *args, **kwargs):  # writing fails as HDF5 fails on a full disk
        if mode == "w":
            raise OSError(errno.ENOSPC, text)
        return original(name, mode, *args, **kwargs)

    monkeypatch.setattr(external.h5py, "File", full)
    argv = ["export", "--env", SYSTEM, "--out", str(tmp_path / "in.h5"), *tiny_sets(SYSTEM, tmp_path)]
    assert main(argv) == 2
    err = _error(capsys)
    assert "Unable to synchronously create dataset" in err and f"writing {tmp_path / 'in.h5'}" in err
    assert "free space (or choose another --out) and rerun: python run.py export " in err


def test_export_out_under_a_file_is_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    argv = ["export", "--env", SYSTEM, "--out", str(tmp_path / "file" / "in.h5"), *tiny_sets(SYSTEM, tmp_path)]
    assert main(argv) == 2
    assert f"{tmp_path / 'file'} is a file, not a directory; choose another --out" in _error(capsys)


def test_score_a_file_that_is_not_hdf5_is_one_line(tmp_path, capsys):
    (tmp_path / "pred.h5").write_text("not hdf5")
    argv = ["score", "--env", SYSTEM, "--predictions", str(tmp_path / "pred.h5"), "--name", "x", "--logger", "none",
            *tiny_sets(SYSTEM, tmp_path)]
    assert main(argv) == 2
    assert f"predictions file {tmp_path / 'pred.h5'} is not a readable HDF5 file" in _error(capsys)


def test_profile_help_lists_every_systems_profiles(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "gray_scott: quick, paper, paper_cpu, paper_code" in out
    assert "lotka_volterra: quick, paper, paper_leads, paper_leads_cpu" in out


def test_generate_without_progress_prints_only_the_files(tmp_path, capsys):
    assert main(["generate", "--env", SYSTEM, "--no-progress", *tiny_sets(SYSTEM, tmp_path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    described = out.splitlines()
    assert described and all(line.startswith(str(tmp_path / "data")) for line in described), out

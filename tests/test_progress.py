"""Progress output: every long phase announces itself, a log gets plain lines (no carriage-return
redraws), and other libraries' notices stay out of a run's output."""

from __future__ import annotations

import sys

import pytest
from tiny import PER_SYSTEM, TINY

from leads.cli import main
from leads.datasets.progress import Progress, progress_mode
from leads.envs.errors import UserError


def test_plain_lines_when_not_a_terminal(capsys, monkeypatch):
    monkeypatch.delenv("LEADS_PROGRESS", raising=False)
    bar = Progress("training x", 10, "steps", every=0.0)
    assert bar.mode == "lines"
    bar.update(3, loss=0.5)
    bar.set(7)
    bar.close()
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.splitlines() == ["training x: started (10 steps)", "training x: 3/10 steps, loss 0.5 (0 s)",
                                "training x: 7/10 steps, loss 0.5 (0 s)",
                                "training x: done, 7/10 steps, loss 0.5 (0 s)"]


def test_lines_are_throttled(capsys, monkeypatch):
    monkeypatch.delenv("LEADS_PROGRESS", raising=False)
    with Progress("generating a/b", 1000, "trajectories", every=3600) as bar:
        for _ in range(1000):
            bar.update()
    assert len(capsys.readouterr().err.splitlines()) == 2  # started, done
    with Progress("generating a/b", 10, "trajectories", every=3600, start_line=False) as bar:
        bar.update(10)
    assert capsys.readouterr().err.splitlines() == ["generating a/b: done, 10/10 trajectories (0 s)"]


def test_a_bar_on_a_terminal_and_the_environment_variable_wins(monkeypatch):
    monkeypatch.delenv("LEADS_PROGRESS", raising=False)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert progress_mode() == "bar"
    assert progress_mode(enabled=False) == "off"
    monkeypatch.setenv("LEADS_PROGRESS", "lines")
    assert progress_mode() == "lines" and progress_mode(enabled=False) == "lines"
    monkeypatch.setenv("LEADS_PROGRESS", "sometimes")
    with pytest.raises(UserError, match="LEADS_PROGRESS='sometimes'"):
        progress_mode()


def test_disabled_progress_prints_nothing(capsys, monkeypatch):
    monkeypatch.delenv("LEADS_PROGRESS", raising=False)
    with Progress("x", 3, enabled=False) as bar:
        bar.update(3)
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_the_main_job_in_a_log_announces_every_phase_without_noise(tmp_path, capfd, monkeypatch):
    monkeypatch.delenv("LEADS_PROGRESS", raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")
    sets = [f"--{o}" for o in [*TINY, *PER_SYSTEM["gray_scott"]] if not o.startswith("logger=")]
    assert main(["--env", "gray_scott", *sets, "--logger=wandb", f"--runs_dir={tmp_path / 'runs'}",
                 f"--data.dir={tmp_path / 'data'}", f"--results_dir={tmp_path / 'res'}"]) == 0
    out, err = capfd.readouterr()
    for phase in ("generating gray_scott/train: done", "generating gray_scott/test_extrap: done",
                  "training gray_scott lowrank seed 0: started (4 steps)", "val_rel_l2",
                  "training gray_scott lowrank seed 0: done, 4/4 steps",
                  "scoring in-domain", "adapting interp + extrap (", "scoring extrap", "writing figures"):
        assert phase in err, (phase, err)
    assert "\r" not in err and "\r" not in out
    for noise in ("litlogger", "GPU available", "TPU available", "anonymous", "Tip:"):
        assert noise not in err and noise not in out, noise
    assert "gray_scott · lowrank · seed 0" in out  # the summary stays on stdout
